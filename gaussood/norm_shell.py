"""Typicality of the embedding norm: distance from the thin spherical shell."""

from __future__ import annotations

import warnings
from numbers import Real

import numpy as np
from scipy import stats
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ._base import BaseScorer
from ._moments import compute_moments, fold_moments, merge_component
from ._quadform import deviate_table, normal_deviate
from ._threads import dense_decomposition_threads
from ._validation import check_features, check_moments_finite
from .covariance import COVARIANCE_METHODS, check_covariance_param, pooled_covariance
from .gaussian import GaussianScorer

_MOMENT_KEYS = ("count", "mean", "scatter", "third", "fourth")
# whiten=True with the "shell" law: rows per feature below which fit warns (the law held
# within 4.9-5.5% at alpha 5% from n = 50 d; see the class Notes)
SHELL_WHITEN_MIN_RATIO = 50


class NormShellScorer(BaseScorer, name="shell"):
    """Out-of-distribution score from the distance to the norm shell.

    InfoNCE embeddings concentrate on a thin shell: ||x - mu|| stays close to a
    radius r0 with a small coefficient of variation (Betser et al., ICLR 2026).
    If x ~ N(mu, Sigma), Q = ||x - mu||^2 = sum_i lambda_i chi2_1 with lambda
    the eigenvalues of Sigma. Its saddlepoint approximation (``_quadform``)
    gives a standard normal deviate z(Q), and

        score_samples(x) = -|z(||x - mu||^2)|,

    minus the standardised deviation from the shell (inside or outside it).
    With ``whiten=True`` the norm is taken after whitening, so Q is the
    squared Mahalanobis distance (about chi-square with d degrees of freedom).

    Parameters
    ----------
    whiten : bool, default=False
        Use the whitened norm (needs a covariance; no ``partial_fit``).
    covariance : str or float, default="ledoit_wolf"
        Covariance estimator (see ``GaussianScorer``): its eigenvalues define
        the null law of Q, and with ``whiten=True`` it whitens.
    alpha, contamination, calibration_folds, random_state, chunk_size
        As in ``GaussianScorer``.
    calibration : {"auto", "shell", "conformal", "cv+"}, default="auto"
        "shell": two-sided p-value 2 * Phi(-|z|) under the Gaussian law of Q;
        "conformal": cross-conformal from out-of-fold scores; "cv+": CV+, new
        samples scored by every fold model too (see ``GaussianScorer``). "auto"
        means "conformal" in ``fit`` (the shell law fails on class mixtures, see
        Notes; the norm's fold models are as good as the full one, so CV+ gains
        nothing: at n = 1,500, d = 512 cross-conformal flags 4.5-6.3% and CV+
        4.6-6.5% at alpha = 5%, ``benchmarks/results/calibration_grid.md``) and
        "shell" in ``partial_fit``.

    Attributes
    ----------
    location_ : ndarray (d,)   centre of the shell (training mean).
    radius_ : float            sqrt(mean ||x - mu||^2) on the training data, r0.
    spread_ : float            standard deviation of the norm (delta method).
    norm_cv_ : float           spread_ / radius_, the shell's thinness.
    law_eigenvalues_ : ndarray (d,)   lambda of the null law of Q.
    law_log_grid_, law_z_grid_ : ndarray   the tabulated deviate z(Q).
    whitener_ : ndarray (d, d) or None

    Notes
    -----
    The "shell" p-value is exact up to the saddlepoint error (far below
    sampling noise at alpha >= 0.001) when the embeddings are one Gaussian.
    Embeddings made of class clusters are a mixture, whose pooled norm does
    not follow that law: on a 10-class synthetic mixture the shell threshold
    flagged far fewer than alpha. The whitened variant matches only the mean
    of the Hotelling law, and Ledoit-Wolf shrinkage bends the whitened norm of
    a decaying spectrum, so with "shell" it over-flags unless n >> d: at alpha =
    5% and n = 10 d, 5.3% (d = 16) and 8.0% (d = 64) on an isotropic Gaussian,
    7.8% and 16.9% with standard deviations 1/i (4 seeds, 20,000 fresh rows);
    within 4.9-5.5% at n = 50 d. ``fit`` warns below n = 50 d. Conformal
    calibration (the default) avoids both. The spread of
    the sample eigenvalues inflates the law when n is not much larger than d;
    Ledoit-Wolf shrinkage (the default) corrects most of it. L2-normalised
    inputs sit on the unit sphere by construction; their norm says nothing,
    and ``fit`` warns. All fitted quantities come from moments that merge
    exactly, so ``partial_fit`` equals a batch fit.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussood import NormShellScorer
    >>> rng = np.random.default_rng(0)
    >>> shell = NormShellScorer().fit(rng.normal(size=(5000, 128)))
    >>> round(shell.radius_, 1), round(shell.norm_cv_, 2)  # sqrt(d), about 1/sqrt(2d)
    (11.3, 0.06)
    >>> shell.predict(np.zeros((1, 128)))  # the centre is far from the shell
    array([-1])
    """

    _calibrations = ("shell", "conformal", "cv+")
    _parameter_constraints = {
        **BaseScorer._parameter_constraints,
        "whiten": ["boolean"],
        "covariance": [StrOptions(set(COVARIANCE_METHODS)), Interval(Real, 0, 1, closed="both")],
    }

    def __init__(self, whiten=False, *, covariance="ledoit_wolf", normalize=None, alpha=None,
                 contamination=None, calibration="auto", calibration_folds=5,
                 random_state=None, chunk_size=4096):
        self.whiten = whiten
        self.normalize = normalize
        self.covariance = covariance
        self.alpha = alpha
        self.contamination = contamination
        self.calibration = calibration
        self.calibration_folds = calibration_folds
        self.random_state = random_state
        self.chunk_size = chunk_size

    @staticmethod
    def _warn_if_normalised(X):
        norms = np.linalg.norm(X, axis=1)
        mean = float(norms.mean())
        if X.shape[0] > 2 and X.shape[1] > 1 and mean > 0 and float(norms.std()) < 1e-5 * mean:
            warnings.warn(
                "All inputs have the same norm (L2-normalised features?). The "
                "norm-shell score is meaningless on a sphere: pass unnormalised "
                "embeddings, or use GaussianScorer / KNNScorer.", UserWarning, stacklevel=4)

    def _state(self, location, r2_mean, r2_var, law_eigenvalues, whitener, moments=None):
        if not (r2_mean > 0 and r2_var > 1e-12 * r2_mean**2):
            raise ValueError(
                "All centred training norms are equal (or zero): a shell with "
                "no spread cannot be fitted. Give more, or more varied, samples.")
        log_grid, z_grid, lam_max = deviate_table(law_eigenvalues)
        radius = float(np.sqrt(r2_mean))
        spread = float(np.sqrt(r2_var) / (2.0 * radius))
        state = {"location_": location, "whitener_": whitener, "radius_": radius,
                 "spread_": spread, "norm_cv_": spread / radius,
                 "law_eigenvalues_": np.asarray(law_eigenvalues, dtype=np.float64),
                 "law_log_grid_": log_grid, "law_z_grid_": z_grid}
        if moments is not None:
            state.update({f"moment_{k}_": np.asarray(v, dtype=np.float64)
                          for k, v in zip(_MOMENT_KEYS, moments)})
        return state

    def _state_from_moments(self, moments):
        n, mean, m2, _, q4 = moments
        check_moments_finite({"mean": mean, "scatter": m2, "fourth": q4})
        r2_mean = float(np.trace(m2)) / n
        with dense_decomposition_threads(mean.shape[0]):  # eigvalsh: 1 thread
            cov, _ = pooled_covariance({k: np.asarray(v)[None]
                                        for k, v in zip(_MOMENT_KEYS, moments)}, self.covariance)
            # a fresh x has x - mean ~ N(0, (1 + 1/n) Sigma)
            law = np.clip(np.linalg.eigvalsh(cov), 0.0, None) * (1.0 + 1.0 / n)
        return self._state(mean, r2_mean, q4 / n - r2_mean**2, law, None, moments)

    def _whitened_state(self, location, whitener, n, r2_mean, r2_var):
        """Fitted state of the whitened shell, from the mean and (population)
        variance of the n training rows' squared whitened norms."""
        d = whitener.shape[0]
        # Hotelling: a fresh D^2 has mean d (n + 1) / (n - d - 2)
        inflation = (n + 1.0) / (n - d - 2.0) if n > d + 2 else 1.0 + 1.0 / n
        return self._state(location, r2_mean, r2_var, np.full(d, inflation), whitener)

    def _check_space(self):
        if self.normalize is not None:
            raise ValueError(
                f"NormShellScorer(normalize={self.normalize!r}) would score the norm of "
                "L2-normalised features, which is 1 for every row: nothing is left to "
                "score. Use normalize=None (the shell is about the raw norm), or "
                "GaussianScorer / KNNScorer with normalize.")

    def _fit_state(self, X, y=None):
        if not isinstance(self.whiten, (bool, np.bool_)):
            raise TypeError(f"whiten must be True or False; got {self.whiten!r}.")
        check_covariance_param(self.covariance)
        self._warn_if_normalised(X)
        if self.whiten:
            if self.calibration == "shell" and X.shape[0] < SHELL_WHITEN_MIN_RATIO * X.shape[1]:
                warnings.warn(
                    f"NormShellScorer(whiten=True, calibration='shell') on {X.shape[0]} rows "
                    f"of {X.shape[1]} features (fewer than {SHELL_WHITEN_MIN_RATIO} x d): the "
                    "shell law of the whitened norm over-flags here (measured at n = 10 d, "
                    "alpha 5%: 8.0% isotropic, 16.9% with a decaying spectrum, d = 64). Use "
                    "calibration='conformal' (the default).", UserWarning, stacklevel=5)
            gauss = GaussianScorer(self.covariance, calibration="chi2").fit(X)
            Z = (X - gauss.location_) @ gauss.whitener_
            r2 = np.einsum("ij,ij->i", Z, Z)
            return self._whitened_state(gauss.location_, gauss.whitener_, X.shape[0],
                                        float(r2.mean()), float(r2.var()))
        m = compute_moments(X, None, 1)
        return self._state_from_moments(tuple(m[k][0] for k in _MOMENT_KEYS))

    def _auto_calibration(self, n_samples, n_features, y=None):
        return "conformal"

    def _fit_with_calibration(self, X, y, *, moments_cache=None):
        """Raw norm: per-fold moments, merged for the folds and the whole (one pass)."""
        if self.whiten:
            return super()._fit_with_calibration(X, y, moments_cache=moments_cache)
        check_covariance_param(self.covariance)
        self._warn_if_normalised(X)
        folds = self._folds(X)
        parts = []
        for _, test in folds:
            m = fold_moments(X, test, cache=moments_cache)
            parts.append(tuple(m[k][0] for k in _MOMENT_KEYS))

        def merged(chunks):
            total = chunks[0]
            for chunk in chunks[1:]:
                total = merge_component(total, chunk)
            return total

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fold_states = [self._state_from_moments(merged(parts[:i] + parts[i + 1:]))
                           for i in range(len(parts))]
        return (self._state_from_moments(merged(parts)),
                *self._score_folds(X, folds, fold_states))

    def _streamable(self):
        return (not self.whiten and self.contamination is None
                and self.calibration not in ("conformal", "cv+"))

    @available_if(_streamable)
    def partial_fit(self, X, y=None):
        """Update with a batch; equals ``fit`` on all batches.

        Not available with ``whiten=True``, ``contamination`` or conformal
        calibration.
        """
        fitted = hasattr(self, "moment_count_")
        with self._fit_scope() as (rule, alpha):
            self._check_space()
            X = check_features(self, X, reset=not fitted, ensure_min_samples=1)
            self._warn_if_normalised(X)
            m = compute_moments(X, None, 1)
            moments = tuple(m[k][0] for k in _MOMENT_KEYS)
            if fitted:
                old = tuple(getattr(self, f"moment_{k}_") for k in _MOMENT_KEYS)
                old = (float(old[0]), old[1], old[2], old[3], float(old[4]))
                moments = merge_component(old, moments)
            if moments[0] < 2:
                raise ValueError("NormShellScorer needs at least 2 samples.")
            self.__dict__.update(self._state_from_moments(moments))
            self.alpha_, self.threshold_rule_ = alpha, rule
            self.calibration_, self.calibration_scores_ = "shell", None
            self._drop_folds()
            self.offset_ = self._alpha_offset(alpha)
        return self

    def _check_fitted_state(self, state):
        super()._check_fitted_state(state)
        state.array("location_", ("d",))
        whitener = state.array("whitener_", ("d", "d"), none_ok=True)
        if (whitener is None) == bool(self.whiten):
            state.fail(f"whitener_ is {'missing' if whitener is None else 'present'} but "
                       f"whiten={self.whiten!r}")
        radius = state.number("radius_", low=0.0)
        spread = state.number("spread_", low=0.0)
        state.number("norm_cv_", low=0.0)
        if not radius > 0 or not spread > 0:
            state.fail("radius_ and spread_ must be positive")
        law = state.array("law_eigenvalues_", ("d",), low=0.0)
        if not law.max() > 0:
            state.fail("law_eigenvalues_ are all zero")
        grid = state.array("law_log_grid_", ("g",))
        state.array("law_z_grid_", ("g",))
        if grid.shape[0] < 2 or np.any(np.diff(grid) <= 0):
            state.fail("law_log_grid_ must hold at least 2 increasing values")
        if hasattr(self, "moment_count_"):
            state.number("moment_count_", low=2)
            state.array("moment_mean_", ("d",))
            state.array("moment_scatter_", ("d", "d"))
            state.array("moment_third_", ("d",))
            state.number("moment_fourth_", low=0.0)

    def _scoring_cache(self, dtype):
        cache = {"loc": self.location_.astype(dtype)}
        if self.whitener_ is not None:
            cache["W"] = self.whitener_.astype(dtype)
        return cache

    def _score_chunk(self, X, cache):
        Z = X - cache["loc"]
        if "W" in cache:
            Z = Z @ cache["W"]
        r2 = np.einsum("ij,ij->i", Z, Z).astype(np.float64)
        return -np.abs(normal_deviate(r2, self.law_log_grid_, self.law_z_grid_,
                                      float(self.law_eigenvalues_.max())))

    def norms(self, X) -> np.ndarray:
        """Centred (or whitened) norm ||x - mu|| of each sample, shape (n,)."""
        check_is_fitted(self)
        X = check_features(self, X, reset=False)
        cache = self._scoring_cache(X.dtype)
        Z = X - cache["loc"]
        if "W" in cache:
            Z = Z @ cache["W"]
        return np.sqrt(np.einsum("ij,ij->i", Z, Z).astype(np.float64))

    def _null_pvalue(self, scores):
        return np.minimum(1.0, 2.0 * stats.norm.sf(-np.asarray(scores, dtype=np.float64)))

    def _null_offset(self, alpha):
        return -stats.norm.isf(alpha / 2.0)
