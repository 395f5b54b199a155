"""Covariance estimation from pooled moments, and a stable whitening factor.

The shrinkage formulas are scikit-learn's (``ledoit_wolf_shrinkage`` and
``OAS``), rewritten on the mergeable moments of ``_moments`` so that a streaming
fit gives exactly the batch answer; tests check equality with scikit-learn's
estimators. The final blend is scikit-learn's ``shrunk_covariance``.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.covariance import shrunk_covariance

COVARIANCE_METHODS = ("ledoit_wolf", "oas", "empirical")


def check_covariance_param(covariance) -> None:
    if isinstance(covariance, str):
        if covariance not in COVARIANCE_METHODS:
            raise ValueError(
                f"covariance must be one of {COVARIANCE_METHODS} or a shrinkage in [0, 1]; "
                f"got {covariance!r}."
            )
        return
    if isinstance(covariance, bool) or not isinstance(covariance, numbers.Real):
        raise TypeError(f"covariance must be a string or a float; got {covariance!r}.")
    if not 0.0 <= float(covariance) <= 1.0:
        raise ValueError(f"A fixed shrinkage must lie in [0, 1]; got covariance={covariance!r}.")


def ledoit_wolf_shrinkage(emp_cov: np.ndarray, n: float, fourth: float) -> float:
    """Ledoit-Wolf shrinkage from the MLE covariance and sum_i ||x_i - m||^4."""
    p = emp_cov.shape[0]
    if p == 1:
        return 0.0
    tr = float(np.trace(emp_cov))
    mu = tr / p
    delta_ = float(np.sum(emp_cov**2))
    beta = (fourth / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * tr + p * mu**2) / p
    beta = min(beta, delta)
    # rounding can leave beta a hair below 0 (n = 2): clip into [0, 1]
    return 0.0 if beta <= 0 else float(min(beta / delta, 1.0))


def oas_shrinkage(emp_cov: np.ndarray, n: float) -> float:
    """Oracle Approximating Shrinkage (Chen et al. 2010), as in scikit-learn."""
    p = emp_cov.shape[0]
    if p == 1:
        return 0.0
    alpha = float(np.mean(emp_cov**2))
    mu = float(np.trace(emp_cov)) / p
    num = alpha + mu**2
    den = (n + 1) * (alpha - mu**2 / p)
    return 1.0 if den == 0 else float(min(num / den, 1.0))


def pooled_covariance(moments: dict, covariance) -> tuple[np.ndarray, float]:
    """Tied covariance of all components (residuals from each component mean).

    Returns the shrunk covariance and the shrinkage used.
    """
    n = float(moments["count"].sum())
    emp_cov = moments["scatter"].sum(axis=0) / n
    if covariance == "empirical":
        shrinkage = 0.0
    elif covariance == "ledoit_wolf":
        shrinkage = ledoit_wolf_shrinkage(emp_cov, n, float(moments["fourth"].sum()))
    elif covariance == "oas":
        shrinkage = oas_shrinkage(emp_cov, n)
    else:
        shrinkage = float(covariance)
    if shrinkage == 0.0:
        return emp_cov, 0.0
    return shrunk_covariance(emp_cov, shrinkage), shrinkage


def whitening_factor(cov: np.ndarray, reg_covar: float = 0.0) -> tuple[np.ndarray, int]:
    """W with W^T cov W = I, from a symmetric eigendecomposition (no inverse).

    ``||(x - m) @ W||^2`` is the squared Mahalanobis distance. Eigenvalues are
    floored at ``max(reg_covar * mean_eigenvalue, 1e-12 * max_eigenvalue)``
    (and at the smallest positive float when the matrix is zero), so constant
    features and n < d stay finite. Returns W and the number of floored
    eigenvalues.
    """
    eigval, eigvec = np.linalg.eigh(cov)
    top = float(max(eigval.max(), 0.0))
    floor = max(reg_covar * float(np.mean(np.clip(eigval, 0, None))), 1e-12 * top,
                np.finfo(np.float64).tiny)
    n_floored = int(np.sum(eigval < floor))
    eigval = np.maximum(eigval, floor)
    return eigvec / np.sqrt(eigval), n_floored
