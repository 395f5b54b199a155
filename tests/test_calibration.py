"""False-alarm rates of the alpha thresholds on fresh in-distribution data.

Tolerance: with 20,000 fresh samples the standard error of a 5% rate is
0.15%, so [0.04, 0.06] is more than six standard errors wide on each side.
"""

import numpy as np
import pytest
from scipy import stats

from gaussood import GaussianScorer, KNNScorer, NormShellScorer
from gaussood import _base
from gaussood._base import conformal_offset
from gaussood._conformal import TIE_RTOL
from conftest import anisotropic_gaussian

N_FRESH = 20_000


@pytest.mark.parametrize("calibration", ["f", "chi2", "conformal"])
def test_gaussian_false_alarm_rate(calibration):
    rng = np.random.default_rng(7)
    d = 32
    X = anisotropic_gaussian(rng, 5000, d)
    scorer = GaussianScorer(alpha=0.05, calibration=calibration, random_state=0).fit(X)
    fresh = anisotropic_gaussian(rng, N_FRESH, d)
    flagged = scorer.predict(fresh) == -1
    assert 0.04 <= flagged.mean() <= 0.06
    # predict and the p-value agree exactly: flagged <=> p < alpha (p <= alpha for conformal)
    p = scorer.pvalue(fresh)
    np.testing.assert_array_equal(flagged, p <= 0.05 if calibration == "conformal" else p < 0.05)


def test_f_law_is_exact_where_chi2_is_not():
    """n = 3 d: the chi-square threshold over-flags, the F threshold does not."""
    rng = np.random.default_rng(3)
    d, n = 40, 120
    rates = {"f": [], "chi2": []}
    for _ in range(20):
        X = rng.normal(size=(n, d))
        fresh = rng.normal(size=(2000, d))
        for law in rates:
            scorer = GaussianScorer("empirical", alpha=0.05, calibration=law).fit(X)
            rates[law].append(np.mean(scorer.predict(fresh) == -1))
    assert 0.04 <= np.mean(rates["f"]) <= 0.06
    assert np.mean(rates["chi2"]) > 0.2  # the plug-in covariance is far too tight at n = 3 d


def test_pvalues_are_uniform_under_the_null():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(4000, 16))
    scorer = GaussianScorer("empirical", calibration="f").fit(X)
    p = scorer.pvalue(rng.normal(size=(N_FRESH, 16)))
    assert stats.kstest(p, "uniform").statistic < 0.015


def test_class_conditional_is_conservative():
    rng = np.random.default_rng(5)
    K, d = 5, 16
    means = 6.0 * rng.normal(size=(K, d))
    y = rng.integers(0, K, size=5000)
    X = means[y] + rng.normal(size=(5000, d))
    scorer = GaussianScorer("empirical", alpha=0.05).fit(X, y)
    assert scorer.calibration_ == "f"
    yf = rng.integers(0, K, size=N_FRESH)
    rate = np.mean(scorer.predict(means[yf] + rng.normal(size=(N_FRESH, d))) == -1)
    assert 0.04 <= rate <= 0.06  # well-separated classes: nearest mean = own mean


@pytest.mark.parametrize("d", [4, 128, 512])
def test_norm_shell_false_alarm_rate(d):
    """A decaying spectrum: ||x - mu||^2 is far more skewed than a scaled chi-square."""
    rng = np.random.default_rng(8)
    X = anisotropic_gaussian(rng, 5000, d)
    shell = NormShellScorer(alpha=0.05).fit(X)
    rate = np.mean(shell.predict(anisotropic_gaussian(rng, N_FRESH, d)) == -1)
    assert 0.04 <= rate <= 0.06


def test_norm_shell_whitened_false_alarm_rate():
    rng = np.random.default_rng(9)
    X = anisotropic_gaussian(rng, 5000, 64)
    shell = NormShellScorer(whiten=True, alpha=0.05).fit(X)
    np.testing.assert_allclose(shell.law_eigenvalues_, 5001 / 4934)  # (n+1)/(n-d-2): Hotelling
    rate = np.mean(shell.predict(anisotropic_gaussian(rng, N_FRESH, 64)) == -1)
    assert 0.04 <= rate <= 0.06


def test_knn_conformal_false_alarm_rate():
    rng = np.random.default_rng(10)
    X = rng.standard_t(df=3, size=(5000, 8))  # heavy tails: no Gaussian law to lean on
    knn = KNNScorer(n_neighbors=20, alpha=0.05, random_state=0).fit(X)
    rate = np.mean(knn.predict(rng.standard_t(df=3, size=(N_FRESH, 8))) == -1)
    assert 0.04 <= rate <= 0.06


