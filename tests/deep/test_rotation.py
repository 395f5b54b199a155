"""Rotations in the objective: exact turns, seeded draws, the loss with shifted negatives
against a naive loop (values and gradients), and short training runs."""

import dataclasses
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gaussood.deep import TrainConfig, train_encoder  # noqa: E402
from gaussood.deep.loss import InfoNCELoss  # noqa: E402
from gaussood.deep.rotation import (draw_rotations, other_rotations, rotate,  # noqa: E402
                                    rotation_views)

torch.set_num_threads(1)


def naive_loss(z1, z2, neg, t):
    """Per anchor i of [z1; z2]: -log(exp(s_ip / t) / sum over every other row and every
    extra negative of exp(s_ik / t)), looped, in float64 torch ops (differentiable)."""
    rows = [r / r.norm() for r in torch.cat([z1, z2])]
    keys = rows + [r / r.norm() for r in neg]
    n, total = z1.shape[0], 0.0
    for i, a in enumerate(rows):
        p = (i + n) % (2 * n)
        den = sum(torch.exp(a @ k / t) for j, k in enumerate(keys) if j != i)
        total = total - torch.log(torch.exp(a @ rows[p] / t) / den)
    return total / (2 * n)


@pytest.mark.parametrize("n, m, d, t", [(2, 1, 3, 0.5), (4, 3, 5, 0.1), (5, 0, 4, 1.0),
                                        (3, 6, 2, 0.07)])
def test_loss_with_negatives_equals_naive_values_and_gradients(n, m, d, t):
    g = torch.Generator().manual_seed(10 * n + m)
    z1, z2, neg = (torch.randn(k, d, generator=g, dtype=torch.float64, requires_grad=True)
                   for k in (n, n, m))
    fast = InfoNCELoss(t)(z1, z2, negatives=neg)
    slow = naive_loss(z1, z2, neg, t)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-10)
    grads_fast = torch.autograd.grad(fast, (z1, z2, neg), allow_unused=True)
    grads_slow = torch.autograd.grad(slow, (z1, z2, neg), allow_unused=True)
    for a, b in zip(grads_fast, grads_slow):
        if b is None:  # m = 0: no negatives, no gradient
            assert a is None or a.numel() == 0
        else:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_no_negatives_is_the_plain_loss_and_identical_negatives_add_to_the_count():
    z = torch.ones(4, 8)
    loss = InfoNCELoss(0.1)
    assert loss(z, z, negatives=torch.zeros(0, 8)).item() == pytest.approx(loss(z, z).item())
    # all rows equal: log(2N - 1 + M)
    assert loss(z, z, negatives=torch.ones(5, 8)).item() == pytest.approx(math.log(7 + 5))
    with pytest.raises(ValueError, match="negatives"):
        loss(z, z, negatives=torch.ones(5, 7))


def test_rotations_are_exact_quarter_turns():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4).repeat(4, 1, 1, 1)
    r = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    out = rotate(x, r)
    for i in range(8):
        assert torch.equal(out[i], torch.rot90(x[i], int(r[i]), dims=(1, 2)))
    # a quarter turn is counter-clockwise: the top-right pixel goes to the top left
    assert out[1, 0, 0, 0] == x[1, 0, 0, 3]
    assert torch.equal(rotate(rotate(x, r), (4 - r) % 4), x)
    views = rotation_views(x)
    assert [torch.equal(v, rotate(x, torch.full((8,), k))) for k, v in enumerate(views)] == \
        [True] * 4
    with pytest.raises(ValueError, match="square"):
        rotate(torch.zeros(2, 3, 4, 6), torch.tensor([1, 0]))


def test_rotation_draws_are_seeded_and_uniform():
    a = draw_rotations(4000, torch.Generator().manual_seed(7))
    b = draw_rotations(4000, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, draw_rotations(4000, torch.Generator()
                                                                  .manual_seed(8)))
    counts = torch.bincount(a, minlength=4).numpy()
    assert counts.min() > 900 and counts.max() < 1100   # 1000 +- 3.2 sigma
    other = other_rotations(a, torch.Generator().manual_seed(1))
    assert bool((other != a).all()) and set(other.tolist()) == {0, 1, 2, 3}


def tiny_set(n=64, seed=0):
    from gaussood.deep import ImageSet

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 60, size=(n, 16, 16, 3)).astype(np.uint8)
    images[labels == 1, :, 8:] += 150   # bright right half: rotations change the image
    return ImageSet(images, labels, "tiny", ["a", "b"], "synthetic")


BASE = dict(model="small", epochs=2, batch_size=16, steps_per_epoch=2, knn_bank=32,
            knn_queries=16, knn_k=5, resolution="16", seed=1)


@pytest.mark.parametrize("rotation, extra", [("negatives", 0.0), ("negatives", 0.5),
                                             ("predict", 0.25)])
