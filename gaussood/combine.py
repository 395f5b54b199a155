"""Combining scorers through their p-values (e.g. Gaussian + norm shell)."""

from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.utils._param_validation import StrOptions

from ._base import BaseScorer, sharing_fold_moments

METHODS = ("fisher", "min")


class PValueCombination(BaseScorer, register=False):  # holds fitted scorers, not arrays
    """One OOD score from several scorers' p-values.

    The Gaussian (Mahalanobis) score and the norm-shell score see different
    departures: a sample can sit at a typical Mahalanobis distance yet off the
    shell, or the reverse. Each component is fitted on the same data and
    returns a p-value p_i; the combined score is

        "fisher": sum_i log p_i          (Fisher's statistic, negated)
        "min":    log min_i p_i          (the most alarmed component)

    higher = more in-distribution, as every gaussood score. The components'
    p-values are dependent, so Fisher's chi-square law does not hold; the
    combined threshold and p-values are therefore conformal: cross-conformal
    out-of-fold scores in ``fit`` (each fold refits every component, so a fit
    costs ``calibration_folds + 1`` component fits; components fitted on the same
    folds, such as the default pair with an integer ``random_state``, compute
    each fold's moments once), or split conformal with ``calibrate(X_cal)``.

    Parameters
    ----------
    scorers : list of gaussood scorers, default=None
        Unfitted templates (cloned in ``fit``). None means
        ``[GaussianScorer(), NormShellScorer()]``.
    method : {"fisher", "min"}, default="fisher"
    alpha, contamination, calibration_folds, random_state, chunk_size
        As in ``GaussianScorer``; ``calibration`` is always "conformal".

    Attributes
    ----------
    scorers_ : list of fitted scorers
    calibration_scores_ : ndarray   sorted out-of-fold combined scores.

    Notes
    -----
    Conformal component p-values bottom out at 1 / (m + 1), so every input beyond
    all calibration scores of every component gets the same combined score: far-OOD
    inputs tie with each other (not with typical ID inputs). Parametric components
    (``calibration="chi2"``, ``"f"``, ``"shell"``) keep resolving them, down to
    p-values of about 1e-308. Labels passed to ``fit(X, y)`` reach every component (a class-conditional
    ``GaussianScorer`` uses them). Combined scorers are not saved by
    ``gaussood.save``: save the components and refit the combination.

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
    }
    _parameter_hints = {
        **BaseScorer._parameter_hints,
        "scorers": "wrap a single scorer in a list: PValueCombination([scorer, ...])",
    }

    def __init__(self, scorers=None, *, method="fisher", alpha=None, contamination=None,
                 calibration="auto", calibration_folds=5, random_state=None, chunk_size=4096):
        self.scorers = scorers
        self.method = method
        self.alpha = alpha
        self.contamination = contamination
        self.calibration = calibration
        self.calibration_folds = calibration_folds
        self.random_state = random_state
        self.chunk_size = chunk_size

    def _templates(self):
        self._validate_params()
        if self.scorers is None:
            from .gaussian import GaussianScorer
            from .norm_shell import NormShellScorer
            return [GaussianScorer(random_state=self.random_state),
                    NormShellScorer(random_state=self.random_state)]
        scorers = list(self.scorers)
        if len(scorers) < 1 or not all(isinstance(s, BaseScorer) for s in scorers):
            raise TypeError("scorers must be a non-empty list of gaussood scorers "
                            "(GaussianScorer, NormShellScorer, KNNScorer, ...).")
        return scorers

    def _fit_state(self, X, y=None):
        fitted = []
        with sharing_fold_moments():  # components on the same folds: moments computed once
            for template in self._templates():
                scorer = clone(template)
                fitted.append(scorer.fit(X) if y is None else scorer.fit(X, y))
        return {"scorers_": fitted}

    def _score_chunk(self, X, cache):
        # a parametric p-value can underflow to 0 far out: floor it so the score stays finite
        tiny = np.finfo(np.float64).tiny
        logs = np.stack([np.log(np.maximum(s.pvalue(X), tiny)) for s in self.scorers_])
        return logs.sum(axis=0) if self.method == "fisher" else logs.min(axis=0)

    def save(self, path) -> None:
        """Not supported: save each fitted component (``scorers_``) and refit."""
        raise TypeError("PValueCombination cannot be saved: save its fitted components "
                        "(scorers_) with gaussood.save and refit the combination.")

    def component_pvalues(self, X) -> np.ndarray:
        """P-value of each component, shape (n_scorers, n)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        return np.stack([s.pvalue(X) for s in self.scorers_])
