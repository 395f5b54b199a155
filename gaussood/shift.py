"""Batch shift detection: is a batch of embeddings, as a whole, still in-distribution?

Per-row p-values (``scorer.pvalue``) answer "is this row OOD?". A batch answers a
different question: has the input distribution moved? A 2% share of OOD rows, or a
mild covariate shift (blur, compression, lighting) that leaves every row under the
per-row threshold, moves the *distribution* of the batch's p-values away from uniform,
or the batch mean away from the fitted mean. ``test(scorer, X_batch, method, alpha)``
returns one ``ShiftResult`` (statistic, p-value, decision at ``alpha``).

Methods
-------
"ks"
    Kolmogorov-Smirnov distance between the batch's p-values and the uniform law
    (two-sided: too many small *or* too few small p-values).
"fisher"
    Fisher's combination ``-2 sum log p_i`` (one-sided: many smallish p-values;
    the most powerful against a shift that moves every row a little).
"hc"
    Higher criticism (Donoho & Jin 2004): ``max_{i <= n/2} sqrt(n) (i/n - p_(i)) /
    sqrt(p_(i) (1 - p_(i)))`` over the sorted p-values; tail-sensitive, made for a
    small share of strongly OOD rows.
"hotelling"
    Hotelling's two-sample T^2 of the batch mean against the fitted mean, with the
    pooled (empirical, unshrunk) covariance of the fit rows and the batch; exact
    F(d, n_fit + n - d - 1) law for Gaussian rows (``GaussianScorer`` only).

The null law, and why conformal p-values need care
--------------------------------------------------
Parametric p-values (``calibration_`` "f", "chi2", "shell") of independent ID rows
are independent U(0, 1) draws (as far as the law holds): "ks" uses scipy's exact
one-sample ``kstest``, "fisher" its chi-square(2n) law, "hc" a Monte Carlo null of
uniform draws.

Conformal p-values ``(1 + R_i) / (m + 1)`` (``R_i``: calibration scores at or below the
row's score; also "cv+") of one batch share the m calibration scores: given them, the
rows' p-values are i.i.d., but not uniform (the calibration set's own sampling error
is common to all rows), so treating them as independent uniforms inflates the false-
alarm rate: the KS statistic grows by about ``sqrt(1 + n / m)`` (measured at a nominal
5%, n = 1,000: 7.0% at m = 8,000, 33% at m = 1,000; ``benchmarks/results/shift.md``). What *is* known exactly is the joint law of the ranks:
under exchangeability of the calibration and batch rows (the conformal assumption),
the batch's positions among the m + n pooled scores are a uniformly random subset,
whatever the score law. Every statistic of the batch's p-values then has a
distribution-free null that depends only on (m, n), and it is simulated exactly:
sorted uniforms for the batch and, given them, a multinomial count of calibration
scores in each gap (``_null_pvalues``). KS becomes the two-sample KS test of the
batch scores against the calibration scores. The Monte Carlo p-value ``(1 + #{T_b
>= T}) / (B + 1)`` is valid at every B; the draws are seeded (``random_state``) and
cached by (method, m, n), so a stream of windows pays for them once.

This is a *marginal* guarantee, like that of conformal p-values per row: averaged
over calibration sets, batches of ID rows raise an alarm with probability ``alpha``.
With one fixed calibration set, the long-run rate of that set varies around alpha;
the spread grows with n / m and is widest for the tail tests (n = 1,000, m = 40,000:
KS 3.7-7.0%, HC 1.0-15.7% over 10 sets; ``docs/shift.md``). Split conformal
(``scorer.calibrate(X_cal)`` on held-out rows of the batches' distribution) is exact;
cross-conformal calibration from ``fit`` is approximate, as it is per row.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import linalg, stats

METHODS = ("ks", "fisher", "hc", "hotelling")
_CONFORMAL = ("conformal", "cv+")
_CHUNK = 2_000_000   # p-values per block of null draws (16 MB)


@dataclass(frozen=True)
class ShiftResult:
    """Outcome of one batch test.

    ``statistic`` (larger = further from the null), ``pvalue``, ``shift`` (``pvalue <=
    alpha``), ``method``, ``n`` (rows in the batch), ``alpha`` and ``null`` (the law
    the p-value comes from, in words).
    """

    statistic: float
    pvalue: float
    shift: bool
    method: str
    n: int
    alpha: float
    null: str

    def __str__(self) -> str:
        verdict = "SHIFT" if self.shift else "no shift"
        return (f"{verdict}: {self.method} statistic {self.statistic:.6g}, p-value "
                f"{self.pvalue:.4g} (alpha {self.alpha:g}, n {self.n}; null: {self.null})")


# ------------------------------------------------------------------ checks
def _check_method(method) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
    return method


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) \
            or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be a number in (0, 1); got {alpha!r}.")
    return float(alpha)


def _check_draws(n_null) -> int:
    if isinstance(n_null, bool) or not isinstance(n_null, (int, np.integer)) or n_null < 99:
        raise ValueError(f"n_null must be an integer >= 99; got {n_null!r}.")
    return int(n_null)


def _check_scorer(scorer):
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    from ._base import BaseScorer

    if not isinstance(scorer, BaseScorer):
        raise TypeError("scorer must be a fitted gaussood scorer (GaussianScorer, "
                        f"NormShellScorer, KNNScorer, ...); got {type(scorer).__name__}.")
    try:
        check_is_fitted(scorer)
    except NotFittedError:
        raise ValueError(f"scorer ({type(scorer).__name__}) is not fitted: call "
                         "scorer.fit(X_id) first.") from None


def _check_batch(X_batch, n_features: int) -> np.ndarray:
    X = np.asarray(X_batch)
    if X.dtype.kind not in "biuf":
        raise ValueError(f"X_batch must hold numbers; got dtype {X.dtype}.")
    if X.ndim != 2:
        raise ValueError(f"X_batch must be a 2-D array (n_rows, {n_features}); got shape "
                         f"{X.shape}.")
    if X.shape[0] == 0:
        raise ValueError("X_batch is empty: a batch test needs at least one row.")
    if X.shape[1] != n_features:
        raise ValueError(f"X_batch has {X.shape[1]} features but the scorer was fitted on "
                         f"{n_features}.")
    if not np.all(np.isfinite(X)):
        bad = np.flatnonzero(~np.all(np.isfinite(X), axis=1))
        raise ValueError(f"X_batch has NaN or infinite values in {bad.size} row(s) (first: "
                         f"row {bad[0]}); drop or impute them before testing.")
    return X


def calibration_size(scorer) -> int | None:
    """m, the number of calibration scores behind the scorer's conformal p-values, or
    None when its p-values come from a continuous null law (parametric calibration)."""
    if getattr(scorer, "calibration_", None) in _CONFORMAL:
        return int(np.asarray(scorer.calibration_scores_).shape[0])
    return None


# -------------------------------------------------------------- statistics
def _ks(p, m):
    """KS distance of sorted p-values (rows) to the uniform law; against the calibration
    set's empirical law (two-sample) when ``m`` is given."""
    n = p.shape[1]
    i = np.arange(1, n + 1)
    if m is None:
        return np.maximum((i / n - p).max(axis=1), (p - (i - 1) / n).max(axis=1))
    cal = (np.rint(p * (m + 1)) - 1.0) / m    # R_i / m: calibration share below row i
    return np.maximum((i / n - cal).max(axis=1), (cal - (i - 1) / n).max(axis=1))


