"""End to end on real data, on a small budget: CIFAR-10 JPEG images -> a few InfoNCE
steps -> embeddings -> scorers -> OOD metrics; and the shipped encoder's separation of
CIFAR-10 from uniform noise (default run) and from Fashion-MNIST (slow). Skips where the
CIFAR-10 archive (../shared/data or GAUSSOOD_DATA) or Fashion-MNIST is absent."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gaussood import GaussianScorer, KNNScorer, NormShellScorer, ood_report  # noqa: E402
from gaussood.deep import (TrainConfig, extract_embeddings, load_dataset,  # noqa: E402
                           save_encoder, train_encoder)
from gaussood.deep.checkpoint import file_sha256  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
ROOT = os.environ.get("GAUSSOOD_DATA") or str(SHARED)
SHIPPED = REPO / "benchmarks" / "checkpoints" / "cifar10-cpu.pt"
NOISE_AUROC_TRAINED = 0.9


def _cifar(split, n):
    try:
        return load_dataset("cifar10", split, root=ROOT, n=n)
    except FileNotFoundError:
        pytest.skip("CIFAR-10 archive not found")


def _fashion(n):
    try:
        return load_dataset("fashion-mnist", "test", root=ROOT, n=n, jpeg_quality=75)
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST not installed")


def _noise(n, seed=0):
    """Uniform noise images, 32 x 32 RGB uint8 (JPEG-encoded as the ID images are)."""
    import io

    from PIL import Image
    rng = np.random.default_rng(seed)
    out = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            buf, format="JPEG", quality=75)
        out[i] = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return out


def test_images_to_ood_metrics(tmp_path):
    train, test, ood = _cifar("train", 1024), _cifar("test", 300), _fashion(300)
    config = TrainConfig(epochs=1, batch_size=64, steps_per_epoch=3, knn_bank=512,
                         knn_queries=200, knn_k=20)
    result = train_encoder(train, config, eval_set=test, checkpoint_dir=tmp_path / "run",
                           progress=False)
    assert (tmp_path / "run" / "last.pt").is_file()
    assert 0.0 <= result.history[0]["knn_top1"] <= 1.0
    save_encoder(result.model, tmp_path / "enc.pt")
    cache = tmp_path / "cache"
    feats = {name: extract_embeddings(tmp_path / "enc.pt", data, cache_dir=cache, progress=False)
             for name, data in (("train", train), ("test", test), ("ood", ood))}
    assert feats["train"].shape == (1024, 256) and feats["train"].dtype == np.float32
    again = extract_embeddings(tmp_path / "enc.pt", test, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(again, feats["test"])       # served from the cache
    noise = _noise(300)
    feats["noise"] = extract_embeddings(tmp_path / "enc.pt", noise, cache_dir=False,
                                        progress=False)
    noise_auroc = {}
    for scorer in (GaussianScorer(random_state=0), NormShellScorer(random_state=0),
                   KNNScorer(n_neighbors=20)):
        scorer.fit(feats["train"])
        report = ood_report(scorer.score_samples(feats["test"]),
                            {"fashion": scorer.score_samples(feats["ood"]),
                             "noise": scorer.score_samples(feats["noise"])})
        assert np.isfinite(report["fashion"]["auroc"])
        noise_auroc[type(scorer).__name__] = report["noise"]["auroc"]
        p = scorer.pvalue(feats["test"])
        assert np.all((p > 0) & (p <= 1))
        # ID test rows are flagged at about alpha = 5% (300 rows: generous band)
        assert np.mean(scorer.predict(feats["test"]) == -1) < 0.15
    # even a 3-step encoder tells natural images from uniform noise by the Mahalanobis
    # distance (the norm shell of so short a training does not: noise sits on it)
    assert noise_auroc["GaussianScorer"] > NOISE_AUROC_TRAINED, noise_auroc


def test_shipped_encoder_separates_cifar10_from_noise():
    """The shipped encoder, small sample: CIFAR-10 test against uniform noise."""
    if not SHIPPED.is_file():
        pytest.skip("no shipped encoder")
    train, test = _cifar("train", 2000), _cifar("test", 300)
    feats = [extract_embeddings(SHIPPED, d, cache_dir=False, progress=False)
             for d in (train, test, _noise(300, seed=1))]
    for scorer in (GaussianScorer(random_state=0), NormShellScorer(random_state=0)):
        scorer.fit(feats[0])
        report = ood_report(scorer.score_samples(feats[1]), scorer.score_samples(feats[2]))
        assert report["ood"]["auroc"] > 0.9, (type(scorer).__name__, report)


@pytest.mark.slow
def test_shipped_encoder_matches_its_provenance_and_separates_fashion():
    if not SHIPPED.is_file():
        pytest.skip("no shipped encoder")
    provenance = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert file_sha256(SHIPPED) == provenance["sha256"]
    train, test, ood = _cifar("train", 5000), _cifar("test", 1000), _fashion(1000)
    feats = [extract_embeddings(SHIPPED, d, cache_dir=False, progress=False)
             for d in (train, test, ood)]
    scorer = GaussianScorer(random_state=0).fit(feats[0])
    report = ood_report(scorer.score_samples(feats[1]), scorer.score_samples(feats[2]))
    assert report["ood"]["auroc"] > 0.9  # measured when the encoder was trained; see the JSON
