"""The supervised contrastive objective: SupConLoss against a naive loop (values and
gradients), its reduction to InfoNCE, bad input, and short training runs."""

import dataclasses
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gaussood.deep import ImageSet, TrainConfig, embed_images, train_encoder  # noqa: E402
from gaussood.deep.loss import InfoNCELoss, SupConLoss  # noqa: E402

torch.set_num_threads(1)


def naive_supcon(z1, z2, y, t):
    """Khosla et al. (2020), eq. 2, looped: for each anchor i of [z1; z2], the mean over
    its positives p (same label, p != i) of -log(exp(s_ip / t) / sum_{k != i} exp(s_ik / t))."""
    rows = [r / r.norm() for r in torch.cat([z1, z2])]
    labels = list(y.tolist()) * 2
    total = 0.0
    for i, a in enumerate(rows):
        den = sum(torch.exp(a @ k / t) for j, k in enumerate(rows) if j != i)
        pos = [p for p in range(len(rows)) if p != i and labels[p] == labels[i]]
        total = total + sum(-torch.log(torch.exp(a @ rows[p] / t) / den) for p in pos) / len(pos)
    return total / len(rows)


@pytest.mark.parametrize("labels, d, t", [([0, 1], 3, 0.5), ([0, 0, 1, 1], 5, 0.1),
                                          ([2, 0, 2, 2, 1], 4, 1.0), ([0, 0, 0], 2, 0.07),
                                          ([3, 1, 4, 1, 5, 9, 2, 6], 6, 0.2)])
def test_equals_naive_loop_values_and_gradients(labels, d, t):
    g = torch.Generator().manual_seed(len(labels) * 10 + d)
    y = torch.tensor(labels)
    z1 = torch.randn(len(labels), d, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(len(labels), d, generator=g, dtype=torch.float64, requires_grad=True)
    got = SupConLoss(t)(z1, z2, y)
    want = naive_supcon(z1, z2, y, t)
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    g_got = torch.autograd.grad(got, (z1, z2))
    g_want = torch.autograd.grad(want, (z1, z2))
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_distinct_labels_give_infonce_and_shared_labels_change_it():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    loss = SupConLoss(0.2, norm_weight=0.01)
    torch.testing.assert_close(loss(z1, z2, torch.arange(6)),
                               InfoNCELoss(0.2, norm_weight=0.01)(z1, z2))
    assert not torch.isclose(loss(z1, z2, torch.tensor([0, 0, 1, 1, 2, 2])),
                             loss(z1, z2, torch.arange(6)))


def test_one_class_with_identical_rows_is_log_2n_minus_1():
    # every row the same: each of the 2N - 1 keys has probability 1 / (2N - 1), and
    # all of them are positives
    z = torch.ones(4, 5)
    assert SupConLoss(0.3)(z, z, torch.zeros(4, dtype=torch.long)).item() == pytest.approx(
        math.log(7), rel=1e-6)


@pytest.mark.parametrize("labels, match", [(torch.zeros(3, dtype=torch.long), r"shape \(4,\)"),
                                           (torch.zeros(4), "integer"),
                                           (torch.zeros(4, dtype=torch.bool), "integer"),
                                           ([0, 0, 1, 1], "integer")])
def test_bad_labels_are_rejected(labels, match):
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=match):
        SupConLoss(0.5)(z, z, labels)


