"""Conformal / CV+ ranking (gaussood._conformal): the tie rule, and batch invariance."""

import warnings

import numpy as np
import pytest

from gaussood import GaussianScorer, NormShellScorer
from gaussood._conformal import (TIE_RTOL, conformal_offset, conformal_pvalues,
                                 conformal_rank_limit, tie_floors)
from gaussood._registry import registered_scorers


def test_scores_within_the_tolerance_tie():
    cal = np.array([-40.0, -30.0, -20.0, -10.0])           # scale: max |c| = 40
    eps = TIE_RTOL * 40.0
    p = conformal_pvalues(cal, [-20.0, -20.0 - 0.5 * eps, -20.0 - 2 * eps, -20.0 + eps])
    np.testing.assert_array_equal(p * 5, [4, 4, 3, 4])      # (1 + #{c <= s}) / (m + 1)
    np.testing.assert_array_equal(tie_floors(cal), cal - eps)


def test_offset_and_pvalue_agree_at_the_boundary():
    """predict flags (s < offset) exactly when p <= alpha, on both sides of each tie."""
    rng = np.random.default_rng(0)
    cal = np.sort(rng.normal(size=199) * 3 - 10)
    for alpha in (0.01, 0.05, 0.2):
        offset = conformal_offset(cal, alpha)
        J = conformal_rank_limit(cal.shape[0], alpha)
        near = cal[J - 1] + TIE_RTOL * 13 * np.array([-3, -1.5, -1, -0.999, -0.5, 0, 0.5, 1])
        s = np.concatenate([near, np.nextafter(offset, [-np.inf, np.inf]), [offset], cal])
        flagged_by_p = conformal_pvalues(cal, s) <= alpha
        np.testing.assert_array_equal(s < offset, flagged_by_p)


def _cases():
    cases = [(name, cls, {}) for name, cls in registered_scorers().items()
             if cls.__module__.startswith("gaussood.")]
    cases += [("gaussian-cv+", GaussianScorer, {"calibration": "cv+", "random_state": 0}),
              ("shell-cv+", NormShellScorer, {"calibration": "cv+", "random_state": 0}),
              ("gaussian-labels", GaussianScorer, {"labels": True}),      # the case
              ("gaussian-conformal", GaussianScorer, {"calibration": "conformal"})]
    return cases


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,cls,params", _cases(), ids=[c[0] for c in _cases()])
def test_row_alone_equals_row_in_batch(name, cls, params, dtype):
    """A row scored alone gets what it gets in a batch, in any order (training rows too).

    Under CV+ a training row's fold-model score is one of that fold's calibration
    scores, recomputed: alone and in a batch BLAS rounds it differently, and an
    exact comparison moved its p-value and decision by 1 / (m + 1) (issue 21).
    """
    rng = np.random.default_rng(21)
    n, d = 300, 8                                # d / n > 0.02: GaussianScorer "auto" is cv+
    X = (rng.normal(size=(n, d)) * np.linspace(0.5, 3, d)).astype(dtype)
    params = dict(params)
    labels = rng.integers(0, 3, n) if params.pop("labels", False) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scorer = cls(**params).fit(X) if labels is None else cls(**params).fit(X, labels)
    rows = np.concatenate([X, (rng.normal(size=(60, d)) * 2.5).astype(dtype)])
    batch = scorer.score_pvalue_decision(rows)
    order = rng.permutation(rows.shape[0])
    shuffled = scorer.score_pvalue_decision(rows[order])
    alone = [scorer.score_pvalue_decision(rows[i:i + 1]) for i in range(rows.shape[0])]
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for results in (alone, None):
        if results is None:
            got = [shuffled.score[np.argsort(order)], shuffled.pvalue[np.argsort(order)],
                   shuffled.decision[np.argsort(order)]]
        else:
            got = [np.concatenate([r[k] for r in results]) for k in range(3)]
        np.testing.assert_allclose(got[0], batch.score, rtol=rtol)
        np.testing.assert_array_equal(got[2] < 0, batch.decision < 0)         # predict
        if scorer.calibration_ in ("conformal", "cv+"):                       # ranks: exact
            np.testing.assert_array_equal(got[1], batch.pvalue)
        else:
            np.testing.assert_allclose(got[1], batch.pvalue, rtol=rtol)
        if scorer.calibration_ == "cv+" and scorer.threshold_rule_ == "alpha":
            np.testing.assert_array_equal(got[2], batch.decision)
        else:
            np.testing.assert_allclose(got[2], batch.decision, rtol=rtol,
                                       atol=rtol * np.abs(batch.score).max())
    one = np.array([scorer.predict(rows[i:i + 1])[0] for i in range(n)])
    np.testing.assert_array_equal(one, scorer.predict(X))
    if name in ("gaussian", "gaussian-cv+", "gaussian-labels"):
        assert scorer.calibration_ == "cv+"
