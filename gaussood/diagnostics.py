"""Does the Gaussian assumption hold on these embeddings? Numbers to check before
trusting parametric p-values (numpy and scipy only).

Each statistic is reported beside the same statistic on an exact Gaussian sample of
the same n and d (``reference``), because pass shares depend on n: under exact
Gaussianity about 95% of coordinates pass a 5% test, never 100%, and tests gain power
as n grows. The norm CV of a Gaussian cannot fall below about 1/sqrt(2 d_eff).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from sklearn.utils import check_array


def norm_cv(X: np.ndarray, center: bool = True) -> float:
    """Coefficient of variation of the row norms (of ``X - mean`` if ``center``)."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X - X.mean(axis=0) if center else X, axis=1)
    return float(norms.std() / norms.mean())


def _anderson_passes(x: np.ndarray, level: float) -> bool:
    try:  # SciPy >= 1.17: interpolated p-value from the published tables
        return bool(stats.anderson(x, dist="norm", method="interpolate").pvalue > level)
    except TypeError:  # older SciPy: compare with the tabulated critical value
        res = stats.anderson(x, dist="norm")
        crit = np.interp(100 * level, res.significance_level[::-1], res.critical_values[::-1])
        return bool(res.statistic < crit)


def anderson_pass_share(X: np.ndarray, level: float = 0.05) -> float:
    """Share of columns that Anderson-Darling (normal, estimated parameters) accepts."""
    X = np.asarray(X, dtype=np.float64)
    return float(np.mean([_anderson_passes(X[:, j], level) for j in range(X.shape[1])]))


def dagostino_pass_share(X: np.ndarray, level: float = 0.05) -> float:
    """Share of columns with D'Agostino-Pearson p-value above ``level`` (needs n >= 20)."""
    return float(np.mean(stats.normaltest(np.asarray(X, dtype=np.float64), axis=0).pvalue > level))


def random_projections(X: np.ndarray, n_projections: int, seed: int = 0) -> np.ndarray:
    """Projections of the centred rows on ``n_projections`` random orthonormal directions."""
    X = np.asarray(X, dtype=np.float64)
    k = min(n_projections, X.shape[1])
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(X.shape[1], k)))
    return (X - X.mean(axis=0)) @ q


def whitened(X: np.ndarray) -> np.ndarray:
    """Coordinates in the eigenbasis of the empirical covariance, scaled to unit variance
    (directions with zero variance dropped)."""
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(axis=0)
    eigval, eigvec = np.linalg.eigh(Xc.T @ Xc / X.shape[0])
    keep = eigval > eigval.max() * 1e-10
    return Xc @ (eigvec[:, keep] / np.sqrt(eigval[keep]))


def mahalanobis_beta_ks(X: np.ndarray) -> float:
    """KS distance of in-sample squared Mahalanobis distances to their exact law.

    With the sample mean and the MLE covariance, n D^2 / (n - 1)^2 follows
    Beta(d/2, (n - d - 1)/2) exactly for Gaussian rows (Gnanadesikan & Kettenring
    1972); chi-square(d) is its large-n limit. Needs n > d + 1.
    """
    Z = whitened(X)
    n, d = Z.shape
    if n <= d + 1:
        raise ValueError(f"the Mahalanobis law needs n > d + 1; got n={n}, d={d}.")
    d2 = np.einsum("ij,ij->i", Z, Z)
    return float(stats.kstest(n * d2 / (n - 1) ** 2, stats.beta(d / 2, (n - d - 1) / 2).cdf)
                 .statistic)


def effective_rank(X: np.ndarray) -> float:
    """exp(entropy) of the normalised covariance spectrum (Roy & Vetterli 2007): d for
    an isotropic cloud, 1 for a line."""
    X = np.asarray(X, dtype=np.float64)
    eigval = np.clip(np.linalg.eigvalsh(np.cov(X, rowvar=False, bias=True).reshape(
        X.shape[1], X.shape[1])), 0, None)
    p = eigval / eigval.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


@dataclass
class GaussianityReport:
    """Diagnostics of one embedding matrix; ``reference`` holds the same numbers for
    an exact Gaussian sample of the same n and d (same mean and covariance)."""

    n: int
    d: int
    norm_cv_centered: float
    norm_cv_uncentered: float
    ad_pass_coordinates: float
    dp_pass_coordinates: float
    ad_pass_projections: float
    ad_pass_whitened: float
    mahalanobis_ks: float | None
    effective_rank: float
    reference: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        rows = [("norm CV (centred)", "norm_cv_centered"), ("norm CV (uncentred)", "norm_cv_uncentered"),
                ("AD pass share, coordinates", "ad_pass_coordinates"),
                ("D'Agostino pass share, coordinates", "dp_pass_coordinates"),
                ("AD pass share, random projections", "ad_pass_projections"),
                ("AD pass share, whitened coordinates", "ad_pass_whitened"),
                ("KS distance, Mahalanobis vs exact law", "mahalanobis_ks"),
                ("effective rank", "effective_rank")]
        ref = self.reference or {}

        def fmt(value):
            return "-" if value is None else f"{value:.4g}"
        lines = [f"Gaussianity diagnostics (n = {self.n}, d = {self.d}); tests at 5%.", "",
                 "| statistic | embeddings | exact Gaussian, same n, d, covariance |", "|---|---|---|"]
        lines += [f"| {label} | {fmt(getattr(self, key))} | {fmt(ref.get(key))} |"
                  for label, key in rows]
        return "\n".join(lines)

    __str__ = to_markdown


def diagnose(X, *, max_samples: int = 5000, n_projections: int = 128, seed: int = 0,
             reference: bool = True) -> GaussianityReport:
    """All diagnostics on (a random subsample of at most ``max_samples`` rows of) X.

    With ``reference=True`` the same statistics are computed on a Gaussian sample
    with X's mean and covariance and the same n, so pass shares can be read against
    what exact Gaussianity gives at this n.
    """
    X = check_array(X, dtype=np.float64, ensure_min_samples=20)
    rng = np.random.default_rng(seed)
    if X.shape[0] > max_samples:
        X = X[np.sort(rng.choice(X.shape[0], max_samples, replace=False))]
    report = _statistics(X, n_projections, seed)
    if reference:
        gauss = rng.multivariate_normal(X.mean(axis=0), np.cov(X, rowvar=False).reshape(
            X.shape[1], X.shape[1]), size=X.shape[0], method="eigh")
        report.reference = asdict(_statistics(gauss, n_projections, seed))
    return report


def _statistics(X, n_projections, seed) -> GaussianityReport:
    n, d = X.shape
    ks = mahalanobis_beta_ks(X) if n > d + 1 else None
    return GaussianityReport(
        n=n, d=d, norm_cv_centered=norm_cv(X), norm_cv_uncentered=norm_cv(X, center=False),
        ad_pass_coordinates=anderson_pass_share(X), dp_pass_coordinates=dagostino_pass_share(X),
        ad_pass_projections=anderson_pass_share(random_projections(X, n_projections, seed)),
        ad_pass_whitened=anderson_pass_share(whitened(X)), mahalanobis_ks=ks,
        effective_rank=effective_rank(X))
