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
set given to ``calibrate`` (split conformal, exact in finite samples). Under
"cv+" (CV+, Barber et al. 2021) a new sample is scored by every fold model too,
and each fold model's score is ranked among the out-of-fold scores of its own
fold; ``predict`` and ``decision_function`` then follow that p-value, not
``score_samples - offset_`` (see ``BaseScorer.score_pvalue_decision``).
The two never share a parameter; give
at most one of them (``alpha`` defaults to 0.05 when neither is given).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.model_selection import KFold
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _space
# re-exported: these names were defined here before the registry and the conformal
# maths moved to their own modules
from ._conformal import (CVPLUS_MIN_FEATURE_RATIO, conformal_counts,  # noqa: F401
                         conformal_offset, conformal_pvalues, conformal_rank_limit,
                         cvplus_floors, cvplus_pvalue_decision, drop_repeats,
                         duplicate_groups, fold_of_sorted, repeat_folds)
from ._moments import fold_moments  # noqa: F401
from ._registry import (_REGISTRY, _register, _register_composite,  # noqa: F401
                        _short_name, registered_scorers, scorer_class)
from ._threads import fit_threads
from ._validation import FittedState, check_features, raise_nonfinite

DEFAULT_ALPHA = 0.05


class ScoreResult(NamedTuple):
    """What ``BaseScorer.score_pvalue_decision`` returns, one value per row of X."""

    score: np.ndarray      # score_samples(X)
    pvalue: np.ndarray     # pvalue(X)
    decision: np.ndarray   # decision_function(X): negative exactly for flagged rows

    @property
    def flagged(self) -> np.ndarray:
        """``predict(X) == -1``."""
        return self.decision < 0

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
    plain arrays); ``composite=True`` marks a scorer whose fitted state is a list of
    fitted scorers, ``scorers_`` (templates: the ``scorers`` parameter), saved with
    them but kept out of the plain scorers' registry (``PValueCombination``).
    Set ``_fit_uses_labels = True`` when ``fit(X, y)`` uses ``y``.
    """

    _calibrations: tuple = ("conformal",)
    _fit_uses_labels: bool = False
    _l2_inside: bool = False  # the scorer L2-normalises by itself (KNNScorer)
    _composite: bool = False  # made of fitted scorers, scorers_ (PValueCombination)
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
        "normalize": [StrOptions(set(_space.SPACES)), None],
    }
    _parameter_hints: dict = {
        "chunk_size": "it is the number of rows scored at a time; there is no 'no chunking' "
                      "value: pass a large number such as 10**9",
    }

    def __init_subclass__(cls, *, name: str | None = None, register: bool = True,
                          composite: bool | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        # the calibration choices are declared once, by ``_calibrations``
        cls._parameter_constraints = {**cls._parameter_constraints,
                                      "calibration": [StrOptions({"auto", *cls._calibrations})]}
        if composite is not None:  # inherited by subclasses
            cls._composite = composite
        if register and cls._composite:
            _register_composite(cls)
        elif register:
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

    def _validate_fit_params(self):
        """Every parameter check of a fit path (``_fit_scope`` runs it once)."""
        self._validate_params()
        if self.alpha is not None and self.contamination is not None:
            raise ValueError(
                "Give either alpha (target false-alarm rate on in-distribution data) or "
                "contamination (fraction of training samples to flag), not both.")

    def _threshold(self):
        """(rule, alpha) from validated parameters."""
        rule = "alpha" if self.contamination is None else "contamination"
        alpha = DEFAULT_ALPHA if self.alpha is None else float(self.alpha)
        return rule, alpha

    def _resolve_threshold(self):
        """Validate the parameters, then ``_threshold()`` (outside ``_fit_scope``)."""
        self._validate_fit_params()
        return self._threshold()

    @contextlib.contextmanager
    def _fit_scope(self):
        """The one entry of every fit path (``fit``, ``fit_out_of_fold``, ``partial_fit``):
        validates the parameters once, yields ``(rule, alpha)``, and restores the
        estimator's previous state if the block raises (as scikit-learn's ``_fit_context``).
        """
        with atomic_update(self):
            yield self._resolve_threshold()

    def _auto_calibration(self, n_samples: int, n_features: int, y=None) -> str:
        return self._calibrations[0]

    # --------------------------------------------------------------------- fit
    def fit(self, X, y=None):
        """Fit the scorer on in-distribution samples ``X`` of shape (n, d).

        Returns self. On any error the estimator keeps its previous state.
        """
        with self._fit_scope() as threshold:
            self._fit(X, y, threshold, out_of_fold=False, moments_cache=None)
        return self

    def fit_out_of_fold(self, X, y=None, *, fold_moments: dict | None = None) -> np.ndarray:
        """Fit as ``fit(X, y)`` does and return each row's out-of-fold score, shape (n,).

        ``scores[i]`` is the score of row ``i`` of ``X`` by a model that did not see
        it (the one behind the cross-conformal calibration; NaN for a row that has
        none, as ``KNNScorer``'s rows beyond its calibration rows). They are
        computed whatever the calibration: a parametric scorer keeps its law (its
        fitted state equals a plain fit's up to rounding) and pays for the fold
        fits. They are never stored on the scorer.

        ``fold_moments``: a dict owned by the caller, shared by scorers fitted on
        the same array ``X`` (``PValueCombination`` passes one to its components):
        ``GaussianScorer`` (one component) and ``NormShellScorer`` compute the
        same moments of each calibration fold, and with the same
        ``calibration_folds`` and an integer ``random_state`` their folds are the
        same rows, so the second one reuses the first one's moments. None: no
        sharing. The results do not depend on it.
        """
        with self._fit_scope() as threshold:
            return self._fit(X, y, threshold, out_of_fold=True, moments_cache=fold_moments)

    def _fit(self, X, y, threshold, *, out_of_fold, moments_cache):
        """The body of ``fit`` and ``fit_out_of_fold`` (inside ``_fit_scope``)."""
        self._clear_fitted()
        X = check_features(self, X, reset=True, ensure_min_samples=2)
        self._check_space()
        self.__dict__.update(_space.fit_space(X, self._normalize()))
        with fit_threads(*X.shape):
            return self._fit_checked(self._to_space(X), y, threshold, out_of_fold,
                                     moments_cache)

    # ------------------------------------------------------------ feature space
    def _normalize(self):
        """The feature space: None, "l2" or "center-l2" (``normalize``)."""
        return _space.space_of(getattr(self, "normalize", None))

    def _check_space(self):
        """Refuse a space the scorer cannot work in (subclasses override)."""

    def _to_space(self, X):
        """Validated rows of X in the scorer's feature space (``normalize``)."""
        return _space.to_space(X, self._normalize(), getattr(self, _space.CENTER, None),
                               l2=not self._l2_inside)

    def _fused_space(self) -> bool:  # True: _score_chunk gets raw rows, normalises itself
        return False

    def _fit_checked(self, X, y, threshold, out_of_fold, moments_cache):
        """Fit on validated ``X``; the out-of-fold scores if ``out_of_fold``, else None."""
        rule, alpha = threshold
        n = X.shape[0]
        calibration = self.calibration
        if calibration == "auto":
            calibration = self._auto_calibration(n, X.shape[1], y)
        calibration_scores = scores = None
        if calibration in ("conformal", "cv+") or out_of_fold:
            state, scores, folds = self._fit_with_calibration(X, y, moments_cache=moments_cache)
            scores = drop_repeats(scores, duplicate_groups(X), stacklevel=5)
            if calibration in ("conformal", "cv+"):  # NaN: a row without one
                calibration_scores = np.sort(scores[~np.isnan(scores)])
        else:
            state = self._fit_state(X, y)
        self.__dict__.update(state)
        self.alpha_ = alpha
        self.threshold_rule_ = rule
        self.calibration_ = calibration
        self.calibration_scores_ = calibration_scores
        if calibration == "cv+":
            self._keep_folds(scores, folds)
        if rule == "contamination":
            self.offset_ = float(np.percentile(self._evaluate(X, in_space=True).score,
                                               100.0 * self.contamination))
        else:
            self.offset_ = self._alpha_offset(alpha)
        return scores if out_of_fold else None

    def _folds(self, X):
        """[(fit rows, held-out rows), ...]: ``calibration_folds`` shuffled folds; the
        copies of a repeated row share a fold (``_conformal.repeat_folds``)."""
        kfold = KFold(min(self.calibration_folds, X.shape[0]), shuffle=True,
                      random_state=check_random_state(self.random_state))
        groups = duplicate_groups(X)
        if groups is None:
            return list(kfold.split(X))
        return repeat_folds(groups, kfold)

    def _fit_with_calibration(self, X, y, *, moments_cache=None):
        """(fitted state, out-of-fold score of every training row in row order, folds).

        Each fold is scored by a model fitted without it (cross-conformal).
        ``folds`` is a list of (rows of the fold, state of the model fitted
        without them), the fold models that CV+ keeps; None where there are no
        such models (leave-one-out k-NN, combinations). Subclasses override
        this when they can share work with the full fit; a row without an
        out-of-fold score gets NaN (it is left out of the calibration scores).
        ``moments_cache``: see ``fit_out_of_fold``'s ``fold_moments``.
        """
        folds = self._folds(X)
        fold_states = []
        with warnings.catch_warnings():  # the full fit warns; its folds need not
            warnings.simplefilter("ignore", UserWarning)
            for train, _ in folds:
                fold_states.append(
                    self._fit_state(X[train], None if y is None else np.asarray(y)[train]))
        return self._fit_state(X, y), *self._score_folds(X, folds, fold_states)

    def _score_folds(self, X, folds, fold_states):
        """(out-of-fold scores in row order, [(test rows, fold state), ...])."""
        scores = np.full(X.shape[0], np.nan)
        for (_, test), state in zip(folds, fold_states):
            scores[test] = self._fold_model(state)._evaluate(X[test], in_space=True).score
        return scores, [(test, state) for (_, test), state in zip(folds, fold_states)]

    # CV+ fitted state: ``fold_states_`` (one dict per fold model) and
    # ``calibration_fold_`` (which fold model scored each calibration score); both
    # exist only while ``calibration_ == "cv+"``.
    _FOLD_ATTRIBUTES = ("fold_states_", "calibration_fold_")

    # fitted attributes a fold model shares with the full model (set by ``fit``, not
    # by ``_fit_state``); every other one comes from the fold's own state
    _SHARED_FITTED = ("n_features_in_", "feature_names_in_", "alpha_", "threshold_rule_",
                      "calibration_", "calibration_scores_", "offset_", _space.CENTER)

    def _fold_model(self, state):
        """A scorer with this one's parameters and threshold, fitted state ``state``."""
        model = object.__new__(type(self))
        model.__dict__.update({k: v for k, v in self.__dict__.items()
                               if not k.endswith("_") or k in self._SHARED_FITTED})
        model.__dict__.update(state)
        return model

    def _fold_state(self, state) -> dict:
        """What CV+ keeps of a fold fit: the state minus the merge moments (only
        ``partial_fit`` reads them, and they are the bulk: K x d x d per fold)."""
        return {k: v for k, v in state.items() if not k.startswith("moment_")}

    def _keep_folds(self, out_of_fold, folds):
        if folds is None:
            raise ValueError(f"{type(self).__name__} has no fold models to keep for "
                             "calibration='cv+'; use calibration='conformal'.")
        self.calibration_fold_ = fold_of_sorted(out_of_fold, [test for test, _ in folds])
        self.fold_states_ = [self._fold_state(state) for _, state in folds]

    def _drop_folds(self):
        for key in self._FOLD_ATTRIBUTES:
            self.__dict__.pop(key, None)

    def _clear_fitted(self):
        for key in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")]:
            delattr(self, key)
        for key in [k for k in vars(self) if k.startswith("_cache")]:
            delattr(self, key)

    def _alpha_offset(self, alpha: float) -> float:
        if self.calibration_ == "cv+":  # no threshold on score_samples: predict uses p-values
            conformal_rank_limit(self.calibration_scores_.shape[0], alpha)  # warns if too few
            return math.nan
        if self.calibration_ == "conformal":
            return conformal_offset(self.calibration_scores_, alpha)
        return float(self._null_offset(alpha))

    def calibrate(self, X):
        """Calibrate p-values and the alpha threshold on held-out ID samples.

        Switches ``calibration_`` to ``"conformal"`` (from any calibration, "cv+"
        included: its fold models are dropped): p-values become
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
            self._drop_folds()
            if self.threshold_rule_ == "alpha":
                self.offset_ = conformal_offset(scores, self.alpha_)
        return self

    # ----------------------------------------------------------------- scoring
    def _scoring_cache(self, dtype) -> dict:
        return {}

    def score_samples(self, X) -> np.ndarray:
        """Score of each sample, shape (n,): higher means more in-distribution.

        Works in chunks of ``chunk_size`` rows, so the extra memory is
        O(chunk_size x d) whatever the number of rows. Always the score of the
        model fitted on all the training data (under "cv+" too).
        """
        return self._evaluate(X).score

    def score_pvalue_decision(self, X) -> ScoreResult:
        """Scores, p-values and decisions of X in one chunked pass.

        Returns ``ScoreResult(score, pvalue, decision)``, each of shape (n,):
        ``score_samples(X)``, ``pvalue(X)`` and ``decision_function(X)``
        (``.flagged`` is ``predict(X) == -1``), each row scored once by the
        final model (and, under "cv+", once by each fold model). Use it
        instead of ``score_samples`` followed by ``pvalue_from_scores`` /
        ``decision_from_scores``, which cannot work under "cv+".
        """
        return self._evaluate(X, pvalue=True, decision=True)

    def _cvplus(self) -> bool:
        return getattr(self, "calibration_", None) == "cv+"  # mid-fit: not yet set

    def _evaluate(self, X, *, pvalue=False, decision=False, in_space=False) -> ScoreResult:
        """The chunked pass behind every scoring method (None for what is not asked).

        ``in_space``: X is already in the scorer's feature space (fit's own rows).
        """
        check_is_fitted(self)
        self._validate_params()  # set_params may have changed chunk_size since the fit
        X = check_features(self, X, reset=False, ensure_all_finite=False)
        n = X.shape[0]
        ranked = self._cvplus() and (pvalue or (decision and self.threshold_rule_ == "alpha"))
        models = [self] + ([self._fold_model(s) for s in self.fold_states_] if ranked else [])
        fused = not in_space and self._fused_space()   # the scorer normalises itself
        caches = [{**model._scoring_cache(X.dtype), _space.FUSED_L2: fused} for model in models]
        if ranked:  # each fold model's score is ranked among its own fold's scores
            floors = cvplus_floors(self.calibration_scores_, self.calibration_fold_,
                                   len(models) - 1)
            counts = np.zeros(n, dtype=np.int64)
        score = np.full(n, np.nan)  # never uninitialised memory
        step = self._scoring_step(n)
        for start in range(0, n, step):
            chunk = X[start:start + step]
            if not (in_space or fused):
                chunk = self._to_space(chunk)
            for k, (model, cache) in enumerate(zip(models, caches)):
                with np.errstate(over="ignore", invalid="ignore"):  # checked just below
                    values = model._score_chunk(chunk, cache)
                if not np.all(np.isfinite(values)):
                    raise_nonfinite(chunk)
                if k == 0:
                    score[start:start + step] = values
                else:
                    counts[start:start + step] += conformal_counts(floors[k - 1], values)
        p = dec = None
        if ranked:  # flagged exactly when p <= alpha, as conformal_offset
            by_pvalue = decision and self.threshold_rule_ == "alpha"
            p, dec = cvplus_pvalue_decision(counts, self.calibration_scores_.shape[0],
                                            self.alpha_ if by_pvalue else None)
        if pvalue and p is None:
            p = self.pvalue_from_scores(score)
        if decision and dec is None:
            dec = score - self.offset_
        return ScoreResult(score, p if pvalue else None, dec)

    def _scoring_step(self, n: int) -> int:
        """Rows per chunk of ``_evaluate`` (``chunk_size``)."""
        return int(self.chunk_size)

    def decision_function(self, X) -> np.ndarray:
        """Negative exactly for flagged samples, shape (n,).

        ``score_samples(X) - offset_``, except under "cv+" with the alpha rule:
        there it is ``pvalue(X) - (J + 1/2) / (m + 1)`` with J = floor(alpha_
        (m + 1)) and m calibration scores, negative exactly when the CV+
        p-value is <= ``alpha_`` (``offset_`` is NaN then).
        """
        return self._evaluate(X, decision=True).decision

    def decision_from_scores(self, scores) -> np.ndarray:
        """``decision_function`` of scores already computed by ``score_samples``.

        A sample is flagged (``predict == -1``) exactly when this is negative.
        Not available under "cv+" with the alpha rule (the decision needs the
        fold models' scores): use ``score_pvalue_decision(X)``.
        """
        check_is_fitted(self)
        if self._cvplus() and self.threshold_rule_ == "alpha":
            raise ValueError(self._from_scores_error("decision_from_scores"))
        return np.asarray(scores, dtype=np.float64) - self.offset_

    def _from_scores_error(self, name):
        return (f"{name} cannot work under calibration_='cv+': the CV+ p-value and decision "
                "of a sample need its scores by the fold models, not only the full "
                "model's score. Call score_pvalue_decision(X) (scores, p-values and "
                "decisions in one pass), or pvalue(X) / decision_function(X) / predict(X).")

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
        for conformal and CV+ p-values), under the alpha rule. Under "cv+":
        (1 + sum_k #{i in fold k : c_i <= s_k(x)}) / (m + 1), s_k the score of
        fold model k and c_i the out-of-fold calibration scores.
        """
        return self._evaluate(X, pvalue=True).pvalue

    def pvalue_from_scores(self, scores) -> np.ndarray:
        """P-values of scores already computed by ``score_samples`` (saves a pass).

        Not available under "cv+": use ``score_pvalue_decision(X)``.
        """
        check_is_fitted(self)
        if self._cvplus():
            raise ValueError(self._from_scores_error("pvalue_from_scores"))
        scores = np.asarray(scores, dtype=np.float64)
        if self.calibration_ == "conformal":
            if self.calibration_scores_ is None:
                raise ValueError("No calibration scores: call calibrate(X_cal) first.")
            return conformal_pvalues(self.calibration_scores_, scores)
        return self._null_pvalue(scores)

    def _null_pvalue(self, scores):  # pragma: no cover - overridden where a law exists
        raise NotImplementedError

    def _null_offset(self, alpha):  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------- persistence
    # persistence.py depends on the registry (_registry.py) alone, never on this
    # module, so the deferred imports below close no import cycle.
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
        if self._normalize() == "center-l2":
            state.array(_space.CENTER, ("d",))
        elif hasattr(self, _space.CENTER):
            state.fail(f"{_space.CENTER} is present but normalize is {self._normalize()!r}, "
                       "not 'center-l2'")
        rule = state.choice("threshold_rule_", {"alpha", "contamination"})
        state.number("alpha_", low=0.0, high=1.0)
        if not 0.0 < self.alpha_ < 1.0:
            state.fail(f"alpha_ is {self.alpha_!r}; it must lie in (0, 1)")
        calibration = state.choice("calibration_", set(self._calibrations))
        if calibration == "cv+" and rule == "alpha":  # predict follows the CV+ p-value
            offset = state.get("offset_")
            if not (isinstance(offset, Real) and math.isnan(offset)):
                state.fail(f"offset_ is {offset!r}; under calibration_ 'cv+' with the alpha "
                           "rule it must be NaN")
        else:  # -inf: too few calibration scores to flag anything at this alpha
            state.number("offset_", allow=(-np.inf,))
        scores = state.array("calibration_scores_", ("m",), none_ok=True)
        if scores is None and calibration in ("conformal", "cv+"):
            state.fail(f"calibration_ is {calibration!r} but calibration_scores_ is missing")
        if scores is not None:
            if scores.shape[0] < 1:
                state.fail("calibration_scores_ is empty")
            if np.any(np.diff(scores) < 0):
                state.fail("calibration_scores_ is not sorted")
        if rule == "contamination" and self.contamination is None:
            state.fail("threshold_rule_ is 'contamination' but the contamination "
                       "parameter is None")
        if calibration == "cv+" and not state.fold:
            self._check_folds(state)
        elif not state.fold:
            for name in self._FOLD_ATTRIBUTES:
                if hasattr(self, name):
                    state.fail(f"{name} is present but calibration_ is {calibration!r}, "
                               "not 'cv+'")

    def _check_folds(self, state: FittedState) -> None:
        """CV+: one fold index per calibration score, and each fold state checked as
        the fitted state of its own fold model."""
        folds = state.get("fold_states_")
        if not isinstance(folds, list) or len(folds) < 2 or not all(
                isinstance(fold, dict) for fold in folds):
            state.fail("fold_states_ must be a list of at least 2 fold states (dicts)")
        which = state.array("calibration_fold_", ("m",), kind="iu")
        if which.size and (which.min() < 0 or which.max() >= len(folds)):
            state.fail(f"calibration_fold_ holds fold numbers outside 0..{len(folds) - 1}")
        for k, fold in enumerate(folds):
            model = self._fold_model(fold)
            try:
                model._check_fitted_state(FittedState(model, fold=True))
            except ValueError as exc:
                state.fail(f"fold_states_[{k}]: {exc}")
