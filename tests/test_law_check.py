"""The exact in-sample check of a GaussianScorer's parametric law (gaussood._law_check)."""

import warnings

import numpy as np
import pytest
from scipy import stats

from gaussood import GaussianScorer, load, save, shift
from gaussood import _law_check


def _moments(scorer):
    return {key: getattr(scorer, f"moment_{key}_") for key in ("count", "mean", "scatter")}


def _gaussian(rng, n, d, k=1, shift_by=3.0):
    y = rng.integers(0, k, n)
    X = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + shift_by * y[:, None]
    return X, y


def test_in_sample_pvalues_match_a_direct_computation():
    rng = np.random.default_rng(0)
    X, y = _gaussian(rng, 400, 6, k=3)
    scorer = GaussianScorer("empirical", calibration="f").fit(X, y)
    codes = np.unique(y, return_inverse=True)[1]
    p = _law_check.in_sample_pvalues(X, codes, _moments(scorer))
    # by hand: pooled within-class scatter, each row against its class mean
    means = np.stack([X[y == c].mean(axis=0) for c in range(3)])
    E = X - means[y]
    W_inv = np.linalg.inv(E.T @ E)
    n_k = np.bincount(y)[y]
    u = np.einsum("ij,jk,ik->i", E, W_inv, E) * n_k / (n_k - 1)
    np.testing.assert_allclose(p, stats.beta.sf(u, 3.0, (400 - 3 - 6) / 2), rtol=1e-9)


@pytest.mark.parametrize("k", [1, 4])
def test_in_sample_pvalues_are_uniform_on_gaussian_rows(k):
    rng = np.random.default_rng(k)
    pooled = []
    for _ in range(150):
        X, y = _gaussian(rng, 200, 12, k=k)
        scorer = GaussianScorer("empirical", calibration="f").fit(X, y if k > 1 else None)
        codes = np.unique(y, return_inverse=True)[1] if k > 1 else None
        pooled.append(_law_check.in_sample_pvalues(X, codes, _moments(scorer)))
    pooled = np.concatenate(pooled)                      # 30,000 p-values
    assert stats.kstest(pooled, "uniform").pvalue > 1e-3
    assert abs(np.mean(pooled <= 0.05) - 0.05) < 0.006


def test_fit_records_the_misfit_and_warns_only_off_the_law():
    rng = np.random.default_rng(1)
    X, _ = _gaussian(rng, 6000, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gauss = GaussianScorer("empirical").fit(X)        # "auto" -> "f"
    assert gauss.calibration_ == "f"
    assert gauss.law_misfit_ < 0.03 and not _law_check.rejects(gauss.law_misfit_, 6000)
    heavy = rng.standard_t(3, size=(6000, 32))
    with pytest.warns(UserWarning, match="fit rows are not"):
        bad = GaussianScorer("empirical", calibration="f").fit(heavy)
    assert bad.law_misfit_ > 0.1 and _law_check.rejects(bad.law_misfit_, 6000)


def test_misfit_is_absent_where_the_law_is_not_checked():
    rng = np.random.default_rng(2)
    X, _ = _gaussian(rng, 600, 8)
    assert not hasattr(GaussianScorer(calibration="conformal").fit(X), "law_misfit_")
    assert not hasattr(GaussianScorer("empirical", n_clusters=2, calibration="f").fit(X),
                       "law_misfit_")                    # k-means: no exact law
    assert not hasattr(GaussianScorer("empirical", calibration="chi2").fit(X[:9]),
                       "law_misfit_")                    # n - K - d < 1
    scorer = GaussianScorer("empirical", calibration="f").fit(X)
    assert hasattr(scorer, "law_misfit_")
    scorer.partial_fit(X[:100])                          # rows of the check are not all here
    assert not hasattr(scorer, "law_misfit_")


def test_misfit_persists_and_old_files_load(tmp_path):
    rng = np.random.default_rng(3)
    X, _ = _gaussian(rng, 600, 8)
    scorer = GaussianScorer("empirical", calibration="f").fit(X)
    save(scorer, tmp_path / "a.npz")
    assert load(tmp_path / "a.npz").law_misfit_ == scorer.law_misfit_
    del scorer.law_misfit_                               # as a file written before the check
    save(scorer, tmp_path / "b.npz")
    assert not hasattr(load(tmp_path / "b.npz"), "law_misfit_")


def test_batch_test_warns_when_the_fit_rows_reject_the_law():
    rng = np.random.default_rng(4)
    heavy = rng.standard_t(3, size=(6000, 16))
    with pytest.warns(UserWarning):
        bad = GaussianScorer("empirical", calibration="f").fit(heavy)
    with pytest.warns(UserWarning, match="do not fit its own fit rows"):
        shift.test(bad, rng.standard_t(3, size=(200, 16)), "ks")
    X, _ = _gaussian(rng, 6000, 16)
    good = GaussianScorer("empirical", calibration="f").fit(X)
    conformal = GaussianScorer("empirical", calibration="conformal").fit(heavy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shift.test(good, X[:200], "ks")
        shift.test(conformal, heavy[:200], "ks")
        shift.test(bad, heavy[:200], "hotelling")         # the mean's law: no p-value null
