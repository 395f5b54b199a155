"""Training runs through the real code path, resumes exactly, and checkpoints load."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gaussood.deep import (ImageSet, TrainConfig, embed_images, extract_embeddings,  # noqa: E402
                           knn_top1, load_encoder, save_encoder, train_encoder)
from gaussood.deep.checkpoint import encoder_preprocessing  # noqa: E402
from gaussood.deep.models import MODELS, Encoder, model_flops  # noqa: E402
from gaussood.deep.train import parse_resolution  # noqa: E402


def tiny_set(n=96, seed=0, name="tiny"):
    """Two visually distinct classes: dark-left and bright-right images with noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 60, size=(n, 32, 32, 3)).astype(np.uint8)
    images[labels == 1] += 150
    return ImageSet(images=images, labels=labels.astype(np.int64), name=name,
                    classes=["dark", "bright"], source=f"synthetic test images, n={n}")


CONFIG = dict(model="small", epochs=2, batch_size=32, steps_per_epoch=2, knn_bank=64,
              knn_queries=32, knn_k=10, seed=3)


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values()
                      if p.is_floating_point()])


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    train, test = tiny_set(), tiny_set(seed=1)
    full = train_encoder(train, TrainConfig(**CONFIG), eval_set=test,
                         checkpoint_dir=tmp_path / "a", progress=False)
    first = train_encoder(train, TrainConfig(**CONFIG), eval_set=test,
                          checkpoint_dir=tmp_path / "b", progress=False, stop_after=1)
    assert len(first.history) == 1
    resumed = train_encoder(train, TrainConfig(**CONFIG), eval_set=test,
                            checkpoint_dir=tmp_path / "b", progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    # tolerance: CPU kernels are deterministic here; allow float32 round-off only
    torch.testing.assert_close(_weights(resumed.model), _weights(full.model), rtol=1e-5, atol=1e-6)
    assert resumed.history[-1]["loss"] == pytest.approx(full.history[-1]["loss"], rel=1e-5)
    for record in full.history:
        assert np.isfinite(record["loss"]) and 0.0 <= record["knn_top1"] <= 1.0


def test_changed_configuration_refuses_to_resume(tmp_path):
    train = tiny_set()
    train_encoder(train, TrainConfig(**CONFIG), checkpoint_dir=tmp_path, progress=False,
                  stop_after=1)
    with pytest.raises(ValueError, match="another configuration"):
        train_encoder(train, TrainConfig(**{**CONFIG, "temperature": 0.2}),
                      checkpoint_dir=tmp_path, progress=False)


def test_loss_decreases_on_easy_data():
    result = train_encoder(tiny_set(256), TrainConfig(**{**CONFIG, "epochs": 4,
                                                         "steps_per_epoch": None}),
                           progress=False)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]


def test_knn_top1_closed_form():
    bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = np.array([0, 0, 1, 1])
    queries = np.array([[1.0, 0.05], [0.05, 1.0], [1.0, 0.0]])
    assert knn_top1(bank, labels, queries, np.array([0, 1, 1]), k=2) == pytest.approx(2 / 3)


