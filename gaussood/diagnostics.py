"""Does the Gaussian assumption hold on these embeddings? Numbers to check before
trusting parametric p-values (numpy and scipy only).

Each statistic is reported beside the same statistic on an exact Gaussian sample of
the same n and d (``reference``), because pass shares depend on n: under exact
Gaussianity about 95% of coordinates pass a 5% test, never 100%, and tests gain power
as n grows. The norm CV of a Gaussian cannot fall below about 1/sqrt(2 d_eff).
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from sklearn.utils import check_array

from ._threads import dense_decomposition_threads

MIN_SAMPLES = 20  # D'Agostino-Pearson needs n >= 20
ALPHA = 0.05      # level of every test, and of the parametric threshold in the verdict


def norm_cv(X: np.ndarray, center: bool = True) -> float:
    """Coefficient of variation of the row norms (of ``X - mean`` if ``center``)."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X - X.mean(axis=0) if center else X, axis=1)
    return float(norms.std() / norms.mean())


def _anderson(x: np.ndarray, level: float) -> tuple[float, bool]:
    """(Anderson-Darling statistic, does the test accept normality at ``level``)."""
    try:  # SciPy >= 1.17: interpolated p-value from the published tables
        res = stats.anderson(x, dist="norm", method="interpolate")
        return float(res.statistic), bool(res.pvalue > level)
    except TypeError:  # older SciPy: compare with the tabulated critical value
        res = stats.anderson(x, dist="norm")
        crit = np.interp(100 * level, res.significance_level[::-1], res.critical_values[::-1])
        return float(res.statistic), bool(res.statistic < crit)


