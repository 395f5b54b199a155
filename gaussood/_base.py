"""What every gaussood scorer shares: the scikit-learn outlier contract,
chunked scoring, p-values, and the two kinds of threshold.

Thresholds. ``contamination`` keeps scikit-learn's meaning: ``offset_`` is the
``100 * contamination`` percentile of the training scores, so that fraction of
the training set is flagged. ``alpha`` is a target false-alarm rate on
in-distribution data: ``offset_`` is set so that ``predict(x) == -1`` exactly
when the p-value is below alpha (at most alpha for conformal p-values). The p-value comes from the scorer's null law
(parametric) or from calibration scores (conformal, no distributional
assumption): out-of-fold scores of the training data (cross-conformal, Vovk
2015; the final model still uses all the data), or the scores of a held-out ID
set given to ``calibrate`` (split conformal, exact in finite samples).
The two never share a parameter; give
at most one of them (``alpha`` defaults to 0.05 when neither is given).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math
import re
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.model_selection import KFold
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._validation import FittedState, check_features, raise_nonfinite

DEFAULT_ALPHA = 0.05

# Every concrete scorer class, by class name (the name stored in saved files).
# Filled by ``BaseScorer.__init_subclass__``: defining a subclass registers it.
_REGISTRY: dict[str, type] = {}


def _short_name(cls) -> str:
    """``GaussianScorer`` -> ``gaussian``, ``MyKNNScorer`` -> ``my-knn``."""
    stem = cls.__name__.removesuffix("Scorer") or cls.__name__
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", stem).lower()


def _register(cls, name) -> None:
    for other in _REGISTRY.values():
        same = (other.__module__, other.__qualname__) == (cls.__module__, cls.__qualname__)
        if not same and (other.__name__ == cls.__name__ or other.scorer_name == name):
            raise TypeError(
                f"Cannot register {cls.__module__}.{cls.__qualname__} as scorer "
                f"{cls.__name__!r} (name {name!r}): {other.__module__}.{other.__qualname__} "
                "already has that class name or name. Rename the class or pass "
                "name=... in its class statement.")
    cls.scorer_name = name
    _REGISTRY[cls.__name__] = cls  # a redefinition (same module and name) replaces the old


def registered_scorers() -> dict[str, type]:
    """The registered scorer classes, by short name (``"gaussian"``, ``"shell"``, ...).

    A class registers itself when it is defined (``class MyScorer(GaussianScorer)``);
    ``gaussood.save``/``load`` and the command line take every registered class.
    """
    return {cls.scorer_name: cls for cls in _REGISTRY.values()}


def scorer_class(class_name: str):
    """The registered class called ``class_name`` (as stored in saved files), or None."""
    return _REGISTRY.get(class_name) if isinstance(class_name, str) else None


@contextlib.contextmanager
def atomic_update(estimator):
    """Restore the estimator's previous state if the block raises."""
    saved = dict(estimator.__dict__)
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(saved)
        raise


def conformal_offset(calibration_scores: np.ndarray, alpha: float) -> float:
    """Score below which a sample's conformal p-value is <= alpha.

    With m sorted calibration scores c_(1) <= ... <= c_(m), the split-conformal
    p-value of a score s is (1 + #{c <= s}) / (m + 1); it is <= alpha exactly when
    s < c_(j+1) with j = floor(alpha (m + 1)) - 1.
    """
    m = calibration_scores.shape[0]
    j = math.floor(alpha * (m + 1) + 1e-12) - 1
    if j < 0:
        warnings.warn(
            f"{m} calibration samples cannot certify alpha={alpha}: at least "
            f"{math.ceil(1 / alpha - 1)} are needed. Nothing will be flagged.",
            UserWarning, stacklevel=3)
        return -np.inf
    return float(calibration_scores[j])