def test_encoder_files_round_trip(tmp_path):
    torch.manual_seed(0)
    model = Encoder("small").eval()
    images = tiny_set(8).images
    save_encoder(model, tmp_path / "enc.pt")
    save_encoder(model, tmp_path / "enc16.pt", half=True)
    ref = embed_images(model, images)
    np.testing.assert_array_equal(embed_images(load_encoder(tmp_path / "enc.pt"), images), ref)
    np.testing.assert_allclose(embed_images(load_encoder(tmp_path / "enc16.pt"), images), ref,
                               rtol=0.05, atol=0.05)  # fp16 weights
    assert (tmp_path / "enc16.pt").stat().st_size < 0.6 * (tmp_path / "enc.pt").stat().st_size


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    model = Encoder("small")
    save_encoder(model, tmp_path / "enc.pt")
    with pytest.raises(ValueError, match="not 'resnet18'"):
        load_encoder(tmp_path / "enc.pt", expected_model="resnet18")
    payload = torch.load(tmp_path / "enc.pt", weights_only=True)
    payload["config"]["proj_dim"] = 64
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="do not match"):
        load_encoder(tmp_path / "bad.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_encoder(tmp_path / "junk.pt")


def test_extract_embeddings_is_cached(tmp_path):
    model = Encoder("small")
    save_encoder(model, tmp_path / "enc.pt")
    data = tiny_set(16)
    first = extract_embeddings(tmp_path / "enc.pt", data, cache_dir=tmp_path / "cache",
                               progress=False)
    cached = list((tmp_path / "cache" / "embeddings").glob("*.npy"))
    assert len(cached) == 1 and first.dtype == np.float32 and first.shape == (16, 256)
    np.testing.assert_array_equal(
        extract_embeddings(tmp_path / "enc.pt", data, cache_dir=tmp_path / "cache"), first)
    head = extract_embeddings(tmp_path / "enc.pt", data, layer="head", cache_dir=tmp_path / "cache")
    assert head.shape == (16, 128)
    assert len(list((tmp_path / "cache" / "embeddings").glob("*.npy"))) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_on_cuda(tmp_path):
    result = train_encoder(tiny_set(), TrainConfig(**CONFIG), device="cuda", progress=False)
    assert np.isfinite(result.history[-1]["loss"])


# ---------------------------------------------------------------- budgets, resume, data
MID = dict(CONFIG, epochs=2, steps_per_epoch=3, resolution="16:0.5,32", small_crops=1)


@pytest.mark.parametrize("model", ["small", "resnet8", "airbench"])
def test_resume_mid_epoch_matches_uninterrupted(tmp_path, model):
    train, cfg = tiny_set(), TrainConfig(**{**MID, "model": model})
    full = train_encoder(train, cfg, checkpoint_dir=tmp_path / "a", progress=False)
    for stop in (1, 3):  # step 1 is mid-epoch, step 4 (1 + 3) too
        cut = train_encoder(train, cfg, checkpoint_dir=tmp_path / "b", progress=False,
                            stop_after_steps=stop)
        assert cut.total_steps == 6
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert state["step"] == 4 and state["gen"] is not None  # mid-epoch, generator saved
    resumed = train_encoder(train, cfg, checkpoint_dir=tmp_path / "b", progress=False)
    torch.testing.assert_close(_weights(resumed.model), _weights(full.model), rtol=1e-5, atol=1e-6)
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in full.history])
    assert [h["resolution"] for h in full.history] == [16, 32]


def test_budget_fixes_the_step_count_once(tmp_path):
    cfg = TrainConfig(**{**CONFIG, "epochs": 1, "budget_minutes": 0.02, "steps_per_epoch": 2})
    first = train_encoder(tiny_set(), cfg, checkpoint_dir=tmp_path, progress=False,
                          stop_after_steps=1)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["total_steps"] == first.total_steps >= 1
    assert state["timing"]["total_steps"] == first.total_steps
    # a resume with another budget keeps the stored schedule (the budget only sizes a new run)
    resumed = train_encoder(tiny_set(), dataclasses.replace(cfg, budget_minutes=5.0),
                            checkpoint_dir=tmp_path, progress=False)
    assert resumed.total_steps == first.total_steps
    assert resumed.history[-1]["step"] == first.total_steps


def test_steps_reruns_a_budgeted_run_exactly(tmp_path):
    cfg = TrainConfig(**{**CONFIG, "budget_minutes": 0.01, "steps_per_epoch": 2})
    budgeted = train_encoder(tiny_set(), cfg, progress=False)
    again = train_encoder(tiny_set(), dataclasses.replace(cfg, budget_minutes=None,
                                                          steps=budgeted.total_steps),
                          progress=False)
    assert again.total_steps == budgeted.total_steps
    torch.testing.assert_close(_weights(again.model), _weights(budgeted.model))