def tiny_set(n=96, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(0, 60, size=(n, 32, 32, 3)).astype(np.uint8)
    images[labels == 1] += 150
    images[labels == 2, :, :16] += 120
    return ImageSet(images=images, labels=labels.astype(np.int64), name="tiny",
                    classes=["dark", "bright", "half"], source=f"synthetic test images, n={n}")


BASE = dict(model="small", epochs=2, batch_size=32, steps_per_epoch=2, knn_bank=64,
            knn_queries=32, knn_k=10, seed=3, objective="supcon", temperature=0.2)


def test_training_runs_resumes_exactly_and_embeds(tmp_path):
    train, test = tiny_set(), tiny_set(seed=1)
    config = TrainConfig(**BASE)
    full = train_encoder(train, config, eval_set=test, checkpoint_dir=tmp_path / "a",
                         progress=False)
    first = train_encoder(train, config, eval_set=test, checkpoint_dir=tmp_path / "b",
                          progress=False, stop_after_steps=1)
    assert first.history == [] or first.history[-1]["step"] == 1
    resumed = train_encoder(train, config, eval_set=test, checkpoint_dir=tmp_path / "b",
                            progress=False)
    assert full.model.head[-1].out_features == 128  # a projection, not one logit per class
    a, b = (torch.cat([p.detach().flatten() for p in m.state_dict().values()
                       if p.is_floating_point()]) for m in (full.model, resumed.model))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for h in full.history:
        assert np.isfinite(h["loss"]) and 0.0 <= h["knn_top1"] <= 1.0
    feats = embed_images(full.model, test.images[:8])
    assert feats.shape == (8, full.model.feature_dim) and np.isfinite(feats).all()


def test_supcon_differs_from_infonce_on_the_same_steps():
    train = tiny_set()
    sup = train_encoder(train, TrainConfig(**BASE), progress=False)
    plain = train_encoder(train, TrainConfig(**{**BASE, "objective": "infonce"}), progress=False)
    assert sup.history[-1]["loss"] != pytest.approx(plain.history[-1]["loss"], rel=1e-6)


def test_config_errors():
    train = tiny_set()
    unlabelled = dataclasses.replace(train, labels=np.full(len(train), -1))
    with pytest.raises(ValueError, match="objective='supcon' needs a labelled training set"):
        train_encoder(unlabelled, TrainConfig(**BASE), progress=False)
    with pytest.raises(ValueError, match="rotation_negatives applies to objective='infonce'"):
        train_encoder(train, TrainConfig(**BASE, rotation="negatives", rotation_negatives=0.5),
                      progress=False)
    with pytest.raises(ValueError, match="objective='infonce' only"):
        train_encoder(train, TrainConfig(**BASE, small_crops=2), progress=False)
    with pytest.raises(ValueError, match="'infonce', 'supervised' or 'supcon'"):
        train_encoder(train, TrainConfig(**{**BASE, "objective": "simclr"}), progress=False)


@pytest.mark.parametrize("w", [0.0, 0.3, 0.5, 1.0])
def test_weight_mixes_supcon_and_infonce(w):
    g = torch.Generator().manual_seed(7)
    z1 = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    got = SupConLoss(0.2, weight=w)(z1, z2, y)
    want = w * naive_supcon(z1, z2, y, 0.2) + (1 - w) * InfoNCELoss(0.2)(z1, z2)
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    for a, b in zip(torch.autograd.grad(got, (z1, z2)), torch.autograd.grad(want, (z1, z2))):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("w", [-0.1, 1.5, float("nan")])
def test_bad_weight_is_rejected(w):
    with pytest.raises(ValueError, match="weight"):
        SupConLoss(0.2, weight=w)


def test_supcon_weight_config():
    train = tiny_set()
    mixed = train_encoder(train, TrainConfig(**BASE, supcon_weight=0.5), progress=False)
    pure = train_encoder(train, TrainConfig(**BASE), progress=False)
    assert mixed.history[-1]["loss"] != pytest.approx(pure.history[-1]["loss"], rel=1e-6)
    with pytest.raises(ValueError, match="supcon_weight applies to objective='supcon' only"):
        train_encoder(train, TrainConfig(**{**BASE, "objective": "infonce"}, supcon_weight=0.5),
                      progress=False)
    with pytest.raises(ValueError, match=r"supcon_weight must be in \[0, 1\]"):
        train_encoder(train, TrainConfig(**BASE, supcon_weight=2.0), progress=False)


class _Recorder(torch.nn.Module):
    """A criterion that records the labels it is given (and returns SupCon's loss)."""

    def __init__(self):
        super().__init__()
        self.loss, self.seen = SupConLoss(0.2), []

    def forward(self, z1, z2, y):
        self.seen.append(y.clone())
        return self.loss(z1, z2, y)


def test_rotation_makes_class_rotation_pairs_the_classes(monkeypatch):
    # under rotation, SupCon's label of image i is 4 * y_i + r_i: same class at another
    # rotation is a negative (CSI's supervised variant)
    from gaussood.deep import step as step_module
    from gaussood.deep.models import Encoder

    r = torch.tensor([0, 1, 2, 3, 1, 0])
    monkeypatch.setattr(step_module, "draw_rotations", lambda n, gen, device: r[:n])
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    model = Encoder("small", 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    for rotation, want in (("negatives", labels[:6] * 4 + r), ("none", labels[:6])):
        config = TrainConfig(**BASE, rotation=rotation)
        crit = _Recorder()
        step = step_module._Step(config, model, opt, sched, crit, labels, torch.device("cpu"))
        images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        loss = step(images, torch.arange(6), 32, torch.Generator().manual_seed(1))
        assert torch.isfinite(loss)
        assert torch.equal(crit.seen[0], want)


def test_supcon_with_rotation_trains_and_resumes_exactly(tmp_path):
    train, test = tiny_set(), tiny_set(seed=1)
    config = TrainConfig(**BASE, rotation="negatives")
    full = train_encoder(train, config, eval_set=test, checkpoint_dir=tmp_path / "a",
                         progress=False)
    train_encoder(train, config, eval_set=test, checkpoint_dir=tmp_path / "b",
                  progress=False, stop_after_steps=1)
    resumed = train_encoder(train, config, eval_set=test, checkpoint_dir=tmp_path / "b",
                            progress=False)
    a, b = (torch.cat([p.detach().flatten() for p in m.state_dict().values()
                       if p.is_floating_point()]) for m in (full.model, resumed.model))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    plain = train_encoder(train, TrainConfig(**BASE), progress=False)
    assert full.history[-1]["loss"] != pytest.approx(plain.history[-1]["loss"], rel=1e-6)
    assert all(np.isfinite(h["loss"]) for h in full.history)
