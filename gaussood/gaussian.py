"""Mahalanobis distance to a fitted Gaussian (one, class-conditional, or clusters)."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from scipy import stats
from sklearn.cluster import KMeans
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.metaestimators import available_if

from . import _law_check, _space
from ._base import BaseScorer
from ._conformal import CVPLUS_MIN_FEATURE_RATIO
from ._moments import compute_moments, fold_moments, merge_component, merge_moments
from ._threads import dense_decomposition_threads
from ._validation import check_features, check_labels, check_moments_finite, check_positive_int
from .covariance import COVARIANCE_METHODS, pooled_covariance, whitening_factor

_MOMENT_KEYS = ("count", "mean", "scatter", "third", "fourth")

# fit cost model (measured on this project's CPUs: a cv+ fit of 600 x 2,048 float32 peaks at
# 25 d x d float64 matrices above its data and takes about 6 * 2.3 d^3 / 1e10 s on one core)
_EIGH_FLOPS = 3.0        # per d^3: one eigendecomposition (eigh) with its vectors
_FLOPS_PER_SECOND = 1e10  # one core (docs: 12-30 GFLOP/s on AVX2, less when busy)
_WARN_SECONDS = 300.0
_WARN_MEMORY_SHARE = 0.25  # of the physical memory; above all of it the fit is refused


def fit_cost(n_samples: int, n_features: int, *, n_components: int = 1, n_models: int = 1,
             relative: bool = False) -> tuple[float, float]:
    """(bytes, seconds): a cheap estimate of a ``GaussianScorer`` fit's peak memory above
    its data and of its time on one core.

    A fit keeps d x d float64 matrices: the moments of each calibration fold (one
    scatter per component), and for each of ``n_models`` models (the final one plus one
    per fold under conformal or CV+ calibration) its scatters, covariance and whitener
    (two more with ``relative``); each model costs an O(d^3) eigendecomposition, and the
    moments and out-of-fold scores O(n d^2); one float64 copy of X is added. Measured:
    the peak resident memory of CV+ fits at d = 1,024 and 2,048 within 5% (25 matrices),
    and the traced peak of small fits within a factor 2 (``tests/test_gaussian.py``).
    """
    n, d, k = float(n_samples), float(n_features), float(n_components)
    folds = n_models - 1
    matrices = folds * k + n_models * (k + 2 + 2 * bool(relative)) + 2
    flops = n_models * _EIGH_FLOPS * d ** 3 + 4.0 * n * d * d
    return 8.0 * (matrices * d * d + n * d), flops / _FLOPS_PER_SECOND  # + one copy of X


def _physical_memory() -> float | None:
    try:
        import os

        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not on this platform
        return None


# fit warns when the labels give fewer rows than this per class on average
MIN_ROWS_PER_CLASS = 10


def _warn_many_classes(k: int, n: int, d: int, folds: int) -> None:
    """Warn, with the cost, when labels make classes of a few rows (an identifier or a
    continuous value given as y: 2,000 labels on 4,000 rows took 3.3 GB)."""
    if n >= MIN_ROWS_PER_CLASS * k:
        return
    per_fit = 8 * k * d * (d + 3)  # count, mean, scatter, third, fourth per class
    warnings.warn(
        f"y has {k} classes for {n} rows ({n / k:.1f} rows per class): every class gets "
        f"its own mean and {d} x {d} moments (about {per_fit / 2**20:,.0f} MB in memory "
        f"and in a saved file, more while {folds} calibration folds are fitted), and a "
        "class of a few rows has a mean estimated from those rows alone. Are these "
        "labels classes? Fit without y, or group the labels.", UserWarning, stacklevel=8)


class GaussianScorer(BaseScorer):
    """Out-of-distribution score from the Mahalanobis distance to a Gaussian.

    If in-distribution embeddings are Gaussian, N(mu, Sigma), the log-likelihood
    is, up to constants, minus half the squared Mahalanobis distance

        D^2(x) = (x - mu)^T Sigma^{-1} (x - mu),

    so ``score_samples(x) = -D^2(x)``. With labels, ``fit(X, y)`` fits one mean
    per class and a tied covariance (Lee et al., NeurIPS 2018); with
    ``n_clusters`` and no labels, k-means clusters play the classes (SSD,
    Sehwag et al., ICLR 2021). The score is then ``-min_k D_k^2(x)``.

    With ``relative=True`` (relative Mahalanobis, Ren et al. 2021) the score is
    ``-(min_k D_k^2(x) - D_0^2(x))``, where D_0 is the distance to one
    background Gaussian N(mu_0, Sigma_0) fitted on all rows (its own mean and
    covariance, same estimator): the part of the distance that the classes
    explain beyond what the data as a whole explains. It needs labels or
    ``n_clusters``; no parametric law is claimed for it, so it is calibrated
    conformally (cross-conformal or CV+).

    Parameters
    ----------
    covariance : {"ledoit_wolf", "oas", "empirical"} or float, default="ledoit_wolf"
        Covariance estimator, as scikit-learn's ``LedoitWolf``, ``OAS``,
        ``EmpiricalCovariance``; a float in [0, 1] is a fixed shrinkage towards
        ``trace(S)/d * I`` (``ShrunkCovariance``).
    n_clusters : int or None, default=None
        Number of k-means clusters when ``fit`` gets no labels (SSD). Labels,
        when given, win (with a warning).
    reg_covar : float, default=0.0
        Eigenvalue floor, relative to the mean eigenvalue.
    relative : bool, default=False
        Relative Mahalanobis: subtract the squared distance to a background
        Gaussian fitted on all rows (Ren 2021). Needs labels or ``n_clusters``;
        calibration "conformal" or "cv+" ("auto" picks one of them).
    normalize : {None, "l2", "center-l2"}, default=None
        Feature space (``gaussood._space``): the features as given, L2-normalised
        (the directions InfoNCE trains), or centred on the fit mean and then
        L2-normalised (SSD). Scores equal those of the scorer fitted on features
        you transformed yourself.
    alpha : float or None, default=None
        Target false-alarm rate on in-distribution data; 0.05 when neither
        ``alpha`` nor ``contamination`` is given.
    contamination : float in (0, 0.5] or None, default=None
        scikit-learn's meaning: the fraction of training samples flagged.
    calibration : {"auto", "f", "chi2", "conformal", "cv+"}, default="auto"
        Null law of the p-values. "f": the exact finite-sample law of the
        Hotelling statistic with estimated mean and (empirical) covariance;
        "chi2": its large-n limit, chi-square with d degrees of freedom;
        "conformal": cross-conformal, from out-of-fold scores of the training
        data, no Gaussian assumption; "cv+": CV+ (Barber et al. 2021), the same
        out-of-fold scores, but a new sample is scored by each fold model as
        well (K + 1 evaluations per row for p-values and ``predict``). "auto"
        takes "f" for the empirical covariance when n > d + K - 1, else "cv+"
        when d / n >= 0.02, else "conformal" (see Notes).
    calibration_folds : int, default=5
        Folds for the out-of-fold calibration scores.
    random_state : int, RandomState or None, default=None
        Seeds the calibration folds and k-means.
    chunk_size : int, default=4096
        Rows scored at a time.

    Attributes
    ----------
    location_ : ndarray (d,)            pooled mean.
    means_ : ndarray (K, d)             component means (K = 1 without labels/clusters).
    classes_ : ndarray (K,)             labels (or cluster indices) of the components.
    covariance_ : ndarray (d, d)        shrunk, tied covariance.
    shrinkage_ : float                  shrinkage used.
    whitener_ : ndarray (d, d)          W with W^T covariance_ W = I (from ``eigh``).
    structure_ : str                    "single", "class" or "cluster".
    n_samples_fit_ : int                samples behind the fit.
    law_misfit_ : float                 with calibration "f" or "chi2" (one component
        or classes): Kolmogorov-Smirnov distance of the fit rows' exact in-sample
        p-values from uniform, 0 for Gaussian rows up to sampling noise; ``fit`` warns
        when it rejects the Gaussian law (``gaussood._law_check``). Absent otherwise.
    background_location_ : ndarray (d,)      with ``relative``: mean of all rows.
    background_whitener_ : ndarray (d, d)    with ``relative``: whitener of the
        background covariance (of all rows around their mean, same estimator).
    offset_, alpha_, threshold_rule_, calibration_, calibration_scores_
        see ``BaseScorer``.

    Notes
    -----
    With the empirical covariance and an independent ID sample x, the statistic
    ``D^2 (n - d) / ((n + 1) d)`` follows F(d, n - d) exactly (the Hotelling
    prediction law; with K components n - d becomes n - K - d + 1). Shrinkage
    lifts the small eigenvalues, so distances shrink and the F threshold
    becomes conservative: measured on Gaussian data with a decaying spectrum,
    Ledoit-Wolf at n = 2,000, d = 128 flags about 3.3% at alpha = 5% (chi2
    flags about 11%). Hence "auto" uses conformal calibration with shrinkage.
    Cross-conformal thresholds the final model's score with scores of fold
    models fitted on (K-1)/K of the rows; when d is not small against n the
    fold models are weaker and the rate collapses (alpha = 5%, 20,000 fresh
    rows, ``benchmarks/results/calibration_grid.md``, decaying and random
    spectra: 0.3-3.2% at n = 1,500, d = 512; 2.3% at n = 5,000; 3.8-6.4% at n
    = 20,000; but 4.8-6.0% wherever d = 64, d / n <= 0.043). CV+ ranks each
    fold model's score of a new sample
    among that fold's out-of-fold scores, so both sides come from the same
    models: 3.5-6.2% in those cells. "auto" takes CV+ from d / n >= 0.02, below
    the first failing ratio (0.026). Under "cv+" with the alpha rule
    ``predict`` follows the CV+ p-value, ``decision_function`` is that p-value
    minus (J + 1/2) / (m + 1), J = floor(alpha (m + 1)), and ``offset_`` is NaN.
    With several components the score takes the nearest one, which makes the
    p-value conservative as well (false alarms <= alpha); the F law uses
    1 + K/n for the 1 + 1/n_k of each class (exact for equal class sizes).
    With ``n_clusters``, k-means runs once on all of X and the calibration
    folds reuse its clusters, so those scores are not fully out of fold.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussood import GaussianScorer
    >>> rng = np.random.default_rng(0)
    >>> scorer = GaussianScorer("empirical", alpha=0.05).fit(rng.normal(size=(5000, 8)))
    >>> scorer.calibration_  # the exact Hotelling F law
    'f'
    >>> fresh = rng.normal(size=(20000, 8))
    >>> round(float(np.mean(scorer.predict(fresh) == -1)), 2)
    0.05
    >>> bool(scorer.pvalue(np.full((1, 8), 6.0))[0] < 1e-6)
    True
    """

    _calibrations = ("f", "chi2", "conformal", "cv+")
    _fit_uses_labels = True
    _parameter_constraints = {
        **BaseScorer._parameter_constraints,
        "covariance": [StrOptions(set(COVARIANCE_METHODS)), Interval(Real, 0, 1, closed="both")],
        "n_clusters": [Interval(Integral, 1, None, closed="left"), None],
        "reg_covar": [Interval(Real, 0, None, closed="left")],  # finite: inf and NaN fail
        "relative": ["boolean"],
    }

    def __init__(self, covariance="ledoit_wolf", *, n_clusters=None, reg_covar=0.0,
                 relative=False, normalize=None, alpha=None, contamination=None,
                 calibration="auto", calibration_folds=5, random_state=None, chunk_size=4096):
        self.covariance = covariance
        self.normalize = normalize
        self.n_clusters = n_clusters
        self.reg_covar = reg_covar
        self.relative = relative
        self.alpha = alpha
        self.contamination = contamination
        self.calibration = calibration
        self.calibration_folds = calibration_folds
        self.random_state = random_state
        self.chunk_size = chunk_size

    def _auto_calibration(self, n_samples, n_features, y=None):
        # The F law is exact only for the empirical covariance; with shrinkage it
        # is conservative (it flags fewer than alpha), so conformal is the default,
        # CV+ where fold models differ from the full one (d / n >= 0.02; see Notes).
        if y is not None:
            n_components = np.unique(np.asarray(y)).shape[0]
        else:
            n_components = self.n_clusters or 1
        if (self.covariance == "empirical" and not self.relative
                and n_samples - n_components - n_features >= 0):
            return "f"
        if n_features >= CVPLUS_MIN_FEATURE_RATIO * n_samples:
            return "cv+"
        return "conformal"

    def _fit_checked(self, X, y, threshold, out_of_fold, moments_cache):
        self._check_fit_cost(X, y, out_of_fold)
        scores = super()._fit_checked(X, y, threshold, out_of_fold, moments_cache)
        if self.calibration_ in ("f", "chi2") and self.structure_ != "cluster":
            rows = _law_check.check_rows(X.shape[0])
            codes = None if y is None else np.unique(check_labels(y, X.shape[0]),
                                                     return_inverse=True)[1][rows]
            _law_check.record(self, X[rows], codes)
        return scores

    def _check_fit_cost(self, X, y, out_of_fold):
        """Warn before a fit that is large for this machine (``fit_cost``: over a minute,
        or a quarter of its memory), refuse one that needs more memory than it has."""
        n, d = X.shape
        calibration = self.calibration
        if calibration == "auto":
            calibration = self._auto_calibration(n, d, y)
        models = 1 + (int(self.calibration_folds) if out_of_fold or calibration in (
            "conformal", "cv+") else 0)
        k = np.unique(np.asarray(y)).shape[0] if y is not None else self.n_clusters or 1
        size, seconds = fit_cost(n, d, n_components=k, n_models=models,
                                 relative=self.relative)
        memory = _physical_memory()
        big = memory is not None and size > _WARN_MEMORY_SHARE * memory
        if not (big or seconds > _WARN_SECONDS):
            return
        what = (f"GaussianScorer.fit on {n} rows x {d} features ({models} covariance model"
                f"{'s' if models > 1 else ''}, {calibration} calibration, {k} component"
                f"{'s' if k > 1 else ''}) needs about {size / 1e9:.1f} GB of memory and "
                f"{seconds / 60:.0f} min on one core (d x d matrices of {8e-6 * d * d:.0f} MB, "
                "an O(d^3) eigendecomposition per model).")
        out = (" Reduce the features: pool feature maps (gaussood's encoders pool a "
               "convolutional layer to its channel means unless it is named "
               "'name:flatten'), or project with PCA (sklearn.decomposition.PCA before the "
               "scorer); a parametric calibration ('chi2', or 'f' with "
               "covariance='empirical' when n > d) fits 1 model instead of "
               f"{models}.")
        if memory is not None and size > memory:
            raise ValueError(f"{what} This machine has {memory / 1e9:.1f} GB: refused."
                             f"{out}")
        warnings.warn(what + out, UserWarning, stacklevel=5)

    def _validate_params(self):
        super()._validate_params()
        if self.relative and self.calibration in ("f", "chi2"):
            raise ValueError(
                f"relative=True has no parametric null law, so calibration="
                f"{self.calibration!r} cannot hold; use 'auto', 'conformal' or 'cv+'.")

    # --------------------------------------------------------------------- fit
    def _components(self, X, y):
        """(codes, classes, structure) for the fit data."""
        n = X.shape[0]
        if y is not None:
            if self.n_clusters is not None:
                warnings.warn("fit got labels y: class-conditional fit, n_clusters ignored.",
                              UserWarning, stacklevel=4)
            y = check_labels(y, n)
            classes, codes = np.unique(y, return_inverse=True)
            _warn_many_classes(classes.shape[0], n, X.shape[1], self.calibration_folds)
            return codes, classes, "class"
        if self.n_clusters is not None:
            k = check_positive_int(self.n_clusters, "n_clusters")
            if k >= n:
                raise ValueError(f"n_clusters={k} needs more than {k} samples; got {n}.")
            km = KMeans(n_clusters=k, n_init=3, random_state=self.random_state).fit(X)
            return km.labels_, np.arange(k), "cluster"
        return None, np.array([0]), "single"

    def _prepare(self, X, y):
        codes, classes, structure = self._components(X, y)
        if self.relative and structure == "single":
            raise ValueError(
                "relative=True compares each class (or cluster) with one background "
                "Gaussian of all rows; with a single component the two are the same and "
                "every score is 0. Pass labels to fit(X, y) or set n_clusters.")
        if X.shape[0] <= classes.shape[0]:
            raise ValueError(
                f"A tied covariance needs more samples than components: got "
                f"{X.shape[0]} samples for {classes.shape[0]} components.")
        return codes, classes, structure

    def _fit_state(self, X, y):
        codes, classes, structure = self._prepare(X, y)
        moments = compute_moments(X, codes, classes.shape[0])
        return self._state_from_moments(moments, classes, structure)

    def _fit_with_calibration(self, X, y, *, moments_cache=None):
        """One pass over X: per-fold moments, merged for the folds and the whole."""
        codes, classes, structure = self._prepare(X, y)
        folds = self._folds(X)
        per_fold = [fold_moments(X, test, codes, classes.shape[0], moments_cache)
                    for _, test in folds]

        def merged(parts):
            total, keys = parts[0], classes
            for part in parts[1:]:
                total, keys = merge_moments(total, keys, part, classes)
            return total, keys

        fold_states = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for i in range(len(folds)):
                moments, keys = merged(per_fold[:i] + per_fold[i + 1:])
                try:
                    fold_states.append(self._state_from_moments(moments, keys, structure))
                except ValueError as exc:
                    if "too large" in str(exc):
                        raise
                    raise ValueError(
                        f"Conformal calibration refits on {len(folds) - 1} of "
                        f"{len(folds)} folds of the {X.shape[0]} rows, and a fold fit "
                        f"fails: {exc} Give more samples (per class), or use "
                        "calibration='chi2'.") from None
        moments, keys = merged(per_fold)
        state = self._state_from_moments(moments, keys, structure)
        return state, *self._score_folds(X, folds, fold_states)

    def _state_from_moments(self, moments, classes, structure):
        present = moments["count"] > 0  # a fold may miss a class
        if not np.all(present):
            moments = {key: value[present] for key, value in moments.items()}
            classes = classes[present]
        check_moments_finite(moments)
        if moments["count"].sum() <= classes.shape[0]:
            raise ValueError(
                f"{int(moments['count'].sum())} samples in {classes.shape[0]} components "
                "leave no residual to estimate a covariance (every component has one "
                "sample).")
        if not np.any(moments["scatter"]):
            raise ValueError(
                "The training rows do not vary around their component means (zero "
                "covariance): a Gaussian cannot be fitted to identical rows.")
        with dense_decomposition_threads(moments["mean"].shape[1]):  # eigh: 1 thread
            cov, shrinkage = pooled_covariance(moments, self.covariance)
            whitener, n_floored = whitening_factor(cov, float(self.reg_covar))
        if n_floored and self.covariance == "empirical":
            warnings.warn(
                f"The empirical covariance is singular ({n_floored} eigenvalues "
                "floored); distances along those directions are meaningless. Use "
                "covariance='ledoit_wolf' or 'oas', or set reg_covar.", UserWarning,
                stacklevel=4)
        count = moments["count"]
        location = count @ moments["mean"] / count.sum()
        state = {
            "location_": location,
            "means_": moments["mean"].copy(),
            "classes_": classes,
            "covariance_": cov,
            "shrinkage_": shrinkage,
            "whitener_": whitener,
            "whitened_means_": (moments["mean"] - location) @ whitener,
            "structure_": structure,
            "n_samples_fit_": int(count.sum()),
        }
        if self.relative:
            state.update(self._background_state(moments))
        state.update({f"moment_{key}_": moments[key] for key in _MOMENT_KEYS})
        return state

    def _background_state(self, moments):
        """The background Gaussian of relative Mahalanobis: every component's rows
        merged into one (exact, from the moments), its own shrunk covariance."""
        parts = [tuple(moments[key][k] for key in _MOMENT_KEYS)
                 for k in range(moments["count"].shape[0])]
        whole = parts[0]
        for part in parts[1:]:
            whole = merge_component(whole, part)
        one = {key: np.asarray(value, dtype=np.float64)[None]
               for key, value in zip(_MOMENT_KEYS, whole)}
        with dense_decomposition_threads(one["mean"].shape[1]):
            cov, _ = pooled_covariance(one, self.covariance)
            whitener, _ = whitening_factor(cov, float(self.reg_covar))
        return {"background_location_": one["mean"][0], "background_whitener_": whitener}

    def _streamable(self):
        return (self.n_clusters is None and self.contamination is None and not self.relative
                and self.calibration not in ("conformal", "cv+"))

    @available_if(_streamable)
    def partial_fit(self, X, y=None):
        """Update the fit with a new batch; equals ``fit`` on all batches.

        Means and covariances merge exactly (Chan et al. 1979, extended to the
        fourth moment that Ledoit-Wolf needs). Uses the alpha rule with a
        parametric law: "auto" means "f" here (or "chi2" while n is too small
        for F), whatever the covariance, so with shrinkage the threshold is
        conservative; call ``calibrate(X_cal)`` after streaming for an exact
        rate. Class labels, if used, must be
        given with every batch. Not available with ``n_clusters`` (k-means
        needs all data), ``contamination`` or conformal / CV+ calibration (they
        need all training scores at once: use ``fit``, or ``calibrate``
        afterwards) or ``relative`` (no parametric law).
        """
        fitted = hasattr(self, "moment_count_")
        with self._fit_scope() as (rule, alpha):
            self.__dict__.pop("law_misfit_", None)   # a check of rows no longer all here
            self._check_space()
            X = check_features(self, X, reset=not fitted, ensure_min_samples=1)
            if not fitted:  # "center-l2" streams around the first batch's mean (kept)
                self.__dict__.update(_space.fit_space(X, self._normalize()))
            X = self._to_space(X)
            codes, classes, structure = self._components(X, y)
            new = compute_moments(X, codes, classes.shape[0])
            if fitted:
                if structure != self.structure_:
                    raise ValueError(
                        f"This scorer was fitted as '{self.structure_}'; a batch "
                        f"{'with' if y is not None else 'without'} labels does not fit it.")
                if structure == "class" and ((classes.dtype.kind in "US")
                                             != (self.classes_.dtype.kind in "US")):
                    kind = {True: "strings", False: "numbers"}
                    raise ValueError(
                        f"The labels of this batch are {kind[classes.dtype.kind in 'US']} "
                        f"but earlier batches had {kind[self.classes_.dtype.kind in 'US']} "
                        f"({self.classes_[:3].tolist()}...); give the same labels in "
                        "every batch.")
                old = {key: getattr(self, f"moment_{key}_") for key in _MOMENT_KEYS}
                new, classes = merge_moments(old, self.classes_, new, classes)
            if new["count"].sum() <= classes.shape[0]:
                raise ValueError("Need more samples than components before the first fit completes.")
            self.__dict__.update(self._state_from_moments(new, classes, structure))
            self.alpha_, self.threshold_rule_ = alpha, rule
            calibration = self.calibration
            if calibration == "auto":  # streaming: the exact law once it is defined
                dfd = self.n_samples_fit_ - classes.shape[0] - X.shape[1] + 1
                calibration = "f" if dfd >= 1 else "chi2"
            self.calibration_ = calibration
            self.calibration_scores_ = None
            self._drop_folds()
            self.offset_ = self._alpha_offset(alpha)
        return self

    def _check_fitted_state(self, state):
        super()._check_fitted_state(state)
        structure = state.choice("structure_", {"single", "class", "cluster"})
        state.array("location_", ("d",))
        state.array("means_", ("K", "d"))
        state.array("classes_", ("K",), kind=None, finite=False)
        state.array("whitened_means_", ("K", "d"))
        for name in ("covariance_", "whitener_"):
            state.array(name, ("d", "d"))
        state.number("shrinkage_", low=0.0, high=1.0)
        k = state.dims["K"]
        if structure == "single" and k != 1:
            state.fail(f"structure_ is 'single' but there are {k} components")
        n = state.integer("n_samples_fit_", low=k + 1)
        state.number("law_misfit_", low=0.0, high=1.0, optional=True)
        if self.relative:
            if structure == "single":
                state.fail("relative is True but structure_ is 'single'")
            if self.calibration_ in ("f", "chi2"):
                state.fail(f"calibration_ is {self.calibration_!r}; relative Mahalanobis "
                           "has no parametric law")
            state.array("background_location_", ("d",))
            state.array("background_whitener_", ("d", "d"))
        else:
            for name in ("background_location_", "background_whitener_"):
                if hasattr(self, name):
                    state.fail(f"{name} is present but relative is False")
        if state.fold:  # a CV+ fold model keeps no merge moments
            return
        counts = state.array("moment_count_", ("K",), low=0)
        state.array("moment_mean_", ("K", "d"))
        state.array("moment_scatter_", ("K", "d", "d"))
        state.array("moment_third_", ("K", "d"))
        state.array("moment_fourth_", ("K",), low=0)
        if counts.sum() != n:
            state.fail(f"moment_count_ sums to {counts.sum():g}, not n_samples_fit_ = {n}")

    # ----------------------------------------------------------------- scoring
    def _scoring_cache(self, dtype):
        means = self.whitened_means_.astype(dtype)
        cache = {"loc": self.location_.astype(dtype), "W": self.whitener_.astype(dtype),
                 "means": means, "means_sq": np.einsum("ij,ij->i", means, means)}
        cache["loc_W"] = cache["loc"] @ cache["W"]
        if self.relative:
            cache["bg_loc"] = self.background_location_.astype(dtype)
            cache["bg_W"] = self.background_whitener_.astype(dtype)
            cache["bg_loc_W"] = cache["bg_loc"] @ cache["bg_W"]
        return cache

    def _fused_space(self) -> bool:
        # normalize="l2" is applied after the whitening GEMM: (x / |x| - loc) W is
        # (x W) / |x| - loc W, one n x d pass fewer than normalising the rows first
        return self._normalize() == "l2"

    def _score_chunk(self, X, cache):
        if cache.get(_space.FUSED_L2):   # X is raw: scale the whitened rows by 1 / |x|
            inv = _space.inverse_norms(X)
            Z = X @ cache["W"]
            Z *= inv[:, None]
            Z -= cache["loc_W"]
        else:
            Z = (X - cache["loc"]) @ cache["W"]
        sq = np.einsum("ij,ij->i", Z, Z)
        if self.means_.shape[0] > 1:
            sq = sq[:, None] - 2.0 * (Z @ cache["means"].T) + cache["means_sq"]
            sq = np.maximum(sq.min(axis=1), 0.0)
        if self.relative:
            if cache.get(_space.FUSED_L2):
                B = X @ cache["bg_W"]
                B *= inv[:, None]
                B -= cache["bg_loc_W"]
            else:
                B = (X - cache["bg_loc"]) @ cache["bg_W"]
            return -(sq.astype(np.float64) - np.einsum("ij,ij->i", B, B).astype(np.float64))
        return -sq.astype(np.float64)

    def mahalanobis(self, X) -> np.ndarray:
        """Squared Mahalanobis distance to the nearest component, shape (n,)
        (with ``relative``: minus the squared distance to the background)."""
        return -self.score_samples(X)

    # ------------------------------------------------------------ null laws
    def _f_law(self):
        n, k, d = self.n_samples_fit_, self.means_.shape[0], self.n_features_in_
        dfd = n - k - d + 1
        if dfd < 1:
            raise ValueError(
                f"The F law needs n_samples > n_features + n_components - 1 (n={n}, "
                f"d={d}, K={k}); use calibration='chi2' or 'conformal'.")
        return d / dfd * (1.0 + k / n) * n, dfd

    def _null_pvalue(self, scores):
        d2 = -np.asarray(scores, dtype=np.float64)
        d = self.n_features_in_
        if self.calibration_ == "chi2":
            return stats.chi2.sf(d2, d)
        scale, dfd = self._f_law()
        return stats.f.sf(d2 / scale, d, dfd)

    def _null_offset(self, alpha):
        d = self.n_features_in_
        if self.calibration_ == "chi2":
            return -stats.chi2.isf(alpha, d)
        scale, dfd = self._f_law()
        return -stats.f.isf(alpha, d, dfd) * scale
