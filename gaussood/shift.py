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
    Fisher's combination ``-2 sum log p_i`` (one-sided: many smallish p-values).
"hc"
    Higher criticism (Donoho & Jin 2004): ``max_{i <= n/2} sqrt(n) (i/n - p_(i)) /
    sqrt(p_(i) (1 - p_(i)))`` over the sorted p-values; made for a small share of
    strongly OOD rows.
"hotelling"
    Hotelling's two-sample T^2 of the batch mean against the fitted mean
    (``GaussianScorer`` only).

Null laws and what they guarantee (docs/shift.md states the maths)
-----------------------------------------------------------------
Every p-value below is valid *marginally*: under no shift, averaged over the draw of
the fit / calibration rows and of the batch, ``P(pvalue <= alpha) <= alpha`` (equal up
to Monte Carlo and discreteness). None is exact *conditionally* on one fitted scorer:
the rate that one deployment sees over many batches varies around alpha, with a
spread that shrinks as the fit / calibration set grows relative to the batch. No
distribution-free test can do better from the calibration scores alone: given them,
the law of a new row's p-value depends on the unknown score law at the calibration
points.

- Conformal p-values ``(1 + R_i) / (m + 1)`` (also "cv+"): the rows of one batch share
  the m calibration scores, so they are not independent. Under exchangeability of the
  calibration and batch rows, the batch's positions among the m + n pooled scores are
  a uniformly random subset: every statistic has a distribution-free null that
  depends on (m, n) only, simulated exactly (``_null_pvalues``). Exact for split
  conformal (``scorer.calibrate`` on held-out rows); approximate for cross-conformal.
- Parametric p-values of a one-component ``GaussianScorer(covariance="empirical")``
  ("f" or "chi2"): the rows share the fitted mean and covariance. For Gaussian rows
  the distances are affine invariant, so the joint law of the batch's p-values
  depends on (n_fit, d, n) only and is simulated exactly from the fit's sufficient
  statistics (mean ~ N(0, I / n_fit), scatter eigenvalues of a Wishart(n_fit - 1, I)
  drawn as a bidiagonal, Dumitriu & Edelman 2002). Other parametric scorers: the
  p-values are treated as independent U(0, 1), ignoring the fit's estimation error.
  Both assume Gaussian rows: ``test`` warns when the fit rows rejected the law
  (``GaussianScorer.law_misfit_``; real embeddings do: use conformal calibration).
- "hotelling": the exact F(d, n_fit + n - d - 1) law when fit and batch rows are
  Gaussian with one covariance; a central-limit approximation otherwise.
- "hotelling" with ``reference=R`` (held-out ID rows the scorer was not fitted on):
  a permutation test: T^2 over random n-subsets of the batch pooled with R, exact
  given the fit for any row law (``Reference``). It is the one for real embeddings,
  and it absorbs a difference between the fit rows and the monitored source. For the
  p-value tests, held-out rows go to ``scorer.calibrate(R)`` (conformal, exact).

