"""Typicality of the embedding norm: distance from the thin spherical shell."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ._base import BaseScorer, atomic_update
from ._moments import compute_moments, merge_component
from ._validation import check_features
from .covariance import check_covariance_param
from .gaussian import GaussianScorer

_MOMENT_KEYS = ("count", "mean", "scatter", "third", "fourth")


def shell_law(mean_r2: float, var_r2: float) -> tuple[float, float]:
    """Scaled chi-square g * chi2_h with the given mean and variance of ||x - m||^2.

    Moment matching (Welch-Satterthwaite): g h = mean, 2 g^2 h = var.
    """
    return var_r2 / (2.0 * mean_r2), 2.0 * mean_r2**2 / var_r2


def wilson_hilferty_z(r2: np.ndarray, scale: float, dof: float) -> np.ndarray:
    """Standard-normal deviate of r2 ~ scale * chi2_dof (Wilson & Hilferty 1931)."""
    v = 2.0 / (9.0 * dof)
    return (np.cbrt(r2 / (scale * dof)) - (1.0 - v)) / np.sqrt(v)


class NormShellScorer(BaseScorer):
    """Out-of-distribution score from the distance to the norm shell.

    InfoNCE embeddings concentrate on a thin shell: ||x - mu|| stays close to a
    radius r0 with a small coefficient of variation (Betser et al., ICLR 2026).
    If x ~ N(mu, Sigma), ||x - mu||^2 is a weighted sum of chi-square variables,
    well matched by a scaled chi-square g * chi2_h with the same mean and
    variance. The Wilson-Hilferty cube-root transform turns it into a standard
    normal deviate z, and

        score_samples(x) = -|z(||x - mu||^2)|,

    minus the standardised deviation from the shell (inside or outside it).
    With ``whiten=True`` the norm is taken after whitening, so ||.||^2 is the
    squared Mahalanobis distance (chi-square-like with d degrees of freedom).

    Parameters
    ----------
    whiten : bool, default=False
        Use the whitened norm (needs a covariance; no ``partial_fit``).
    covariance : str or float, default="ledoit_wolf"
        Covariance estimator for ``whiten=True`` (see ``GaussianScorer``).
    alpha, contamination, calibration_size, random_state, chunk_size
        As in ``GaussianScorer``.
    calibration : {"auto", "shell", "conformal"}, default="auto"
        "shell": two-sided p-value 2 * Phi(-|z|) under the fitted scaled
        chi-square; "conformal": split calibration. "auto" means "shell".

    Attributes
    ----------
    location_ : ndarray (d,)   centre of the shell (training mean).
    radius_ : float            sqrt(E ||x - mu||^2), the shell radius r0.
    spread_ : float            standard deviation of the norm (delta method).
    norm_cv_ : float           spread_ / radius_, the shell's thinness.
    shell_scale_, shell_dof_ : float   g and h of the scaled chi-square.
    whitener_ : ndarray (d, d) or None

    Notes
    -----
    The p-value needs the shell to be Gaussian-like: h large (h >= 30 makes the
    Wilson-Hilferty error negligible at alpha = 0.05). L2-normalised inputs sit
    on the unit sphere by construction; their norm says nothing, and ``fit``
    warns. The radius and spread come from moments that merge exactly, so
    ``partial_fit`` equals a batch fit.

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

    _calibrations = ("shell", "conformal")

    def __init__(self, whiten=False, *, covariance="ledoit_wolf", alpha=None,
                 contamination=None, calibration="auto", calibration_size=0.2,
                 random_state=None, chunk_size=4096):
        self.whiten = whiten
        self.covariance = covariance
        self.alpha = alpha
        self.contamination = contamination
        self.calibration = calibration
        self.calibration_size = calibration_size
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

    def _state(self, mean_r2, var_r2, location, whitener, moments=None):
        if not (mean_r2 > 0 and var_r2 > 1e-12 * mean_r2**2):
            raise ValueError(
                "All centred training norms are equal (or zero): a shell with "
                "no spread cannot be fitted. Give more, or more varied, samples.")
        scale, dof = shell_law(mean_r2, var_r2)
        radius = float(np.sqrt(mean_r2))
        spread = float(np.sqrt(var_r2) / (2.0 * radius))
        state = {"location_": location, "whitener_": whitener, "radius_": radius,
                 "spread_": spread, "norm_cv_": spread / radius,
                 "shell_scale_": float(scale), "shell_dof_": float(dof)}
        if moments is not None:
            state.update({f"moment_{k}_": np.asarray(v, dtype=np.float64)
                          for k, v in zip(_MOMENT_KEYS, moments)})
        return state

    @staticmethod
    def _moment_state(moments):
        n, mean, m2, _, q4 = moments
        mean_r2 = float(np.trace(m2)) / n
        return mean_r2, q4 / n - mean_r2**2, mean

    def _fit_state(self, X, y=None):
        if not isinstance(self.whiten, (bool, np.bool_)):
            raise TypeError(f"whiten must be True or False; got {self.whiten!r}.")
        self._warn_if_normalised(X)
        if self.whiten:
            check_covariance_param(self.covariance)
            gauss = GaussianScorer(self.covariance, calibration="chi2").fit(X)
            Z = (X - gauss.location_) @ gauss.whitener_
            r2 = np.einsum("ij,ij->i", Z, Z)
            return self._state(float(r2.mean()), float(r2.var()), gauss.location_,
                               gauss.whitener_)
        m = compute_moments(X, None, 1)
        moments = tuple(m[k][0] for k in _MOMENT_KEYS)
        mean_r2, var_r2, location = self._moment_state(moments)
        return self._state(mean_r2, var_r2, location, None, moments)

    def _streamable(self):
        return (not self.whiten and self.contamination is None
                and self.calibration != "conformal")

    @available_if(_streamable)
    def partial_fit(self, X, y=None):
        """Update with a batch; equals ``fit`` on all batches.

        Not available with ``whiten=True``, ``contamination`` or conformal
        calibration.
        """
        fitted = hasattr(self, "moment_count_")
        with atomic_update(self):
            rule, alpha = self._resolve_threshold()
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
            mean_r2, var_r2, location = self._moment_state(moments)
            self.__dict__.update(self._state(mean_r2, var_r2, location, None, moments))
            self.alpha_, self.threshold_rule_ = alpha, rule
            self.calibration_, self.calibration_scores_ = "shell", None
            self.offset_ = self._alpha_offset(alpha)
        return self

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
        return -np.abs(wilson_hilferty_z(r2, self.shell_scale_, self.shell_dof_))

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
