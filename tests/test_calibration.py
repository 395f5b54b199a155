"""False-alarm rates of the alpha thresholds on fresh in-distribution data.

Tolerance: with 20,000 fresh samples the standard error of a 5% rate is
0.15%, so [0.04, 0.06] is more than six standard errors wide on each side.
"""

import numpy as np
import pytest
from scipy import stats

from gaussood import GaussianScorer, KNNScorer, NormShellScorer
from gaussood._base import conformal_offset
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
    assert conformal_offset(cal, 0.05) == 1.0
    assert conformal_offset(cal, 0.10) == 2.0  # floor(0.1 * 20) - 1 = 1
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
    from gaussood._base import collecting_out_of_fold

    rng = np.random.default_rng(6)
    X = anisotropic_gaussian(rng, 2000, 6)
    gauss = GaussianScorer(random_state=0)
    shell = NormShellScorer(calibration="shell", random_state=0)       # parametric
    knn = KNNScorer(n_neighbors=10, index="ivf", random_state=0)
    with collecting_out_of_fold([gauss, shell, knn]) as oof:
        for scorer in (gauss, shell, knn):
            scorer.fit(X)
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
    # outside the block a fit records nothing and calibrates as before
    np.testing.assert_array_equal(GaussianScorer(random_state=0).fit(X).calibration_scores_,
                                  gauss.calibration_scores_)