def _fisher(p, m):
    return -2.0 * np.log(np.maximum(p, 1e-300)).sum(axis=1)


def _hc(p, m):
    n = p.shape[1]
    k = max(1, n // 2)
    q = np.clip(p[:, :k], 1e-300, 1.0 - 1e-12)
    i = np.arange(1, k + 1)
    return (math.sqrt(n) * (i / n - q) / np.sqrt(q * (1.0 - q))).max(axis=1)


_STATISTICS = {"ks": _ks, "fisher": _fisher, "hc": _hc}


def _null_pvalues(rng, draws: int, n: int, m: int | None) -> np.ndarray:
    """``draws`` sorted batches of n null p-values, shape (draws, n).

    ``m`` None: i.i.d. U(0, 1). Else conformal p-values (1 + R) / (m + 1) of a batch
    exchangeable with m calibration scores: the batch as sorted uniforms, and the
    calibration scores in each of the n + 1 gaps a multinomial draw with the gaps'
    lengths as probabilities (exact for any continuous score law).
    """
    u = np.sort(rng.random((draws, n)), axis=1)
    if m is None:
        return u
    gaps = np.diff(u, axis=1, prepend=0.0, append=1.0)
    gaps /= gaps.sum(axis=1, keepdims=True)
    below = np.cumsum(rng.multinomial(m, gaps)[:, :n], axis=1)
    return (1.0 + below) / (m + 1.0)


@functools.lru_cache(maxsize=32)
def _null_statistics(method: str, n: int, m: int | None, draws: int, seed: int) -> np.ndarray:
    """Sorted null draws of ``method``'s statistic for batches of n (cached)."""
    rng = np.random.default_rng(seed)
    block = max(1, _CHUNK // n)
    out = [_STATISTICS[method](_null_pvalues(rng, min(block, draws - start), n, m), m)
           for start in range(0, draws, block)]
    out = np.sort(np.concatenate(out))
    out.flags.writeable = False
    return out


def test_pvalues(pvalues, method: str = "ks", alpha: float = 0.05, *,
                 calibration_size: int | None = None, n_null: int = 4999,
                 random_state: int = 0) -> ShiftResult:
    """Test whether a batch's per-row p-values look like in-distribution ones.

    Parameters
    ----------
    pvalues : array of shape (n,)
        The batch's p-values (``scorer.pvalue(X_batch)``).
    method : {"ks", "fisher", "hc"}
    alpha : float in (0, 1)
        False-alarm rate of the batch test.
    calibration_size : int or None
        m for conformal p-values ``(1 + R) / (m + 1)`` (``calibration_size(scorer)``);
        None for p-values from a continuous null law. See the module notes.
    n_null : int, default 4999
        Monte Carlo draws of the null statistic, where one is simulated.
    random_state : int, default 0
        Seed of those draws (results are reproducible; draws are cached).
    """
    method = _check_method(method)
    if method == "hotelling":
        raise ValueError("method 'hotelling' tests the embeddings, not p-values: call "
                         "test(scorer, X_batch, method='hotelling').")
    alpha = _check_alpha(alpha)
    draws = _check_draws(n_null)
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    if p.size == 0:
        raise ValueError("pvalues is empty: a batch test needs at least one row.")
    if not np.all((p >= 0.0) & (p <= 1.0)):
        raise ValueError("pvalues must lie in [0, 1] (NaN is refused).")
    m = None
    if calibration_size is not None:
        if isinstance(calibration_size, bool) or not isinstance(
                calibration_size, (int, np.integer)) or calibration_size < 1:
            raise ValueError(f"calibration_size must be a positive integer or None; got "
                             f"{calibration_size!r}.")
        m = int(calibration_size)
        ranks = p * (m + 1.0) - 1.0
        if np.any(np.abs(ranks - np.rint(ranks)) > 1e-6 * (m + 1)) or ranks.min() < -1e-6:
            raise ValueError(f"pvalues are not conformal p-values (1 + R) / (m + 1) with "
                             f"m = calibration_size = {m}.")
    n = p.size
    ps = np.sort(p)[None, :]
    statistic = float(_STATISTICS[method](ps, m)[0])
    if m is None and method == "ks":
        pvalue, null = float(stats.kstest(p, "uniform").pvalue), "exact one-sample KS, U(0, 1)"
    elif m is None and method == "fisher":
        pvalue, null = float(stats.chi2.sf(statistic, 2 * n)), f"chi-square({2 * n})"
    else:
        null_draws = _null_statistics(method, n, m, draws, int(random_state))
        tie = statistic - 1e-12 * max(1.0, abs(statistic))   # rounding: a tie counts
        exceed = null_draws.shape[0] - np.searchsorted(null_draws, tie, side="left")
        pvalue = (1.0 + exceed) / (draws + 1.0)
        null = (f"Monte Carlo, {draws} draws, " + ("i.i.d. U(0, 1)" if m is None else
                f"exchangeable with m = {m} calibration scores"))
    return ShiftResult(statistic, float(pvalue), bool(pvalue <= alpha), method, n, alpha, null)


# ----------------------------------------------------------------- Hotelling
def reference_moments(scorer) -> tuple[int, np.ndarray, np.ndarray, int]:
    """(n_fit, mean (d,), scatter (d, d), components) of a ``GaussianScorer``'s fit rows,
    pooled over its components (class-conditional or cluster fits: the mixture's total
    mean and scatter, ``sum_k S_k + sum_k n_k (mu_k - mu)(mu_k - mu)^T``)."""
    from .gaussian import GaussianScorer

    if not isinstance(scorer, GaussianScorer) or not hasattr(scorer, "moment_scatter_"):
        raise ValueError("method 'hotelling' needs a GaussianScorer (its fitted mean and "
                         f"scatter); got {type(scorer).__name__}. Use 'ks', 'fisher' or "
                         "'hc', which work on any scorer's p-values.")
    counts = np.asarray(scorer.moment_count_, dtype=np.float64)
    means = np.asarray(scorer.moment_mean_, dtype=np.float64)
    n = counts.sum()
    mean = counts @ means / n
    centred = means - mean
    scatter = np.asarray(scorer.moment_scatter_, dtype=np.float64).sum(axis=0) \
        + (centred * counts[:, None]).T @ centred
    return int(round(n)), mean, scatter, counts.shape[0]


def hotelling_two_sample(n_ref: int, mean_ref, scatter_ref, X) -> tuple[float, float, int]:
    """Hotelling's two-sample T^2 of the rows of X against reference moments.

    ``T^2 = n_ref n / (n_ref + n) (xbar - mu)^T S^-1 (xbar - mu)``, S the pooled
    covariance ``(scatter_ref + scatter_X) / (n_ref + n - 2)``. For Gaussian rows with
    one covariance, ``T^2 (N - d - 1) / (d (N - 2))`` with N = n_ref + n follows
    F(d, N - d - 1) exactly. Returns (T^2, F p-value, denominator degrees of freedom).
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    total = n_ref + n
    dfd = total - d - 1
    if dfd < 1:
        raise ValueError(f"Hotelling's test needs n_fit + n_batch > d + 1 (got {n_ref} + "
                         f"{n} rows, d = {d}).")
    xbar = X.mean(axis=0)
    centred = X - xbar
    pooled = (np.asarray(scatter_ref, dtype=np.float64) + centred.T @ centred) / (total - 2)
    diff = xbar - np.asarray(mean_ref, dtype=np.float64)
    try:
        factor = linalg.cho_factor(pooled, lower=True, check_finite=False)
    except linalg.LinAlgError:
        raise ValueError("The pooled covariance of the fit rows and the batch is singular "
                         "(fewer independent rows than features, or constant features); "
                         "Hotelling's test cannot be computed.") from None
    t2 = n_ref * n / total * float(diff @ linalg.cho_solve(factor, diff, check_finite=False))
    f = t2 * dfd / (d * (total - 2))
    return t2, float(stats.f.sf(f, d, dfd)), dfd


# ---------------------------------------------------------------- entry point
def test(scorer, X_batch, method: str = "ks", alpha: float = 0.05, *, pvalues=None,
         n_null: int = 4999, random_state: int = 0) -> ShiftResult:
    """Test a batch of embeddings against a fitted scorer for a distribution shift.

    Parameters
    ----------
    scorer : fitted gaussood scorer
        Any scorer for "ks", "fisher" and "hc" (its p-values); a ``GaussianScorer``
        for "hotelling" (its fit moments).
    X_batch : array of shape (n, d)
        The batch's embeddings, d = ``scorer.n_features_in_``.
    method : {"ks", "fisher", "hc", "hotelling"}, default "ks"
        See the module docstring.
    alpha : float in (0, 1), default 0.05
        False-alarm rate: under no shift, ``result.shift`` is True with probability
        alpha (marginally over calibration sets, for conformal p-values).
    pvalues : array of shape (n,), optional
        ``scorer.pvalue(X_batch)`` when already computed (``OODFilter.stream`` passes
        its own); not used by "hotelling".
    n_null, random_state
        Monte Carlo null draws and their seed (``test_pvalues``).

    Returns
    -------
    ShiftResult

    Examples
    --------
    >>> import numpy as np
    >>> from gaussood import GaussianScorer, shift
    >>> rng = np.random.default_rng(0)
    >>> scorer = GaussianScorer().fit(rng.normal(size=(8000, 16)))
    >>> shift.test(scorer, rng.normal(size=(500, 16)), "fisher").shift
    False
    >>> shift.test(scorer, rng.normal(size=(500, 16)) + 0.2, "hotelling").shift
    True
    """
    method = _check_method(method)
    alpha = _check_alpha(alpha)
    _check_scorer(scorer)
    X = _check_batch(X_batch, int(scorer.n_features_in_))
    if method == "hotelling":
        n_ref, mean, scatter, k = reference_moments(scorer)
        t2, pvalue, dfd = hotelling_two_sample(n_ref, mean, scatter, X)
        null = f"F({X.shape[1]}, {dfd})" + ("" if k == 1 else
                                           f", approximate: {k} components pooled")
        return ShiftResult(t2, pvalue, bool(pvalue <= alpha), method, X.shape[0], alpha, null)
    if pvalues is None:
        pvalues = scorer.score_pvalue_decision(X).pvalue
    elif np.shape(pvalues) != (X.shape[0],):
        raise ValueError(f"pvalues must have shape ({X.shape[0]},), one per row of X_batch; "
                         f"got {np.shape(pvalues)}.")
    return test_pvalues(pvalues, method, alpha, calibration_size=calibration_size(scorer),
                        n_null=n_null, random_state=random_state)


test.__test__ = False   # not a pytest test when imported into a test module
test_pvalues.__test__ = False