# Per-fold moments shared by scorers fitted on the same array (``sharing_fold_moments``):
# {(id(X), digest of the fold's rows): (X, moments)}; None outside such a block.
_SHARED_FOLD_MOMENTS: contextvars.ContextVar = contextvars.ContextVar(
    "gaussood_shared_fold_moments", default=None)


@contextlib.contextmanager
def sharing_fold_moments():
    """Inside the block, scorers fitted on the same array compute each fold's moments once.

    ``GaussianScorer`` (without labels or clusters) and ``NormShellScorer`` compute the
    same moments (count, mean, scatter, third, fourth) of each calibration fold; with
    the same ``calibration_folds`` and an integer ``random_state`` their folds are the
    same rows. ``PValueCombination`` fits its components inside this block, so the
    second one reuses the first one's moments (``fold_moments``). Nested blocks share
    the outer cache; it is dropped when the outermost block ends.
    """
    if _SHARED_FOLD_MOMENTS.get() is not None:
        yield
        return
    token = _SHARED_FOLD_MOMENTS.set({})
    try:
        yield
    finally:
        _SHARED_FOLD_MOMENTS.reset(token)


# Scorers whose fit records out-of-fold scores (``collecting_out_of_fold``):
# {id(scorer): None, then the scores}; None outside such a block.
_OUT_OF_FOLD: contextvars.ContextVar = contextvars.ContextVar(
    "gaussood_out_of_fold", default=None)


@contextlib.contextmanager
def collecting_out_of_fold(scorers):
    """Inside the block, fitting one of ``scorers`` records its out-of-fold scores.

    Yields a dict ``{id(scorer): scores}``: after ``scorer.fit(X)`` in the block,
    ``scores[i]`` is the out-of-fold score of row ``i`` of ``X`` (the one behind the
    cross-conformal calibration; NaN for a row that has none, as ``KNNScorer``'s
    rows beyond its 20,000 calibration rows). They are computed whatever the
    scorer's calibration: a parametric scorer keeps its law (its fitted state
    equals a plain fit's up to rounding) and pays for the fold fits. Other
    scorers fitted in the block (say, inside a component's own fit) are not
    affected. ``PValueCombination`` calibrates on these scores; they are never
    stored on the scorer.
    """
    collected = {id(scorer): None for scorer in scorers}
    token = _OUT_OF_FOLD.set(collected)
    try:
        yield collected
    finally:
        _OUT_OF_FOLD.reset(token)


def fold_moments(X: np.ndarray, rows: np.ndarray, codes=None, n_components: int = 1) -> dict:
    """``compute_moments(X[rows], codes[rows], n_components)``, shared where possible.

    Inside ``sharing_fold_moments`` the moments of one component (``codes`` None) are
    cached by the identity of ``X`` and the rows' content, and a hit returns a copy
    (callers may keep or change the arrays).
    """
    from ._moments import compute_moments

    cache = _SHARED_FOLD_MOMENTS.get()
    if cache is None or codes is not None:
        return compute_moments(X[rows], None if codes is None else codes[rows], n_components)
    rows = np.asarray(rows)
    key = (id(X), X.shape, str(rows.dtype),
           hashlib.blake2b(np.ascontiguousarray(rows).tobytes(), digest_size=20).digest())
    hit = cache.get(key)
    if hit is None or hit[0] is not X:  # a different array at a reused address: recompute
        hit = (X, compute_moments(X[rows], None, 1))
        cache[key] = hit
    return {name: value.copy() for name, value in hit[1].items()}