Monte Carlo p-values ``(1 + #{T_b >= T}) / (B + 1)`` are valid at every B; the draws
are seeded (``random_state``) and cached, so a stream of windows pays for them once.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import linalg, sparse, special, stats

from . import _law_check

METHODS = ("ks", "fisher", "hc", "hotelling")
_CONFORMAL = ("conformal", "cv+")
_CHUNK = 2_000_000   # numbers per block of null draws (16 MB)
_UNIFORM = ("uniform",)


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


def _check_batch(X_batch, n_features: int, name: str = "X_batch") -> np.ndarray:
    X = np.asarray(X_batch)
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold numbers; got dtype {X.dtype}.")
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_rows, {n_features}); got shape "
                         f"{X.shape}.")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: a batch test needs at least one row.")
    if X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features but the scorer was fitted on "
                         f"{n_features}.")
    if not np.all(np.isfinite(X)):
        bad = np.flatnonzero(~np.all(np.isfinite(X), axis=1))
        raise ValueError(f"{name} has NaN or infinite values in {bad.size} row(s) (first: "
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


def _law_m(law) -> int | None:
    """m of a conformal law (the statistics' second argument), else None."""
    return law[1] if law[0] == "conformal" else None


def wishart_eigenvalues(rng, dof: int, d: int) -> np.ndarray:
    """Eigenvalues of one Wishart(dof, I_d) draw (dof >= d), ascending, in O(d^2).

    The scatter ``G^T G`` of a (dof, d) standard Gaussian G has the eigenvalues of
    ``L L^T``, L lower bidiagonal with diagonal chi_dof, chi_{dof-1}, ...,
    chi_{dof-d+1} and subdiagonal chi_{d-1}, ..., chi_1 (Dumitriu & Edelman 2002).
    """
    diag = np.sqrt(rng.chisquare(dof - np.arange(d)))
    off = np.sqrt(rng.chisquare(np.arange(d - 1, 0, -1))) if d > 1 else np.empty(0)
    main = diag ** 2 + np.concatenate([[0.0], off ** 2])
    return linalg.eigvalsh_tridiagonal(main, diag[:-1] * off)


def _gaussian_pvalues(rng, draws: int, n: int, law) -> np.ndarray:
    """p-values of ``draws`` batches of n Gaussian rows against a one-component
    empirical-covariance fit on n_fit Gaussian rows, drawn afresh per batch.

    By affine invariance take N(0, I): the fit's mean is N(0, I / n_fit) and its scatter
    Wishart(n_fit - 1, I), independent; rotating to the scatter's (Haar) eigenvectors,
    ``d2 = n_fit sum_j (z_j - a_j)^2 / lambda_j`` with z ~ N(0, I) per row, a ~ N(0, I /
    n_fit) and lambda the scatter's eigenvalues. d2 goes through the scorer's own law.
    """
    _, n_fit, d, kind, scale, dfd = law
    out = np.empty((draws, n))
    block = max(1, _CHUNK // (n * d))
    for start in range(0, draws, block):
        b = min(block, draws - start)
        weights = n_fit / np.stack([wishart_eigenvalues(rng, n_fit - 1, d) for _ in range(b)])
        z = rng.standard_normal((b, n, d), dtype=np.float32)   # float32: twice as fast
        z -= (rng.standard_normal((b, 1, d)) / math.sqrt(n_fit)).astype(np.float32)
        np.square(z, out=z)
        d2 = np.matmul(z, weights.astype(np.float32)[:, :, None])[:, :, 0].astype(np.float64)
        out[start:start + b] = (special.chdtrc(d, d2) if kind == "chi2"
                                else special.fdtrc(d, dfd, d2 / scale))
    return out


def _null_pvalues(rng, draws: int, n: int, law) -> np.ndarray:
    """``draws`` sorted batches of n null p-values, shape (draws, n), under ``law``:

    ("uniform",): i.i.d. U(0, 1). ("conformal", m): conformal p-values (1 + R) / (m + 1)
    of a batch exchangeable with m calibration scores: the batch as sorted uniforms, and
    the calibration scores in each of the n + 1 gaps a multinomial draw with the gaps'
    lengths as probabilities (exact for any continuous score law). ("gaussian", ...):
    ``_gaussian_pvalues``.
    """
    if law[0] == "gaussian":
        return np.sort(_gaussian_pvalues(rng, draws, n, law), axis=1)
    u = np.sort(rng.random((draws, n)), axis=1)
    if law[0] == "uniform":
        return u
    m = law[1]
    gaps = np.diff(u, axis=1, prepend=0.0, append=1.0)
    gaps /= gaps.sum(axis=1, keepdims=True)
    below = np.cumsum(rng.multinomial(m, gaps)[:, :n], axis=1)
    return (1.0 + below) / (m + 1.0)


@functools.lru_cache(maxsize=16)
def _null_statistics(n: int, law: tuple, draws: int, seed: int) -> dict:
    """{method: sorted null draws of its statistic} for batches of n (cached; the
    p-value methods share one set of simulated batches)."""
    rng = np.random.default_rng(seed)
    block = max(1, _CHUNK // (n * (law[2] if law[0] == "gaussian" else 1)))
    out = {method: [] for method in _STATISTICS}
    for start in range(0, draws, block):
        p = _null_pvalues(rng, min(block, draws - start), n, law)
        for method, statistic in _STATISTICS.items():
            out[method].append(statistic(p, _law_m(law)))
    for method in out:
        out[method] = np.sort(np.concatenate(out[method]))
        out[method].flags.writeable = False
    return out


def _monte_carlo_pvalue(statistic: float, null_draws: np.ndarray) -> float:
    """(1 + #{T_b >= T}) / (B + 1) against sorted draws; a rounding-level tie counts."""
    tie = statistic - 1e-12 * max(1.0, abs(statistic))
    exceed = null_draws.shape[0] - np.searchsorted(null_draws, tie, side="left")
    return float((1.0 + exceed) / (null_draws.shape[0] + 1.0))


def _check_pvalues(pvalues) -> np.ndarray:
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    if p.size == 0:
        raise ValueError("pvalues is empty: a batch test needs at least one row.")
    if not np.all((p >= 0.0) & (p <= 1.0)):
        raise ValueError("pvalues must lie in [0, 1] (NaN is refused).")
    return p


def _test_law(p, method, alpha, law, draws, seed, what="") -> ShiftResult:
    """The batch test of checked p-values ``p`` under a null ``law`` (see _null_pvalues)."""
    n, m = p.size, _law_m(law)
    statistic = float(_STATISTICS[method](np.sort(p)[None, :], m)[0])
    if law == _UNIFORM and method == "ks":
        pvalue, null = float(stats.kstest(p, "uniform").pvalue), "exact one-sample KS, U(0, 1)"
    elif law == _UNIFORM and method == "fisher":
        pvalue, null = float(stats.chi2.sf(statistic, 2 * n)), f"chi-square({2 * n})"
    else:
        pvalue = _monte_carlo_pvalue(statistic, _null_statistics(n, law, draws, seed)[method])
        null = f"Monte Carlo, {draws} draws, " + (
            "i.i.d. U(0, 1)" if law == _UNIFORM else
            f"exchangeable with m = {m} calibration scores" if m is not None else
            f"Gaussian rows and a fit on n_fit = {law[1]} of them (d = {law[2]})")
    return ShiftResult(statistic, pvalue, bool(pvalue <= alpha), method, n, alpha, null + what)


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
        None for p-values that are independent U(0, 1) under no shift. See the module
        notes (``test`` also models a Gaussian fit's estimation error).
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
    p = _check_pvalues(pvalues)
    law = _UNIFORM
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
        law = ("conformal", m)
    return _test_law(p, method, alpha, law, draws, int(random_state))


def pvalue_law(scorer) -> tuple:
    """The joint null law of a batch's p-values from ``scorer`` (see the module notes):
    ("conformal", m), ("gaussian", n_fit, d, "f" or "chi2", scale, dfd) for a
    one-component empirical-covariance ``GaussianScorer`` in the raw space, else
    ("uniform",)."""
    from .gaussian import GaussianScorer

    m = calibration_size(scorer)
    if m is not None:
        return ("conformal", m)
    if (isinstance(scorer, GaussianScorer) and scorer.calibration_ in ("f", "chi2")
            and scorer.covariance == "empirical" and scorer.means_.shape[0] == 1
            and not scorer.relative and scorer._normalize() is None
            and float(scorer.reg_covar) == 0.0):
        n_fit, d = int(scorer.n_samples_fit_), int(scorer.n_features_in_)
        if n_fit > d + 1:
            scale, dfd = scorer._f_law() if scorer.calibration_ == "f" else (1.0, 0)
            return ("gaussian", n_fit, d, scorer.calibration_, float(scale), int(dfd))
    return _UNIFORM


# ----------------------------------------------------------------- Hotelling
def reference_moments(scorer) -> tuple[int, np.ndarray, np.ndarray, int]:
    """(n_fit, mean (d,), scatter (d, d), components) of a ``GaussianScorer``'s fit rows,
    pooled over its components (class-conditional or cluster fits: the mixture's total
    mean and scatter, ``sum_k S_k + sum_k n_k (mu_k - mu)(mu_k - mu)^T``), in the
    scorer's feature space (``normalize``)."""
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


def _in_space(scorer, X) -> np.ndarray:
    """Rows of X in the space the scorer's moments live in (its ``normalize``)."""
    from . import _space

    return np.asarray(_space.to_space(X, scorer._normalize(),
                                      getattr(scorer, _space.CENTER, None), l2=True),
                      dtype=np.float64)


def _cholesky(matrix):
    try:
        return linalg.cho_factor(matrix, lower=True, check_finite=False)
    except linalg.LinAlgError:
        raise ValueError("The covariance behind Hotelling's test is singular (fewer "
                         "independent rows than features, or constant features); the "
                         "test cannot be computed.") from None


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
    t2 = n_ref * n / total * float(diff @ linalg.cho_solve(_cholesky(pooled), diff,
                                                           check_finite=False))
    f = t2 * dfd / (d * (total - 2))
    return t2, float(stats.f.sf(f, d, dfd)), dfd


# ------------------------------------------------------ reference-batch null
class Reference:
    """Held-out in-distribution rows as the null of Hotelling's test (``reference=``).

    A permutation test of the batch against these rows with Hotelling's statistic: the
    batch's n rows are pooled with the m reference rows, and the null law of T^2 is its
    law over random n-subsets of the pool, ``(1 + #{T_b >= T}) / (B + 1)``. Given the
    fit, the pooled rows are exchangeable under no shift (reference rows from the
    monitored source, not used in the fit), so the batch is a uniformly random
    n-subset of the pool and the p-value is exact, whatever the rows' law, m, n and B.
    The statistic is T^2 with the fit covariance (not pooled with the batch).

    Only for "hotelling": for the p-value tests, calibrate the scorer on the held-out
    rows instead (``scorer.calibrate(rows)``), which makes their null exact.

    Built once (after the scorer's last ``fit``), it keeps the whitened rows and B
    random n-subsets of them; a batch's pseudo-batches are drawn by swapping a
    hypergeometric number of those rows for random batch rows (same law as drawing
    from the pool, a tenth of the work at m = 8 n).

    Parameters
    ----------
    scorer : fitted GaussianScorer
    rows : array of shape (m, d)
        At least n rows for batches of n (the more, the more power: at m = n half of a
        pseudo-batch is made of batch rows).
    """

    def __init__(self, scorer, rows):
        _check_scorer(scorer)
        n_fit, mean, scatter, _ = reference_moments(scorer)
        self.scorer, self.n_fit = scorer, n_fit
        factor = _cholesky(scatter / max(n_fit - 1, 1))[0]
        self._whiten = lambda Y: linalg.solve_triangular(
            factor, (_in_space(scorer, Y) - mean).T, lower=True, check_finite=False).T
        self.rows = self._whiten(_check_batch(rows, int(scorer.n_features_in_), "reference"))
        self._subsets = {}

    def _statistic(self, sums, n):
        """T^2 with the fit covariance from the sums of n whitened rows, shape (b, d)."""
        return self.n_fit / (n * (self.n_fit + n)) * np.einsum("bd,bd->b", sums, sums)

    def _test(self, X, alpha, n_null=4999, random_state=0):
        """``test(self.scorer, X, "hotelling", alpha, reference=self)`` on a checked batch."""
        n, m = X.shape[0], self.rows.shape[0]
        if m < n:
            raise ValueError(f"reference has {m} rows; batches of {n} rows need at least "
                             f"{n} (5 n or more advised).")
        W = self._whiten(X)
        observed = float(self._statistic(W.sum(axis=0)[None], n)[0])
        key = (n, n_null, random_state)
        if key not in self._subsets:   # B random n-subsets of the rows, in random order
            rng = np.random.default_rng(random_state)
            idx = np.concatenate([np.argsort(rng.random((min(64, n_null - i), m)), axis=1)
                                  [:, :n].astype(np.int32) for i in range(0, n_null, 64)])
            sums = np.concatenate([self.rows[idx[i:i + 64]].sum(axis=1)
                                   for i in range(0, n_null, 64)])
            self._subsets[key] = (idx, sums)
        idx, sums = self._subsets[key]
        rng = np.random.default_rng([random_state, 1])
        k = rng.hypergeometric(n, m, n, size=n_null)     # batch rows in each pseudo-batch
        null = np.empty(n_null)
        for lo in range(0, n_null, 64):   # 64 draws at a time: small gathers
            kc = k[lo:lo + 64]
            take = np.arange(n)[None, :] < kc[:, None]   # the first k of each subset go
            segments = sparse.csr_matrix(   # row j sums the j-th draw's k rows
                (np.ones(kc.sum()), np.arange(kc.sum()), np.concatenate([[0], np.cumsum(kc)])),
                shape=(kc.size, kc.sum()))
            swapped = np.argsort(rng.random((kc.size, n)), axis=1)[take]  # random batch rows
            null[lo:lo + 64] = self._statistic(sums[lo:lo + 64] + segments @ (
                W[swapped] - self.rows[idx[lo:lo + 64][take]]), n)
        pvalue = _monte_carlo_pvalue(observed, np.sort(null))
        return ShiftResult(observed, pvalue, bool(pvalue <= alpha), "hotelling", n, alpha,
                           f"permutation, T^2 with the fit covariance; the batch pooled with "
                           f"{m} reference rows, {n_null} draws")


# ---------------------------------------------------------------- entry point
def test(scorer, X_batch, method: str = "ks", alpha: float = 0.05, *, pvalues=None,
         reference=None, n_null: int = 4999, random_state: int = 0) -> ShiftResult:
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
        alpha, marginally over the fit / calibration rows and the batch (module notes).
    pvalues : array of shape (n,), optional
        ``scorer.pvalue(X_batch)`` when already computed (``OODFilter.stream`` passes
        its own); not used by "hotelling".
    reference : array of shape (n_ref, d) or Reference, optional
        "hotelling" only: held-out in-distribution rows from the monitored source that
        the scorer was not fitted on, n_ref >= 2 n (5 n or more advised); a
        ``Reference`` of them keeps its work between calls. The null law is then that
        of the statistic over random batches of n of these rows instead of the F law:
        use it on real (non-Gaussian) embeddings.
    n_null, random_state
        Monte Carlo null draws and their seed.

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
    draws = _check_draws(n_null)
    d = int(scorer.n_features_in_)
    X = _check_batch(X_batch, d)
    if pvalues is not None and np.shape(pvalues) != (X.shape[0],):
        raise ValueError(f"pvalues must have shape ({X.shape[0]},), one per row of X_batch; "
                         f"got {np.shape(pvalues)}.")
    if reference is not None:
        if method != "hotelling":
            raise ValueError(f"reference is for method 'hotelling'; for {method!r}, calibrate "
                             "the scorer on the held-out rows (scorer.calibrate(rows)): the "
                             "conformal null is then exact.")
        if not isinstance(reference, Reference):
            reference = Reference(scorer, reference)
        elif reference.scorer is not scorer:
            raise ValueError("reference was built for another scorer: build "
                             "shift.Reference(scorer, rows) for this one.")
        return reference._test(X, alpha, draws, int(random_state))
    if method == "hotelling":
        n_ref, mean, scatter, k = reference_moments(scorer)
        t2, pvalue, dfd = hotelling_two_sample(n_ref, mean, scatter, _in_space(scorer, X))
        null = f"F({d}, {dfd})" + ("" if k == 1 else f", approximate: {k} components pooled")
        return ShiftResult(t2, pvalue, bool(pvalue <= alpha), method, X.shape[0], alpha, null)
    if pvalues is None:
        pvalues = scorer.score_pvalue_decision(X).pvalue
    law = pvalue_law(scorer)
    if law[0] != "conformal":
        _law_check.warn_batch_test(scorer)
    what = "" if law != _UNIFORM or calibration_size(scorer) is not None else \
        " (the fit's estimation error is not modelled)"
    if law[0] == "conformal":
        return test_pvalues(pvalues, method, alpha, calibration_size=law[1], n_null=draws,
                            random_state=random_state)
    return _test_law(_check_pvalues(pvalues), method, alpha, law, draws, int(random_state),
                     what)


test.__test__ = False   # not a pytest test when imported into a test module
test_pvalues.__test__ = False
