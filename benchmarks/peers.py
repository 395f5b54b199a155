"""The benchmark's peers as ordinary detectors (``fit`` / ``score_samples``, higher = more
in-distribution) for ``gaussood.evaluate_embeddings``: pytorch-ood's Mahalanobis and KNN,
scikit-learn's EllipticEnvelope and LocalOutlierFactor fitted on a random subsample.

``peers(alpha, ee_max, lof_max, n_fit)`` gives the table that ``benchmarks/cifar10_ood.py``
runs beside gaussood's scorers.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, clone

from gaussood.evaluation import Method, draw


class TorchOOD(BaseEstimator):
    """A pytorch-ood detector on features: ``detector`` "mahalanobis" (class means, shared
    covariance; Lee et al. 2018; labels used) or "knn" (distance to the ``k``-th neighbour
    of L2-normalised features; Sun et al. 2022). Scores: minus the detector's outlier
    score. No threshold (no ``predict``)."""

    def __init__(self, detector: str = "mahalanobis", k: int = 50):
        self.detector = detector
        self.k = k

    def fit(self, X, y=None):
        import torch
        from pytorch_ood.detector import KNN, Mahalanobis

        det = Mahalanobis(None) if self.detector == "mahalanobis" else KNN(None, k=self.k)
        y = np.full(len(X), -1) if y is None else y
        self.detector_ = det.fit_features(torch.from_numpy(X),
                                          torch.from_numpy(np.asarray(y).astype(np.int64)))
        return self

    def score_samples(self, X):
        import torch

        return -self.detector_.predict_features(torch.from_numpy(X)).double().numpy()


class Subsampled(BaseEstimator):
    """A scikit-learn outlier detector fitted on at most ``max_rows`` random rows (in
    float64, on one BLAS thread: MCD's many small BLAS calls run 2-3x slower with
    threads than on one core), warnings silenced.

    The rows are drawn from ``np.random.default_rng(random_state + 7)``, after
    ``skip_draws`` earlier draws of that stream: the draws of the benchmark's peers since
    its first version (EllipticEnvelope first, LocalOutlierFactor second), so its numbers
    stay comparable. ``estimator`` gets ``random_state`` where it has one.
    """

    def __init__(self, estimator=None, max_rows: int = 10_000, random_state: int = 0,
                 skip_draws: int = 0):
        self.estimator = estimator
        self.max_rows = max_rows
        self.random_state = random_state
        self.skip_draws = skip_draws

    def _call(self, method, X):
        from threadpoolctl import threadpool_limits

        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")
            return getattr(self.estimator_, method)(np.asarray(X, dtype=np.float64))

    def fit(self, X, y=None):
        rng = np.random.default_rng(self.random_state + 7)
        for _ in range(self.skip_draws):
            rng.permutation(X.shape[0])
        self.estimator_ = clone(self.estimator)
        if "random_state" in self.estimator_.get_params(deep=False):
            self.estimator_.set_params(random_state=self.random_state)
        self._call("fit", X[draw(rng, X.shape[0], self.max_rows)])
        return self

    def score_samples(self, X):
        return self._call("score_samples", X)

    def predict(self, X):
        return self._call("predict", X)


def peers(alpha: float, ee_max: int, lof_max: int, n_fit: int) -> dict:
    """name -> ``Method`` of every peer (in the report's order)."""
    from sklearn.covariance import EllipticEnvelope
    from sklearn.neighbors import LocalOutlierFactor

    return {
        "pytorch-ood Mahalanobis": Method(
            TorchOOD("mahalanobis"), labels=True,
            note="class-conditional means, shared covariance (Lee et al. 2018), labels used"),
        "pytorch-ood KNN (k=50)": Method(
            TorchOOD("knn", k=50), labels=True,
            note="distance to the 50th neighbour of L2-normalised features (Sun et al. 2022)"),
        "sklearn EllipticEnvelope": Method(
            Subsampled(EllipticEnvelope(contamination=alpha), ee_max),
            note=f"MCD fit on {min(ee_max, n_fit)} random fit rows; threshold: "
                 f"contamination={alpha}"),
        "sklearn LOF (novelty)": Method(
            Subsampled(LocalOutlierFactor(n_neighbors=20, novelty=True, contamination=alpha),
                       lof_max, skip_draws=1),
            note=f"n_neighbors=20, fit on {min(lof_max, n_fit)} random fit rows; "
                 f"threshold: contamination={alpha}"),
    }