class BaseScorer(OutlierMixin, BaseEstimator):
    """Base class of the gaussood scorers (not for direct use).

    Subclasses implement ``_fit_state(X, y) -> dict`` (the fitted attributes,
    computed without touching ``self``), ``_score_chunk(X, cache)`` (float64
    scores, higher = more in-distribution) and, for a parametric null law,
    ``_null_pvalue(scores)`` and ``_null_offset(alpha)``.

    Defining a subclass registers it (``gaussood.save``/``load`` and the command
    line's ``--scorer`` choices come from the registry). Class keywords:
    ``name="..."`` sets its short name (default: the class name without
    "Scorer", in kebab case: ``MyKNNScorer`` -> ``my-knn``); ``register=False``
    keeps a class out (abstract bases, or scorers whose fitted state is not
    plain arrays). Set ``_fit_uses_labels = True`` when ``fit(X, y)`` uses ``y``.
    """

    _calibrations: tuple = ("conformal",)
    _fit_uses_labels: bool = False
    scorer_name: str | None = None  # set on each registered class

    # scikit-learn's parameter declarations: checked by ``_validate_params`` in fit,
    # partial_fit, scoring and load, and read by the command line to parse its options.
    # Subclasses extend this dict; "calibration" is filled from ``_calibrations``.
    _parameter_constraints: dict = {
        "alpha": [Interval(Real, 0, 1, closed="neither"), None],
        "contamination": [Interval(Real, 0, 0.5, closed="right"), None],
        "calibration": [StrOptions({"auto", "conformal"})],
        "calibration_folds": [Interval(Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
    }
    _parameter_hints: dict = {
        "chunk_size": "it is the number of rows scored at a time; there is no 'no chunking' "
                      "value: pass a large number such as 10**9",
    }

    def __init_subclass__(cls, *, name: str | None = None, register: bool = True, **kwargs):
        super().__init_subclass__(**kwargs)
        # the calibration choices are declared once, by ``_calibrations``
        cls._parameter_constraints = {**cls._parameter_constraints,
                                      "calibration": [StrOptions({"auto", *cls._calibrations})]}
        if register:
            _register(cls, name or _short_name(cls))
        else:
            cls.scorer_name = None

    # ------------------------------------------------------------------ params
    def _validate_params(self):
        """Check every constructor parameter against ``_parameter_constraints``.

        Raises scikit-learn's ``InvalidParameterError`` (a ``ValueError`` and a
        ``TypeError``) naming the parameter, with a hint where one helps.
        """
        try:
            super()._validate_params()
        except InvalidParameterError as exc:
            hint = next((h for name, h in self._parameter_hints.items()
                         if f"'{name}' parameter" in str(exc)), None)
            if hint is None:
                raise
            raise InvalidParameterError(f"{exc} ({hint})") from None

    def _resolve_threshold(self):
        self._validate_params()
        if self.alpha is not None and self.contamination is not None:
            raise ValueError(
                "Give either alpha (target false-alarm rate on in-distribution data) or "
                "contamination (fraction of training samples to flag), not both.")
        rule = "alpha" if self.contamination is None else "contamination"
        alpha = DEFAULT_ALPHA if self.alpha is None else float(self.alpha)
        return rule, alpha

    def _auto_calibration(self, n_samples: int, n_features: int, y=None) -> str:
        return self._calibrations[0]

    # --------------------------------------------------------------------- fit
    def fit(self, X, y=None):
        """Fit the scorer on in-distribution samples ``X`` of shape (n, d).

        Returns self. On any error the estimator keeps its previous state.
        """
        with atomic_update(self):
            rule, alpha = self._resolve_threshold()
            self._clear_fitted()
            X = check_features(self, X, reset=True, ensure_min_samples=2)
            n = X.shape[0]
            calibration = self.calibration
            if calibration == "auto":
                calibration = self._auto_calibration(n, X.shape[1], y)
            calibration_scores = None
            wanted = _OUT_OF_FOLD.get()  # inside collecting_out_of_fold: record this fit's
            wanted = wanted if wanted is not None and id(self) in wanted else None
            if calibration == "conformal" or wanted is not None:
                state, out_of_fold = self._fit_with_calibration(X, y)
                if calibration == "conformal":  # NaN: a row without an out-of-fold score
                    calibration_scores = np.sort(out_of_fold[~np.isnan(out_of_fold)])
                if wanted is not None:
                    wanted[id(self)] = out_of_fold
            else:
                state = self._fit_state(X, y)
            self.__dict__.update(state)
            self.alpha_ = alpha
            self.threshold_rule_ = rule
            self.calibration_ = calibration
            self.calibration_scores_ = calibration_scores
            if rule == "contamination":
                self.offset_ = float(np.percentile(self.score_samples(X),
                                                   100.0 * self.contamination))
            else:
                self.offset_ = self._alpha_offset(alpha)
        return self

    def _folds(self, X):
        n_folds = min(self.calibration_folds, X.shape[0])
        return list(KFold(n_folds, shuffle=True,
                          random_state=check_random_state(self.random_state)).split(X))

    def _fit_with_calibration(self, X, y):
        """(fitted state, out-of-fold score of every training row, in row order).

        Each fold is scored by a model fitted without it (cross-conformal).
        Subclasses override this when they can share work with the full fit; a
        row without an out-of-fold score gets NaN (it is left out of the
        calibration scores).
        """
        folds = self._folds(X)
        fold_states = []
        with warnings.catch_warnings():  # the full fit warns; its folds need not
            warnings.simplefilter("ignore", UserWarning)
            for train, _ in folds:
                fold_states.append(
                    self._fit_state(X[train], None if y is None else np.asarray(y)[train]))
        return self._fit_state(X, y), self._score_folds(X, folds, fold_states)

    def _score_folds(self, X, folds, fold_states):
        scores = np.full(X.shape[0], np.nan)
        for (_, test), state in zip(folds, fold_states):
            fold_model = object.__new__(type(self))
            fold_model.__dict__.update(self.__dict__)
            fold_model.__dict__.update(state)
            scores[test] = fold_model.score_samples(X[test])
        return scores

    def _clear_fitted(self):
        for key in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")]:
            delattr(self, key)
        for key in [k for k in vars(self) if k.startswith("_cache")]:
            delattr(self, key)

    def _alpha_offset(self, alpha: float) -> float:
        if self.calibration_ == "conformal":
            return conformal_offset(self.calibration_scores_, alpha)
        return float(self._null_offset(alpha))

    def calibrate(self, X):
        """Calibrate p-values and the alpha threshold on held-out ID samples.

        Switches ``calibration_`` to ``"conformal"``: p-values become
        (1 + #{calibration scores <= s}) / (m + 1), valid for exchangeable data
        without any Gaussian assumption. With ``contamination`` set, only the
        p-values change. Returns self.
        """
        check_is_fitted(self)
        with atomic_update(self):
            scores = np.sort(self.score_samples(X))
            if scores.shape[0] < 1:
                raise ValueError("calibrate needs at least one sample.")
            self.calibration_scores_ = scores
            self.calibration_ = "conformal"
            if self.threshold_rule_ == "alpha":
                self.offset_ = conformal_offset(scores, self.alpha_)
        return self

    # ----------------------------------------------------------------- scoring
    def _scoring_cache(self, dtype) -> dict:
        return {}

    def score_samples(self, X) -> np.ndarray:
        """Score of each sample, shape (n,): higher means more in-distribution.

        Works in chunks of ``chunk_size`` rows, so the extra memory is
        O(chunk_size x d) whatever the number of rows.
        """
        check_is_fitted(self)
        self._validate_params()  # set_params may have changed chunk_size since the fit
        X = check_features(self, X, reset=False, ensure_all_finite=False)
        cache = self._scoring_cache(X.dtype)
        out = np.full(X.shape[0], np.nan)  # never uninitialised memory
        step = int(self.chunk_size)
        for start in range(0, X.shape[0], step):
            chunk = X[start:start + step]
            with np.errstate(over="ignore", invalid="ignore"):  # checked just below
                scores = self._score_chunk(chunk, cache)
            if not np.all(np.isfinite(scores)):
                raise_nonfinite(chunk)
            out[start:start + step] = scores
        return out

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for flagged samples."""
        return self.decision_from_scores(self.score_samples(X))

    def decision_from_scores(self, scores) -> np.ndarray:
        """``decision_function`` of scores already computed by ``score_samples``.

        A sample is flagged (``predict == -1``) exactly when this is negative.
        """
        check_is_fitted(self)
        return np.asarray(scores, dtype=np.float64) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 for inliers, -1 for outliers (``decision_function < 0``)."""
        decision = self.decision_function(X)
        labels = np.ones(decision.shape[0], dtype=int)
        labels[decision < 0] = -1
        return labels

    def pvalue(self, X) -> np.ndarray:
        """P-value of each sample under the in-distribution null, shape (n,).

        Small values mean "unlikely to be in-distribution". ``predict`` flags a
        sample exactly when its p-value is below ``alpha_`` (at most ``alpha_``
        for conformal p-values), under the alpha rule.
        """
        return self.pvalue_from_scores(self.score_samples(X))

    def pvalue_from_scores(self, scores) -> np.ndarray:
        """P-values of scores already computed by ``score_samples`` (saves a pass)."""
        check_is_fitted(self)
        scores = np.asarray(scores, dtype=np.float64)
        if self.calibration_ == "conformal":
            if self.calibration_scores_ is None:
                raise ValueError("No calibration scores: call calibrate(X_cal) first.")
            cal = self.calibration_scores_
            return (1.0 + np.searchsorted(cal, scores, side="right")) / (cal.shape[0] + 1.0)
        return self._null_pvalue(scores)

    def _null_pvalue(self, scores):  # pragma: no cover - overridden where a law exists
        raise NotImplementedError

    def _null_offset(self, alpha):  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------- persistence
    # persistence.py builds on this module (the registry); the two methods below
    # import it when called, so this module never needs it at import time.
    def save(self, path) -> None:
        """Write the fitted scorer to ``path`` (npz, no pickle); see ``gaussood.load``."""
        from .persistence import save
        save(self, path)

    @classmethod
    def load(cls, path):
        """Read a scorer written by ``save``; it must be of this class (or a subclass)."""
        from .persistence import load
        return load(path, expected=cls)

    def _after_load(self) -> None:
        """Rebuild derived, non-persisted state after loading."""

    def _check_loaded(self) -> None:
        """Check parameters and fitted state as read from a file (``gaussood.load``).

        Raises ``ValueError`` naming the first parameter or attribute that is
        invalid or inconsistent with the others.
        """
        self._resolve_threshold()
        state = FittedState(self)
        self._check_fitted_state(state)

    def _check_fitted_state(self, state: FittedState) -> None:
        """The fitted attributes every scorer has; subclasses add theirs (calling this).

        ``state`` binds ``d`` (``n_features_in_``); see ``_validation.FittedState``.
        """
        if hasattr(self, "feature_names_in_"):
            state.array("feature_names_in_", ("d",), kind=None, finite=False)
        rule = state.choice("threshold_rule_", {"alpha", "contamination"})
        state.number("alpha_", low=0.0, high=1.0)
        if not 0.0 < self.alpha_ < 1.0:
            state.fail(f"alpha_ is {self.alpha_!r}; it must lie in (0, 1)")
        # -inf: too few calibration scores to flag anything at this alpha
        state.number("offset_", allow=(-np.inf,))
        calibration = state.choice("calibration_", set(self._calibrations))
        scores = state.array("calibration_scores_", ("m",), none_ok=True)
        if scores is None and calibration == "conformal":
            state.fail("calibration_ is 'conformal' but calibration_scores_ is missing")
        if scores is not None:
            if scores.shape[0] < 1:
                state.fail("calibration_scores_ is empty")
            if np.any(np.diff(scores) < 0):
                state.fail("calibration_scores_ is not sorted")
        if rule == "contamination" and self.contamination is None:
            state.fail("threshold_rule_ is 'contamination' but the contamination "
                       "parameter is None")
