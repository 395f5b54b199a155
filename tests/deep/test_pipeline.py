"""End to end on real data, on a small budget: CIFAR-10 JPEG images -> a few InfoNCE
steps -> embeddings -> scorers -> OOD metrics against Fashion-MNIST. Skips where the
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
SHIPPED = REPO / "benchmarks" / "checkpoints" / "cifar10-small.pt"


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
    for scorer in (GaussianScorer(random_state=0), NormShellScorer(random_state=0),
                   KNNScorer(n_neighbors=20)):
        scorer.fit(feats["train"])
        report = ood_report(scorer.score_samples(feats["test"]),
                            {"fashion": scorer.score_samples(feats["ood"])})
        assert 0.0 <= report["fashion"]["auroc"] <= 1.0
        assert np.all(np.isfinite(scorer.pvalue(feats["test"])))


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
