"""Combining scorers through their p-values (e.g. Gaussian + norm shell)."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import StrOptions

from ._base import BaseScorer
from ._validation import check_features

METHODS = ("fisher", "min")


def _training_pvalues(scorer, out_of_fold):
    """P-value of each training row from its out-of-fold score (NaN where it has none).

    What a fresh sample with that score would get, the row itself left out: for
    conformal calibration, the rank of the score among the m calibration scores
    (which are these out-of-fold scores, the row's own included) over m, i.e.
    (1 + #{others <= s}) / ((m - 1) + 1); for a parametric law, its p-value.
    Exact ties only: these are the stored scores ranked among themselves, with no
    recomputation whose rounding a tolerance would absorb (``_conformal.TIE_RTOL``).
    """
    p = np.full(out_of_fold.shape, np.nan)
    has = ~np.isnan(out_of_fold)
    if scorer.calibration_ in ("conformal", "cv+"):  # CV+: the same out-of-fold scores
        cal = scorer.calibration_scores_
        p[has] = np.searchsorted(cal, out_of_fold[has], side="right") / cal.shape[0]
    else:
        p[has] = scorer.pvalue_from_scores(out_of_fold[has])
    return p


class PValueCombination(BaseScorer, composite=True):  # holds fitted scorers (scorers_)
    """One OOD score from several scorers' p-values.

    The Gaussian (Mahalanobis) score and the norm-shell score see different
    departures: a sample can sit at a typical Mahalanobis distance yet off the
    shell, or the reverse. Each component is fitted on the same data and
    returns a p-value p_i; the combined score is

        "fisher": sum_i log p_i          (Fisher's statistic, negated)
        "min":    log min_i p_i          (the most alarmed component)

    higher = more in-distribution, as every gaussood score. The components'
    p-values are dependent, so Fisher's chi-square law does not hold; the
    combined threshold and p-values are therefore conformal.

    Calibration in ``fit`` (cross-conformal, Vovk 2015; jackknife+, Barber et
    al. 2021): each component is fitted once, on all the data, with its own
    out-of-fold scores (``calibration_folds`` folds, leave-one-out for
    ``KNNScorer``), which it computes even when its own calibration is
    parametric. Training row i gets from component j the p-value a fresh sample
    with its out-of-fold score s_ij would get, against the other rows: a
    conformal component gives #{k : s_kj <= s_ij} / m_j, its rank among its m_j
    out-of-fold scores (the conformal p-value against the other m_j - 1); a
    parametric one gives its law's p-value of s_ij. These combine as above
    into n calibration statistics, and the combined p-value of a sample is its
    conformal p-value against them. The out-of-fold score of a training row is
    a score by a model that did not see it, as a fresh sample's is, so the
    calibration statistics mimic fresh ones (measured: 4-6% flagged at alpha =
    5% on Gaussian and Student t(3) data, ``tests/test_combine.py``). As for
    any cross-conformal method there is no exact finite-sample guarantee: the
    fold models see a fraction (1 - 1/calibration_folds) of the data, which
    makes the calibration slightly conservative. A fit costs the components'
    fits (plus their fold fits if parametric); components seeded alike share
    their folds, so each fold's moments are computed once. ``calibrate(X_cal)``
    switches to split conformal, exact in finite samples.

    Parameters
    ----------
    scorers : list of gaussood scorers, default=None
        Unfitted templates (cloned in ``fit``). None means
        ``[GaussianScorer(), NormShellScorer()]`` with this combination's
        ``calibration_folds``.
    method : {"fisher", "min"}, default="fisher"
    alpha, contamination, chunk_size
        As in ``GaussianScorer``; ``calibration`` is always "conformal". The
        components score in chunks of their own ``chunk_size``.
    calibration_folds : int, default=5
        Folds of the default components' out-of-fold scores (given components
        keep their own).
    random_state : int, RandomState or None, default=None
        Seeds the components whose ``random_state`` is None, all with one seed,
        so they share their folds (and each fold's moments are computed once).
    columns : list of (start, stop) or None, default=None
        The columns of X each scorer sees: scorer i is fitted and scores on
        ``X[:, start_i:stop_i]`` (features of several layers side by side, as
        ``OODFilter(layer=[...])`` builds them). None: every scorer sees all of X.

    Attributes
    ----------
    scorers_ : list of fitted scorers
    calibration_scores_ : ndarray   sorted combined statistics of the training rows
        (from their out-of-fold scores; rows a component has no out-of-fold score
        for, such as ``KNNScorer``'s beyond 20,000 rows, are left out).

    Notes
    -----
    Conformal component p-values bottom out at 1 / (m + 1), so every input beyond
    all calibration scores of every component gets the same combined score: far-OOD
    inputs tie with each other (not with typical ID inputs). Parametric components
    (``calibration="chi2"``, ``"f"``, ``"shell"``) keep resolving them, down to
    p-values of about 1e-308. Labels passed to ``fit(X, y)`` reach every component (a class-conditional
    ``GaussianScorer`` uses them, and its ``n_clusters`` is then set aside without the
    warning a lone scorer gives). ``save`` / ``gaussood.load`` keep a fitted
    combination with its components in one file, pickle-free (``docs/persistence.md``).

    References: V. Vovk, "Cross-conformal predictors", Annals of Mathematics and
    Artificial Intelligence 74 (2015); R. F. Barber, E. J. Candes, A. Ramdas,
    R. J. Tibshirani, "Predictive inference with the jackknife+", Annals of
    Statistics 49 (2021).

    Examples
    --------
    >>> import numpy as np
    >>> from gaussood import PValueCombination
    >>> rng = np.random.default_rng(0)
    >>> combo = PValueCombination(random_state=0).fit(rng.normal(size=(2000, 16)))
    >>> combo.predict(np.full((1, 16), 4.0))  # far from the data
    array([-1])
    """

    _calibrations = ("conformal",)
    _parameter_constraints = {
        **BaseScorer._parameter_constraints,
        "scorers": [list, tuple, None],
        "method": [StrOptions(set(METHODS))],
        "columns": [list, tuple, None],
    }
    _parameter_hints = {
        **BaseScorer._parameter_hints,
        "scorers": "wrap a single scorer in a list: PValueCombination([scorer, ...])",
    }

    def __init__(self, scorers=None, *, method="fisher", alpha=None, contamination=None,
                 calibration="auto", calibration_folds=5, random_state=None, chunk_size=4096,
                 columns=None):
        self.scorers = scorers
        self.method = method
        self.columns = columns
        self.alpha = alpha
        self.contamination = contamination
        self.calibration = calibration
        self.calibration_folds = calibration_folds
        self.random_state = random_state
        self.chunk_size = chunk_size

    def _templates(self):
        if self.scorers is None:
            from .gaussian import GaussianScorer
            from .norm_shell import NormShellScorer
            return [GaussianScorer(calibration_folds=self.calibration_folds),
                    NormShellScorer(calibration_folds=self.calibration_folds)]
        scorers = list(self.scorers)
        if len(scorers) < 1 or not all(isinstance(s, BaseScorer) for s in scorers):
            raise TypeError("scorers must be a non-empty list of gaussood scorers "
                            "(GaussianScorer, NormShellScorer, KNNScorer, ...).")
        return scorers

    def _column_blocks(self, n_scorers, n_features):
        """[(start, stop), ...] of ``columns``, checked (None: all columns for each)."""
        if self.columns is None:
            return None
        blocks = list(self.columns)
        ok = len(blocks) == n_scorers and all(
            isinstance(b, (list, tuple)) and len(b) == 2
            and all(isinstance(i, Integral) and not isinstance(i, bool) for i in b)
            and 0 <= b[0] < b[1] <= n_features for b in blocks)
        if not ok:
            raise ValueError(f"columns must hold one (start, stop) pair per scorer ({n_scorers})"
                             f" with 0 <= start < stop <= {n_features} (the features); got "
                             f"{self.columns!r:.200}.")
        return [(int(a), int(b)) for a, b in blocks]

    def _parts(self, X, n_scorers):
        """What each component sees of X (its ``columns`` block, or all of X)."""
        blocks = self._column_blocks(n_scorers, X.shape[1])
        return [X] * n_scorers if blocks is None else [X[:, a:b] for a, b in blocks]

    def _fit_components(self, X, y, moments_cache):
        """Fitted clones of the templates and their out-of-fold scores (one per scorer)."""
        scorers = [clone(template) for template in self._templates()]
        parts = self._parts(X, len(scorers))
        seed = self.random_state
        if not isinstance(seed, Integral):  # one seed for all: the same folds, shared moments
            seed = int(check_random_state(seed).randint(np.iinfo(np.int32).max))
        for scorer in scorers:  # unseeded components take it: the fit is reproducible
            params = scorer.get_params()
            if params.get("random_state", 0) is None:
                scorer.set_params(random_state=seed)
            if y is not None and params.get("n_clusters") is not None:
                scorer.set_params(n_clusters=None)  # labels win (as in the component)
        for scorer in scorers:
            kind = type(scorer)
            own_fit = kind.fit is not BaseScorer.fit
            if own_fit and kind.fit_out_of_fold is BaseScorer.fit_out_of_fold:
                raise TypeError(f"{kind.__name__} overrides fit but not fit_out_of_fold, so its "
                                "out-of-fold scores would not come from its own fit: it cannot "
                                "be a PValueCombination component.")
        # components on the same folds compute each fold's moments once: one cache for all
        cache = {} if moments_cache is None else moments_cache
        oof = [scorer.fit_out_of_fold(part, y, fold_moments=cache)
               for scorer, part in zip(scorers, parts)]
        return scorers, oof

    def _fit_state(self, X, y=None):
        return self._fit_with_calibration(X, y)[0]

    def _fit_with_calibration(self, X, y, *, moments_cache=None):
        """Components fitted once; each row's statistic from its out-of-fold scores."""
        scorers, oof = self._fit_components(X, y, moments_cache)
        pvalues = np.stack([_training_pvalues(s, scores) for s, scores in zip(scorers, oof)])
        return {"scorers_": scorers}, self._combine(pvalues), None

    def _combine(self, pvalues):
        """Combined statistic of p-values of shape (n_scorers, n); NaN stays NaN."""
        # a parametric p-value can underflow to 0 far out: floor it so the score stays finite
        logs = np.log(np.maximum(pvalues, np.finfo(np.float64).tiny))
        return logs.sum(axis=0) if self.method == "fisher" else logs.min(axis=0)

    def _scoring_step(self, n: int) -> int:
        # All rows in one step: each component is called once and scores them in its
        # own chunks of its chunk_size (memory O(chunk_size x d), plus the n x n_scorers
        # p-values), rather than once per chunk, which paid each component's validation
        # and set-up ten times on 40,000 rows. The components' chunks, and so their
        # scores, are those of a lone component.
        return max(n, 1)

    def _score_chunk(self, X, cache):
        return self._combine(self._component_pvalues(X))

    def _component_pvalues(self, X):
        return np.stack([s.pvalue(part) for s, part in zip(self.scorers_, self._parts(X, len(self.scorers_)))])

    def _check_fitted_state(self, state) -> None:
        super()._check_fitted_state(state)
        scorers = state.get("scorers_")
        if not isinstance(scorers, list) or not scorers or not all(
                isinstance(s, BaseScorer) for s in scorers):
            state.fail("scorers_ must be a non-empty list of fitted gaussood scorers")
        try:
            blocks = self._column_blocks(len(scorers), state.dims["d"])
        except ValueError as exc:
            state.fail(str(exc))
        for k, scorer in enumerate(scorers):
            d = getattr(scorer, "n_features_in_", None)
            want = state.dims["d"] if blocks is None else blocks[k][1] - blocks[k][0]
            if d != want:
                state.fail(f"scorers_[{k}] takes {d} features, the combination gives it "
                           f"{want}")
        if self.calibration_scores_ is None:
            state.fail("calibration_scores_ is missing")

    def component_pvalues(self, X) -> np.ndarray:
        """P-value of each component, shape (n_scorers, n)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        X = check_features(self, X, reset=False, ensure_all_finite=False)
        return self._component_pvalues(X)