def test_conformal_offset_closed_form():
    cal = np.arange(1.0, 20.0)  # m = 19: floor(0.05 * 20) - 1 = 0 -> smallest score
    tie = TIE_RTOL * 19.0       # scores within TIE_RTOL x max |c| of a c count as ties
    assert conformal_offset(cal, 0.05) == 1.0 - tie
    assert conformal_offset(cal, 0.10) == 2.0 - tie  # floor(0.1 * 20) - 1 = 1
    with pytest.warns(UserWarning, match="cannot certify"):
        assert conformal_offset(cal[:10], 0.05) == -np.inf


def test_calibrate_switches_to_conformal():
    rng = np.random.default_rng(4)
    X = rng.standard_t(df=4, size=(3000, 10))
    scorer = GaussianScorer("empirical", alpha=0.1).fit(X)
    assert scorer.calibration_ == "f"
    scorer.calibrate(rng.standard_t(df=4, size=(10_000, 10)))  # sd of the rate ~0.003
    assert scorer.calibration_ == "conformal"
    rate = np.mean(scorer.predict(rng.standard_t(df=4, size=(N_FRESH, 10))) == -1)
    assert 0.09 <= rate <= 0.11


def test_contamination_flags_that_fraction_of_training_data():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(1000, 5))
    for scorer in (GaussianScorer(contamination=0.1), NormShellScorer(contamination=0.1),
                   KNNScorer(n_neighbors=10, contamination=0.1)):
        assert np.sum(scorer.fit(X).predict(X) == -1) == 100
        assert scorer.threshold_rule_ == "contamination"


def test_alpha_and_contamination_are_exclusive():
    with pytest.raises(ValueError, match="not both"):
        GaussianScorer(alpha=0.05, contamination=0.1).fit(np.random.rand(50, 2))


def test_out_of_fold_scores_in_row_order():
    """What PValueCombination calibrates on: each row's score by a model that did not see it."""
    rng = np.random.default_rng(6)
    X = anisotropic_gaussian(rng, 2000, 6)
    gauss = GaussianScorer(random_state=0)
    shell = NormShellScorer(calibration="shell", random_state=0)       # parametric
    knn = KNNScorer(n_neighbors=10, index="ivf", random_state=0)
    oof = {id(scorer): scorer.fit_out_of_fold(X) for scorer in (gauss, shell, knn)}
    # Gaussian: row order, each fold scored by a fit on the other folds
    np.testing.assert_array_equal(np.sort(oof[id(gauss)]), gauss.calibration_scores_)
    for train, test in gauss._folds(X):
        fold = GaussianScorer(calibration="chi2").fit(X[train])
        np.testing.assert_allclose(oof[id(gauss)][test], fold.score_samples(X[test]), rtol=1e-9)
    # parametric shell: out-of-fold scores computed, law and fit unchanged
    assert shell.calibration_ == "shell" and shell.calibration_scores_ is None
    assert np.all(np.isfinite(oof[id(shell)]))
    plain = NormShellScorer(calibration="shell").fit(X)
    assert shell.radius_ == pytest.approx(plain.radius_, rel=1e-12)
    assert shell.offset_ == plain.offset_
    # IVF k-NN: leave-one-out scores on the rows the quantizer did not train on, NaN elsewhere
    missing = np.isnan(oof[id(knn)])
    np.testing.assert_array_equal(np.flatnonzero(missing), knn._quantizer_rows(2000))
    np.testing.assert_array_equal(np.sort(oof[id(knn)][~missing]), knn.calibration_scores_)
    # a plain fit calibrates as fit_out_of_fold does
    np.testing.assert_array_equal(GaussianScorer(random_state=0).fit(X).calibration_scores_,
                                  gauss.calibration_scores_)


# ------------------------------------------------------------------------- CV+
def test_cvplus_fixes_the_high_dimensional_rate():
    """n = 1,500, d = 512, decaying spectrum: cross-conformal flags ~0.4% at alpha 5%
    (fold models fitted on 4/5 of the rows are weaker than the final model); CV+,
    which "auto" picks there, scores fresh rows with the fold models."""
    rng = np.random.default_rng(21)
    X = anisotropic_gaussian(rng, 1500, 512)
    fresh = anisotropic_gaussian(rng, N_FRESH, 512)
    scorer = GaussianScorer(alpha=0.05, random_state=0).fit(X)
    assert scorer.calibration_ == "cv+"
    result = scorer.score_pvalue_decision(fresh)
    assert 0.035 <= result.flagged.mean() <= 0.065  # measured 4.0%
    cross = GaussianScorer(alpha=0.05, calibration="conformal", random_state=0).fit(X)
    assert np.mean(cross.predict(fresh) == -1) < 0.01  # the bias CV+ removes (0.4%)
    # the same final model: score_samples (and AUROC) does not depend on the calibration
    np.testing.assert_array_equal(result.score, cross.score_samples(fresh))


