"""Does the parametric law of a ``GaussianScorer`` hold on the rows it was fitted on?

``calibration="f"`` (or ``"chi2"``) turns Mahalanobis distances into p-values with a
law that holds for Gaussian rows. Whether the rows are Gaussian can be checked on the
fit rows themselves, exactly and without held-out data: with K components (one, or
one per class) sharing one covariance, and W the pooled scatter of the n rows around
their component means, the in-sample distance of a row x_i of component k,

    u_i = n_k / (n_k - 1) * (x_i - mean_k)^T W^{-1} (x_i - mean_k),

follows Beta(d / 2, (n - K - d) / 2) for Gaussian rows, whatever the true means and
covariance (Wilks 1963; Gnanadesikan & Kettenring 1972). Each row's in-sample p-value
is therefore exactly U(0, 1), and their Kolmogorov-Smirnov distance from U(0, 1),
``law_misfit_``, measures how far the rows are from the model the parametric
p-values assume. The rows share W and the means, so the KS p-value treats slightly
dependent p-values as independent; on Gaussian rows it stays near uniform (the test
checks this). At most ``MAX_ROWS`` evenly spaced rows are used (a choice that does
not look at the values), so the check costs at most 5,000 x d^2 operations.

The check reads the empirical scatter whatever ``covariance`` is: it asks whether
the rows are Gaussian, not how well a shrunk estimate does. Not computed for
k-means components (data-dependent membership: no exact law), for ``partial_fit``
(earlier batches' rows are gone) or when n - K - d < 1.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg, stats

MAX_ROWS = 5000
LEVEL = 1e-3   # the fit warns when the fit rows reject the law at this level


def check_rows(n: int) -> np.ndarray:
    """Indices of the rows the check reads: at most ``MAX_ROWS``, evenly spaced."""
    return np.unique(np.linspace(0, n - 1, min(MAX_ROWS, n)).astype(np.int64))


def in_sample_pvalues(X, codes, moments) -> np.ndarray | None:
    """Exact in-sample p-values of the fit rows X (all of them, or ``check_rows`` of
    them), or None where the law is undefined. ``codes``: each row's component (None:
    one component); ``moments``: the fit's {"count", "mean", "scatter"} per component,
    of every fit row."""
    count = np.asarray(moments["count"], dtype=np.float64)
    n, d, k = int(round(count.sum())), X.shape[1], count.shape[0]
    if n - k - d < 1:
        return None
    comp = np.zeros(X.shape[0], dtype=np.int64) if codes is None else np.asarray(codes)
    n_k = count[comp]
    keep = n_k >= 2          # a row alone in its component sits on its mean
    if not np.any(keep):
        return None
    scatter = np.asarray(moments["scatter"], dtype=np.float64).sum(axis=0)
    try:
        chol = linalg.cholesky(scatter, lower=True, check_finite=False)
    except linalg.LinAlgError:
        return None
    centred = np.asarray(X[keep], dtype=np.float64) - np.asarray(moments["mean"])[comp[keep]]
    z = linalg.solve_triangular(chol, centred.T, lower=True, check_finite=False)
    u = np.einsum("ij,ij->j", z, z) * n_k[keep] / (n_k[keep] - 1.0)
    return stats.beta.sf(u, d / 2.0, (n - k - d) / 2.0)


def misfit(pvalues) -> tuple[float, float, int]:
    """(KS distance from U(0, 1), its p-value as for independent rows, rows)."""
    result = stats.kstest(pvalues, "uniform")
    return float(result.statistic), float(result.pvalue), int(np.size(pvalues))


def record(scorer, X_rows, codes_rows, stacklevel: int = 5) -> None:
    """Set ``scorer.law_misfit_`` from its fit rows ``X_rows`` (``check_rows`` of the
    rows in the scorer's space) and their components (None: one component), where the
    law is defined; warn when the rows reject it at ``LEVEL``."""
    moments = {key: getattr(scorer, f"moment_{key}_") for key in ("count", "mean", "scatter")}
    p = in_sample_pvalues(X_rows, codes_rows, moments)
    if p is None:
        return
    distance, pvalue, m = misfit(p)
    scorer.law_misfit_ = distance
    if pvalue < LEVEL:
        warnings.warn(
            f"calibration={scorer.calibration_!r} assumes Gaussian rows, but the fit rows "
            f"are not: their exact in-sample p-values are {distance:.3f} from uniform "
            f"(Kolmogorov-Smirnov over {m} rows, p = {pvalue:.1e}). Per-row p-values and "
            "the alpha threshold will not hold, and batch tests (gaussood.shift) would "
            "flag in-distribution batches. Use calibration='conformal' (or calibrate on "
            "held-out rows).", UserWarning, stacklevel=stacklevel)


def rejects(distance: float, n_fit: int) -> bool:
    """Whether a stored ``law_misfit_`` rejects the law at ``LEVEL`` (the rows the check
    used: ``min(n_fit, MAX_ROWS)``, give or take rows alone in their component)."""
    return float(stats.kstwo.sf(distance, max(1, min(int(n_fit), MAX_ROWS)))) < LEVEL


def batch_scale(distance: float) -> int:
    """Rows of a batch from which a law misfit of KS ``distance`` alone makes a KS batch
    test at 5% fire about half the time: sqrt(n) * distance = 1.36."""
    return max(1, int(np.ceil((1.358 / max(distance, 1e-12)) ** 2)))


def warn_batch_test(scorer, stacklevel: int = 3) -> None:
    """Warn before a p-value batch test on a parametric scorer whose fit rows reject its
    law (the test's null assumes the law; ``gaussood.shift.test`` calls this)."""
    distance = getattr(scorer, "law_misfit_", None)
    if distance is None or not rejects(distance, scorer.n_samples_fit_):
        return
    warnings.warn(
        f"The scorer's parametric p-values do not fit its own fit rows (law_misfit_ = "
        f"{distance:.3f}, Kolmogorov-Smirnov): the batch test's null assumes they do, so "
        f"it flags in-distribution batches of about {batch_scale(distance)} rows half the "
        "time and larger ones nearly always. Calibrate on held-out rows "
        "(scorer.calibrate(rows): the conformal null is exact) or use method='hotelling' "
        "with reference=rows.", UserWarning, stacklevel=stacklevel)