def test_training_with_rotation_runs_reproducibly_and_resumes(tmp_path, rotation, extra):
    config = TrainConfig(**BASE, rotation=rotation, rotation_negatives=extra)
    train, test = tiny_set(), tiny_set(seed=1)
    a = train_encoder(train, config, eval_set=test, progress=False, device="cpu")
    b = train_encoder(train, config, eval_set=test, checkpoint_dir=tmp_path, progress=False,
                      device="cpu", stop_after_steps=3)
    b = train_encoder(train, config, eval_set=test, checkpoint_dir=tmp_path, progress=False,
                      device="cpu")
    assert all(np.isfinite(h["loss"]) for h in a.history)
    for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        torch.testing.assert_close(p, q)
    plain = train_encoder(train, TrainConfig(**BASE), progress=False, device="cpu")
    assert a.history[0]["loss"] != plain.history[0]["loss"]   # the rotations changed the run
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ("rotation_head" in saved) == (rotation == "predict")


def test_rotation_config_errors():
    with pytest.raises(ValueError, match="rotation must be one of"):
        train_encoder(tiny_set(), TrainConfig(**BASE, rotation="all"), progress=False)
    with pytest.raises(ValueError, match="needs rotation="):
        train_encoder(tiny_set(), TrainConfig(**BASE, rotation_negatives=0.5), progress=False)
    with pytest.raises(ValueError, match="objective='infonce' or 'supcon' only"):
        train_encoder(tiny_set(), TrainConfig(**BASE, rotation="negatives",
                                              objective="supervised"), progress=False)


def test_checkpoint_without_rotation_fields_resumes(tmp_path):
    config = TrainConfig(**BASE)
    train = tiny_set()
    train_encoder(train, config, checkpoint_dir=tmp_path, progress=False, stop_after_steps=1)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    for key in ("rotation", "rotation_negatives", "rotation_weight", "proxy_monitor"):
        del state["config"][key]   # as written before these fields existed
    torch.save(state, tmp_path / "last.pt")
    done = train_encoder(train, config, checkpoint_dir=tmp_path, progress=False)
    assert done.history[-1]["step"] == 4
    with pytest.raises(ValueError, match="rotation: 'none' -> 'negatives'"):
        train_encoder(train, dataclasses.replace(config, rotation="negatives"),
                      checkpoint_dir=tmp_path, progress=False)


def test_rotation_ensemble_at_embedding_time_is_the_mean_over_quarter_turns():
    from gaussood.deep import embed_images, make_encoder
    from gaussood.deep.models import Encoder

    torch.manual_seed(0)
    model = Encoder("small").eval()
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    ensemble = embed_images(model, images, views="rot4", device="cpu")
    turned = [embed_images(model, np.ascontiguousarray(np.rot90(images, k, axes=(1, 2))),
                           device="cpu") for k in range(4)]
    np.testing.assert_allclose(ensemble, np.mean(turned, axis=0), rtol=1e-4, atol=1e-8)
    assert np.linalg.norm(ensemble - turned[0]) > 0.01 * np.linalg.norm(turned[0])
    plain, rot4 = make_encoder(model), make_encoder(model, views="rot4")
    assert "views" not in plain.identity() and rot4.identity()["views"] == "rot4"
    with pytest.raises(ValueError, match="views must be one of"):
        make_encoder(model, views="rot8")


def test_flip_views_average_the_image_and_its_mirror():
    """views="flip" (test-time augmentation): the mean of the features of each image
    and of its left-right mirror, recorded in the identity (so embeddings made with
    and without it never mix in one cache entry or one scorer)."""
    from gaussood.deep import embed_images, make_encoder
    from gaussood.deep.models import Encoder

    torch.manual_seed(0)
    model = Encoder("small").eval()
    images = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    tta = embed_images(model, images, views="flip", device="cpu")
    mirrored = np.ascontiguousarray(images[:, :, ::-1])
    want = (embed_images(model, images, device="cpu").astype(np.float64)
            + embed_images(model, mirrored, device="cpu")) / 2
    np.testing.assert_allclose(tta, want, rtol=1e-4, atol=1e-7)
    assert np.allclose(embed_images(model, mirrored, views="flip", device="cpu"), tta,
                       rtol=1e-4, atol=1e-7)  # mirror-invariant by construction
    assert make_encoder(model, views="flip").identity()["views"] == "flip"
    assert make_encoder(model).identity() != make_encoder(model, views="flip").identity()


def test_flip_crop_views_average_four_deterministic_views():
    """views="flip-crop": the mean features of the image, its mirror, its small centre
    crop (1/16 border cut, resized back) and that crop's mirror; in the identity."""
    import torch.nn.functional as F

    from gaussood.deep import make_encoder
    from gaussood.deep.models import Encoder

    torch.manual_seed(0)
    model = Encoder("small").eval()
    images = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    enc = make_encoder(model, views="flip-crop", device="cpu")
    prep = enc._prep(images, torch.device("cpu"))   # the preprocessed (4, 3, 32, 32) batch
    crop = F.interpolate(prep[..., 2:30, 2:30], size=(32, 32), mode="bilinear",
                         align_corners=False)
    with torch.no_grad():
        want = sum(model.backbone(v).double() for v in
                   (prep, prep.flip(-1), crop, crop.flip(-1))) / 4
    np.testing.assert_allclose(enc.embed(images, progress=False), want.numpy(),
                               rtol=1e-4, atol=1e-6)
    assert enc.identity()["views"] == "flip-crop"
    assert enc.identity() != make_encoder(model, views="flip").identity()