def test_auto_stays_cross_conformal_at_low_dimension():
    rng = np.random.default_rng(7)
    X = anisotropic_gaussian(rng, 5000, 32)  # d / n = 0.0064 < 0.02
    auto = GaussianScorer(alpha=0.05, random_state=0).fit(X)
    explicit = GaussianScorer(alpha=0.05, calibration="conformal", random_state=0).fit(X)
    assert auto.calibration_ == "conformal" and not hasattr(auto, "fold_states_")
    assert auto.offset_ == explicit.offset_
    fresh = anisotropic_gaussian(rng, 2000, 32)
    np.testing.assert_array_equal(auto.predict(fresh), explicit.predict(fresh))
    np.testing.assert_array_equal(auto.pvalue(fresh), explicit.pvalue(fresh))


def test_cvplus_pvalue_equals_a_numpy_reimplementation():
    """Fold models refitted with numpy + scikit-learn's LedoitWolf; p-values exactly."""
    from sklearn.covariance import LedoitWolf
    from sklearn.model_selection import KFold

    rng = np.random.default_rng(3)
    X, fresh = rng.normal(size=(80, 6)), rng.normal(size=(300, 6)) * 1.2
    scorer = GaussianScorer(alpha=0.1, calibration="cv+", calibration_folds=4,
                            random_state=0, chunk_size=7).fit(X)
    oof, fresh_scores = np.empty(80), []
    for train, test in KFold(4, shuffle=True, random_state=0).split(X):
        lw = LedoitWolf().fit(X[train])
        oof[test] = -lw.mahalanobis(X[test])
        fresh_scores.append((test, -lw.mahalanobis(fresh)))
    ranks = sum(np.sum(oof[test][:, None] <= s[None, :], axis=0) for test, s in fresh_scores)
    expected = (1.0 + ranks) / (80 + 1.0)
    np.testing.assert_allclose(scorer.calibration_scores_, np.sort(oof), rtol=1e-9)
    np.testing.assert_array_equal(scorer.pvalue(fresh), expected)
    np.testing.assert_array_equal(scorer.predict(fresh) == -1, expected <= 0.1)


class _RoundedScorer(_base.BaseScorer, register=False):
    """Integer scores: many exact ties between fresh and calibration scores."""

    _calibrations = ("conformal", "cv+")

    def __init__(self, *, alpha=None, contamination=None, calibration="cv+",
                 calibration_folds=3, random_state=0, chunk_size=7):
        self.alpha, self.contamination, self.calibration = alpha, contamination, calibration
        self.calibration_folds, self.random_state = calibration_folds, random_state
        self.chunk_size = chunk_size

    def _fit_state(self, X, y=None):
        return {"center_": X.mean(axis=0)}

    def _score_chunk(self, X, cache):
        return -np.round(np.abs(X - self.center_).sum(axis=1))


def test_cvplus_ties_follow_the_conformal_rule():
    """#{c <= s} counts ties, and p == alpha is flagged, as conformal_offset does."""
    from sklearn.model_selection import KFold

    rng = np.random.default_rng(0)
    X, fresh = rng.normal(size=(60, 3)) * 2, rng.normal(size=(500, 3)) * 2.5
    alpha = 5 / 61  # J = 5: the 6 rows with p = 5/61 are flagged, those with 7/61 not
    scorer = _RoundedScorer(alpha=alpha).fit(X)
    oof, ranks, tied = np.empty(60), np.zeros(500), 0
    folds = list(KFold(3, shuffle=True, random_state=0).split(X))
    centers = [X[train].mean(axis=0) for train, _ in folds]
    for (_, test), c in zip(folds, centers):
        oof[test] = -np.round(np.abs(X[test] - c).sum(axis=1))
    for (_, test), c in zip(folds, centers):
        s = -np.round(np.abs(fresh - c).sum(axis=1))
        ranks += np.sum(oof[test][:, None] <= s[None, :], axis=0)
        tied += np.sum(oof[test][:, None] == s[None, :])
    expected = (1.0 + ranks) / 61.0
    assert tied > 0 and np.any(expected == alpha)
    result = scorer.score_pvalue_decision(fresh)
    np.testing.assert_array_equal(result.pvalue, expected)
    np.testing.assert_array_equal(result.flagged, expected <= alpha)
    np.testing.assert_array_equal(scorer.predict(fresh) == -1, expected <= alpha)
    # cross-conformal on the same scores flags with the same rule on the full model's rank
    conformal = _RoundedScorer(alpha=alpha, calibration="conformal").fit(X)
    p = conformal.pvalue(fresh)
    np.testing.assert_array_equal(conformal.predict(fresh) == -1, p <= alpha)


