"""Training runs through the real code path, resumes exactly, and checkpoints load."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gaussood.deep import (ImageSet, TrainConfig, embed_images, extract_embeddings,  # noqa: E402
                           knn_top1, load_encoder, save_encoder, train_encoder)
from gaussood.deep.models import Encoder  # noqa: E402


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