def _anderson_columns(X: np.ndarray, level: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Per column: AD statistics (d,) and whether each passes at ``level`` (d,)."""
    X = np.asarray(X, dtype=np.float64)
    out = [_anderson(X[:, j], level) for j in range(X.shape[1])]
    return np.array([o[0] for o in out]), np.array([o[1] for o in out], dtype=bool)


def anderson_statistics(X: np.ndarray) -> np.ndarray:
    """Anderson-Darling statistic (normal law, estimated mean and variance) of each
    column, shape (d,); the 5% critical value at large n is about 0.75."""
    return _anderson_columns(X)[0]


QQ_PROBABILITIES = np.linspace(0.005, 0.995, 199)


def mahalanobis_qq(X: np.ndarray, probabilities=QQ_PROBABILITIES) -> dict:
    """QQ data of in-sample squared Mahalanobis distances against their exact law.

    ``theoretical`` are quantiles of (n - 1) * Beta(d/2, (n - d - 1)/2), the exact law of
    D^2 for Gaussian rows with the sample mean and the MLE covariance (mean d; about
    chi-square(d) for large n); ``sample`` the empirical quantiles. Points on the diagonal mean Gaussian.
    """
    return _qq_from_whitened(whitened(X), probabilities)


def _squared_distances(Z: np.ndarray) -> np.ndarray:
    n, d = Z.shape
    if n <= d + 1:
        raise ValueError(f"the Mahalanobis law needs n > d + 1; got n={n}, d={d}.")
    return np.einsum("ij,ij->i", Z, Z)


def _qq_from_whitened(Z: np.ndarray, probabilities=QQ_PROBABILITIES) -> dict:
    d2 = _squared_distances(Z)
    n, d = Z.shape
    p = np.asarray(probabilities, dtype=np.float64)
    theory = (n - 1) * stats.beta(d / 2, (n - d - 1) / 2).ppf(p)
    return {"probabilities": p.tolist(), "theoretical": theory.tolist(),
            "sample": np.quantile(d2, p).tolist(), "chi2": stats.chi2(d).ppf(p).tolist()}


def anderson_pass_share(X: np.ndarray, level: float = 0.05) -> float:
    """Share of columns that Anderson-Darling (normal, estimated parameters) accepts."""
    return float(np.mean(_anderson_columns(X, level)[1]))


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
    with dense_decomposition_threads(X.shape[1]):
        eigval, eigvec = np.linalg.eigh(Xc.T @ Xc / X.shape[0])
    keep = eigval > eigval.max() * 1e-10
    return Xc @ (eigvec[:, keep] / np.sqrt(eigval[keep]))


def mahalanobis_beta_ks(X: np.ndarray) -> float:
    """KS distance of in-sample squared Mahalanobis distances to their exact law.

    With the sample mean and the MLE covariance (what ``whitened`` uses),
    D^2 / (n - 1) follows Beta(d/2, (n - d - 1)/2) exactly for Gaussian rows
    (Gnanadesikan & Kettenring 1972, for the unbiased covariance S: n D_S^2 / (n - 1)^2;
    D^2 = n D_S^2 / (n - 1)); chi-square(d) is its large-n limit. Needs n > d + 1.
    """
    return _ks_from_whitened(whitened(X))


def _ks_from_whitened(Z: np.ndarray) -> float:
    d2 = _squared_distances(Z)
    n, d = Z.shape
    return float(stats.kstest(d2 / (n - 1), stats.beta(d / 2, (n - d - 1) / 2).cdf).statistic)


def _parametric_flag_rate(Z: np.ndarray, alpha: float = ALPHA) -> float:
    """Share of rows whose squared Mahalanobis distance exceeds the exact law's
    ``1 - alpha`` quantile: what a parametric threshold at ``alpha`` flags on these
    rows (``alpha`` for Gaussian rows, up to sampling noise)."""
    d2 = _squared_distances(Z)
    n, d = Z.shape
    return float(np.mean(d2 > (n - 1) * stats.beta(d / 2, (n - d - 1) / 2).isf(alpha)))


def effective_rank(X: np.ndarray) -> float:
    """exp(entropy) of the normalised covariance spectrum (Roy & Vetterli 2007): d for
    an isotropic cloud, 1 for a line."""
    X = np.asarray(X, dtype=np.float64)
    with dense_decomposition_threads(X.shape[1]):
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
    qq_mahalanobis: dict | None = None
    parametric_flag_rate: float | None = None
    verdict: str = ""
    advice: list = field(default_factory=list)
    arrays: dict = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict:
        """JSON-ready numbers (the raw arrays behind the figures are left out)."""
        out = asdict(self)
        out.pop("arrays")
        return out

    def save_figures(self, folder, prefix: str = "gaussianity") -> list[Path]:
        """Write three PNG figures into ``folder`` and return their paths:
        ``<prefix>_norms.png`` (histogram of centred norms, embeddings vs the
        Gaussian reference), ``<prefix>_qq.png`` (QQ of squared Mahalanobis
        distances against their exact law, and of one standardised random
        projection against the normal), ``<prefix>_ad.png`` (Anderson-Darling
        statistics of the coordinates and of the reference, with the 5% critical
        value)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from ._atomic import atomic_path

        if not self.arrays:
            raise ValueError("This report holds no arrays (loaded from JSON?); rerun diagnose().")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        a, paths = self.arrays, []

        def save(fig, name):
            path = folder / f"{prefix}_{name}.png"
            with atomic_path(path, suffix=".png") as tmp:
                fig.savefig(tmp, dpi=110, format="png")
            plt.close(fig)
            paths.append(path)

        fig, ax = plt.subplots(figsize=(5, 3.4))
        bins = np.linspace(0, max(a["norms"].max(), a.get("ref_norms", a["norms"]).max()), 80)
        ax.hist(a["norms"], bins, alpha=0.6, density=True,
                label=f"embeddings (CV {self.norm_cv_centered:.3f})")
        if "ref_norms" in a:
            ax.hist(a["ref_norms"], bins, alpha=0.6, density=True,
                    label=f"Gaussian reference (CV {self.reference['norm_cv_centered']:.3f})")
        ax.set_xlabel("||x - mean||")
        ax.set_title(f"Norm shell (n = {self.n}, d = {self.d})", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        save(fig, "norms")

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
        if self.qq_mahalanobis is not None:
            qq = self.qq_mahalanobis
            axes[0].plot(qq["theoretical"], qq["sample"], ".", ms=3, label="embeddings")
            if self.reference and self.reference.get("qq_mahalanobis"):
                ref = self.reference["qq_mahalanobis"]
                axes[0].plot(ref["theoretical"], ref["sample"], ".", ms=3,
                             label="Gaussian reference")
            lim = [min(qq["theoretical"]), max(qq["theoretical"])]
            axes[0].plot(lim, lim, "k-", lw=0.8)
            axes[0].set_xlabel("exact-law quantile (Beta, about chi-square(d))")
            axes[0].set_ylabel("sample quantile of squared Mahalanobis")
            axes[0].legend(fontsize=7)
        axes[0].set_title(f"Mahalanobis QQ (KS {self.mahalanobis_ks or float('nan'):.3f})",
                          fontsize=9)
        proj = np.sort(a["projection"])
        theory = stats.norm.ppf((np.arange(1, proj.size + 1) - 0.5) / proj.size)
        axes[1].plot(theory, proj, ".", ms=2)
        axes[1].plot(theory[[0, -1]], theory[[0, -1]], "k-", lw=0.8)
        axes[1].set_xlabel("normal quantile")
        axes[1].set_ylabel("standardised random projection")
        axes[1].set_title("QQ of one random projection", fontsize=9)
        fig.tight_layout()
        save(fig, "qq")

        fig, ax = plt.subplots(figsize=(5, 3.4))
        both = np.concatenate([a["ad"], a.get("ref_ad", a["ad"])])
        hi, lo = max(np.percentile(both, 99), 1.5), max(both.min(), 0.05)
        log_scale = hi / lo > 50          # far from Gaussian: a log axis keeps both visible
        bins = np.geomspace(lo, hi, 60) if log_scale else np.linspace(0, hi, 60)
        ax.hist(np.clip(a["ad"], bins[0], bins[-1]), bins, alpha=0.6, label="coordinates")
        if "ref_ad" in a:
            ax.hist(np.clip(a["ref_ad"], bins[0], bins[-1]), bins, alpha=0.6,
                    label="Gaussian reference")
        if log_scale:
            ax.set_xscale("log")
        ax.axvline(0.752, color="k", lw=0.8, label="5% critical value (0.752)")
        ax.set_xlabel("Anderson-Darling statistic (clipped at the 99th percentile"
                      + (", log scale)" if log_scale else ")"))
        ax.set_title(f"AD pass share {100 * self.ad_pass_coordinates:.1f}% "
                     f"(reference {100 * (self.reference or {}).get('ad_pass_coordinates', np.nan):.1f}%)",
                     fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        save(fig, "ad")
        return paths

    def to_markdown(self) -> str:
        rows = [("norm CV (centred)", "norm_cv_centered"), ("norm CV (uncentred)", "norm_cv_uncentered"),
                ("AD pass share, coordinates", "ad_pass_coordinates"),
                ("D'Agostino pass share, coordinates", "dp_pass_coordinates"),
                ("AD pass share, random projections", "ad_pass_projections"),
                ("AD pass share, whitened coordinates", "ad_pass_whitened"),
                ("KS distance, Mahalanobis vs exact law", "mahalanobis_ks"),
                ("share flagged by the parametric Mahalanobis threshold at 5%",
                 "parametric_flag_rate"),
                ("effective rank", "effective_rank")]
        ref = self.reference or {}

        def fmt(value):
            return "-" if value is None else f"{value:.4g}"
        lines = [f"Gaussianity diagnostics (n = {self.n}, d = {self.d}); tests at 5%.", "",
                 "| statistic | embeddings | exact Gaussian, same n, d, covariance |", "|---|---|---|"]
        lines += [f"| {label} | {fmt(getattr(self, key))} | {fmt(ref.get(key))} |"
                  for label, key in rows]
        if self.verdict:
            lines += ["", f"Verdict: {self.verdict}"]
            lines += [f"- {line}" for line in self.advice]
        return "\n".join(lines)

    __str__ = to_markdown


def diagnose(X, *, max_samples: int = 5000, n_projections: int = 128, seed: int = 0,
             reference: bool = True) -> GaussianityReport:
    """All diagnostics on (a random subsample of at most ``max_samples`` rows of) X.

    With ``reference=True`` the same statistics are computed on a Gaussian sample
    with X's mean and covariance and the same n, so pass shares can be read against
    what exact Gaussianity gives at this n.
    """
    for name, value, low in (("max_samples", max_samples, MIN_SAMPLES),
                             ("n_projections", n_projections, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer; got {value!r}.")
        if value < low:
            raise ValueError(f"{name} must be at least {low}; got {value}"
                             + (" (the tests need 20 rows)." if low == MIN_SAMPLES else "."))
    X = check_array(X, dtype=np.float64, ensure_min_samples=MIN_SAMPLES)
    rng = np.random.default_rng(seed)
    if X.shape[0] > max_samples:
        X = X[np.sort(rng.choice(X.shape[0], max_samples, replace=False))]
    report = _statistics(X, n_projections, seed)
    if reference:
        gauss = rng.multivariate_normal(X.mean(axis=0), np.cov(X, rowvar=False).reshape(
            X.shape[1], X.shape[1]), size=X.shape[0], method="eigh")
        ref = _statistics(gauss, n_projections, seed)
        report.arrays.update({"ref_norms": ref.arrays["norms"], "ref_ad": ref.arrays["ad"]})
        report.reference = ref.to_dict()
    report.verdict, report.advice = verdict(report)
    return report


def _binomial_band(share: float, count: int) -> float:
    """Three standard deviations of a share estimated from ``count`` trials."""
    return 3.0 * float(np.sqrt(share * (1.0 - share) / max(count, 1)))


def verdict(report: GaussianityReport, alpha: float = ALPHA) -> tuple[str, list]:
    """(one-line verdict, list of advice) from a report's numbers.

    Gaussian enough for parametric p-values means: the parametric Mahalanobis
    threshold at ``alpha`` flags ``alpha`` of the rows (within 3 binomial standard
    deviations, or 1 point), and the coordinates pass Anderson-Darling about as
    often as the exact Gaussian reference (within 3 binomial standard deviations over
    d coordinates, plus 2 points; 95% without a reference).
    """
    n, d = report.n, report.d
    rate = report.parametric_flag_rate
    ref = report.reference or {}
    ref_pass = ref.get("ad_pass_coordinates", 1.0 - alpha)
    coords_ok = report.ad_pass_coordinates >= ref_pass - _binomial_band(1.0 - alpha, d) - 0.02
    pct = f"{100 * alpha:g}%"
    advice = []
    if report.norm_cv_uncentered < 1e-6:
        advice.append("the rows all have the same norm (L2-normalised?): they lie on a "
                      "sphere, the norm-shell score is meaningless; score the unnormalised "
                      "embeddings, or compare with points drawn uniformly on the sphere.")
    if rate is None:
        advice.append(f"n = {n} <= d + 1 = {d + 1}: the Mahalanobis law cannot be checked; "
                      "give more rows (n >> d).")
        law_ok, flags = False, "an unknown share"
    else:
        law_ok = abs(rate - alpha) <= max(_binomial_band(alpha, n), 0.01)
        flags = f"about {100 * rate:.1f}%"
        if rate > alpha and not law_ok:
            advice.append(f"heavier tails than a Gaussian: the parametric threshold at alpha "
                          f"{pct} flags {flags} of in-distribution rows (false alarms).")
        elif not law_ok:
            advice.append(f"lighter tails than a Gaussian: the parametric threshold at alpha "
                          f"{pct} flags only {flags} of in-distribution rows (it misses OOD "
                          "inputs it could catch).")
    if not coords_ok:
        advice.append(f"{100 * report.ad_pass_coordinates:.1f}% of coordinates pass "
                      f"Anderson-Darling at {pct} against {100 * ref_pass:.1f}% for an exact "
                      "Gaussian of the same n and d.")
    if law_ok and coords_ok:
        head = (f"Gaussian at this n: parametric p-values (calibration='f', 'chi2', "
                f"'shell') are usable; they would flag {flags} at alpha {pct}.")
        advice.append("conformal thresholds (calibration='conformal') stay valid too, "
                      "and need no Gaussian assumption.")
    else:
        head = (f"not Gaussian at this n: use conformal thresholds "
                f"(calibration='conformal', or calibrate(X_cal) on held-out "
                f"in-distribution data); parametric p-values would flag {flags} at "
                f"alpha {pct}.")
    return head, advice


def _statistics(X, n_projections, seed) -> GaussianityReport:
    n, d = X.shape
    Z = whitened(X)                       # once: AD on whitened coordinates, KS and QQ
    law = Z.shape[0] > Z.shape[1] + 1
    projections = random_projections(X, n_projections, seed)
    first = projections[:, 0]
    ad_stats, ad_pass = _anderson_columns(X)
    arrays = {"norms": np.linalg.norm(X - X.mean(axis=0), axis=1), "ad": ad_stats,
              "projection": (first - first.mean()) / (first.std() or 1.0)}
    return GaussianityReport(
        n=n, d=d, norm_cv_centered=norm_cv(X), norm_cv_uncentered=norm_cv(X, center=False),
        ad_pass_coordinates=float(np.mean(ad_pass)), dp_pass_coordinates=dagostino_pass_share(X),
        ad_pass_projections=anderson_pass_share(projections),
        ad_pass_whitened=anderson_pass_share(Z),
        mahalanobis_ks=_ks_from_whitened(Z) if law else None,
        parametric_flag_rate=_parametric_flag_rate(Z) if law else None,
        effective_rank=effective_rank(X),
        qq_mahalanobis=_qq_from_whitened(Z) if law else None, arrays=arrays)