@pytest.mark.parametrize("kwargs", [{"alpha": 0.1}, {"contamination": 0.1}],
                         ids=["alpha", "contamination"])
def test_cvplus_methods_agree(kwargs):
    rng = np.random.default_rng(4)
    X, fresh = rng.normal(size=(400, 40)), rng.normal(size=(300, 40)) * 1.1
    scorer = GaussianScorer(calibration="cv+", random_state=0, chunk_size=64, **kwargs).fit(X)
    result = scorer.score_pvalue_decision(fresh)
    np.testing.assert_array_equal(result.score, scorer.score_samples(fresh))
    np.testing.assert_array_equal(result.pvalue, scorer.pvalue(fresh))
    np.testing.assert_array_equal(result.decision, scorer.decision_function(fresh))
    np.testing.assert_array_equal(result.flagged, scorer.predict(fresh) == -1)
    assert 0 < result.flagged.mean() < 1
    conformal = GaussianScorer(calibration="conformal", random_state=0, **kwargs).fit(X)
    np.testing.assert_array_equal(result.score, conformal.score_samples(fresh))
    assert not np.array_equal(result.pvalue, conformal.pvalue(fresh))
    with pytest.raises(ValueError, match="score_pvalue_decision"):
        scorer.pvalue_from_scores(result.score)
    if "alpha" in kwargs:  # flagged exactly when the CV+ p-value is <= alpha
        assert np.isnan(scorer.offset_)
        np.testing.assert_array_equal(result.flagged, result.pvalue <= 0.1)
        with pytest.raises(ValueError, match="score_pvalue_decision"):
            scorer.decision_from_scores(result.score)
    else:  # contamination: the threshold on the score, as before; only p-values change
        assert scorer.offset_ == conformal.offset_
        np.testing.assert_array_equal(result.decision, result.score - scorer.offset_)
        np.testing.assert_array_equal(scorer.decision_from_scores(result.score),
                                      result.decision)


def test_cvplus_for_every_structure_and_the_shell():
    rng = np.random.default_rng(8)
    X, fresh = rng.normal(size=(300, 12)), rng.normal(size=(200, 12)) * 1.2
    y = rng.integers(0, 3, 300)
    fits = [GaussianScorer(calibration="cv+", random_state=0).fit(X, y),
            GaussianScorer(n_clusters=3, random_state=0).fit(X),
            NormShellScorer(calibration="cv+", random_state=0).fit(X),
            NormShellScorer(whiten=True, calibration="cv+", random_state=0).fit(X)]
    assert fits[1].calibration_ == "cv+"  # auto: d / n = 0.04
    assert NormShellScorer(random_state=0).fit(X).calibration_ == "conformal"  # see docs
    for scorer in fits:
        assert len(scorer.fold_states_) == 5
        assert not any(k.startswith("moment_") for k in scorer.fold_states_[0])
        result = scorer.score_pvalue_decision(fresh)
        np.testing.assert_array_equal(result.flagged, result.pvalue <= scorer.alpha_)
        np.testing.assert_array_equal(result.flagged, scorer.predict(fresh) == -1)


def test_calibrate_and_partial_fit_drop_the_fold_models():
    rng = np.random.default_rng(9)
    X = rng.normal(size=(200, 20))
    scorer = GaussianScorer(random_state=0).fit(X)  # auto: cv+
    assert scorer.calibration_ == "cv+"
    scorer.calibrate(rng.normal(size=(500, 20)))
    assert scorer.calibration_ == "conformal" and np.isfinite(scorer.offset_)
    assert not hasattr(scorer, "fold_states_") and not hasattr(scorer, "calibration_fold_")
    np.testing.assert_array_equal(scorer.predict(X[:50]),
                                  np.where(scorer.score_samples(X[:50]) < scorer.offset_, -1, 1))
    streamed = GaussianScorer(random_state=0).fit(X).partial_fit(rng.normal(size=(50, 20)))
    assert streamed.calibration_ == "f" and not hasattr(streamed, "fold_states_")


def test_knn_refuses_cvplus_with_a_reason():
    with pytest.raises(ValueError, match="no 'cv\\+'.*leave-one-out"):
        KNNScorer(calibration="cv+").fit(np.random.default_rng(0).normal(size=(50, 3)))