def test_resume_refuses_other_data_and_warns_without_fingerprint(tmp_path):
    cfg = TrainConfig(**CONFIG)
    train_encoder(tiny_set(), cfg, checkpoint_dir=tmp_path, progress=False, stop_after=1)
    with pytest.raises(ValueError, match="trained on other data"):
        train_encoder(tiny_set(seed=5), cfg, checkpoint_dir=tmp_path, progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    del state["data"]
    torch.save(state, tmp_path / "last.pt")
    with pytest.warns(UserWarning, match="does not record its training data"):
        out = train_encoder(tiny_set(), cfg, checkpoint_dir=tmp_path, progress=False)
    assert out.history[-1]["epoch"] == 2


def test_resume_accepts_fields_added_later_and_ignores_non_shaping_ones(tmp_path):
    cfg = TrainConfig(**CONFIG)
    train_encoder(tiny_set(), cfg, checkpoint_dir=tmp_path, progress=False, stop_after=1)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    for new_field in ("resolution", "small_crops", "budget_minutes", "knn_every"):
        del state["config"][new_field]  # as written before these fields existed
    torch.save(state, tmp_path / "last.pt")
    out = train_encoder(tiny_set(), dataclasses.replace(cfg, knn_k=5, checkpoint_minutes=1.0),
                        checkpoint_dir=tmp_path, progress=False)
    assert out.history[-1]["epoch"] == 2
    with pytest.raises(ValueError, match="resolution: '32' -> '16:0.5,32'"):
        train_encoder(tiny_set(), dataclasses.replace(cfg, resolution="16:0.5,32"),
                      checkpoint_dir=tmp_path, progress=False)


@pytest.mark.parametrize("spec,phases", [("32", [(32, 1.0)]), ("16:0.75,32", [(16, 0.75), (32, 1.0)]),
                                         ("16:0.5,24:0.25,32", [(16, 0.5), (24, 0.75), (32, 1.0)])])
def test_parse_resolution(spec, phases):
    assert parse_resolution(spec) == phases


@pytest.mark.parametrize("spec", ["", "16:0.75", "16,32", "16:1.2,32", "2", "16:0.6,24:0.4,32", "a"])
def test_parse_resolution_rejects(spec):
    with pytest.raises(ValueError, match="resolution must look like"):
        parse_resolution(spec)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_backbone_runs_at_any_side(name):
    if name == "resnet18":
        pytest.skip("covered by the CUDA test; slow on CPU")
    model = Encoder(name).eval()
    for side in (16, 32):
        h, z = model(torch.zeros(2, 3, side, side))
        assert h.shape == (2, model.feature_dim) and z.shape == (2, 128)
    assert model_flops(name) <= 100e6  # the CPU study's budget per 32 px forward pass


def test_encoder_file_version_2_has_preprocessing_and_version_1_still_loads(tmp_path):
    model = Encoder("small").eval()
    save_encoder(model, tmp_path / "v2.pt")
    payload = torch.load(tmp_path / "v2.pt", weights_only=True)
    assert payload["version"] == 2 and payload["preprocessing"]["input_size"] == [32, 32]
    old = {k: v for k, v in payload.items() if k != "preprocessing"}
    old["version"] = 1
    torch.save(old, tmp_path / "v1.pt")
    assert encoder_preprocessing(torch.load(tmp_path / "v1.pt", weights_only=True)) == \
        payload["preprocessing"]
    images = tiny_set(4).images
    np.testing.assert_array_equal(embed_images(load_encoder(tmp_path / "v1.pt"), images),
                                  embed_images(model, images))
    for bad in (3, "2", None):
        torch.save({**payload, "version": bad}, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match="version"):
            load_encoder(tmp_path / "bad.pt")


def test_should_stop_checkpoints_and_resumes_exactly(tmp_path):
    train, cfg = tiny_set(), TrainConfig(**MID)
    full = train_encoder(train, cfg, progress=False)
    calls = []
    cut = train_encoder(train, cfg, checkpoint_dir=tmp_path, progress=False,
                        should_stop=lambda: calls.append(1) or len(calls) >= 2)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 2 and not cut.history
    resumed = train_encoder(train, cfg, checkpoint_dir=tmp_path, progress=False)
    torch.testing.assert_close(_weights(resumed.model), _weights(full.model), rtol=1e-5, atol=1e-6)
