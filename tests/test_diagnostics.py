"""Gaussianity diagnostics: nominal on Gaussian data, failing where they should.

Tolerances: with d = 100 independent coordinates at a 5% test, the pass share has
standard deviation sqrt(0.05 * 0.95 / 100) = 0.022; [0.85, 1.0] is 4.5 sd below 0.95.
"""

import warnings

import numpy as np
import pytest

from gaussood.diagnostics import (GaussianityReport, diagnose, effective_rank,
                                  mahalanobis_beta_ks, norm_cv)


def test_gaussian_data_pass_at_about_the_nominal_rate():
    X = np.random.default_rng(0).normal(size=(2000, 100)) * np.linspace(0.5, 2, 100)
    report = diagnose(X, reference=False)
    for share in (report.ad_pass_coordinates, report.dp_pass_coordinates,
                  report.ad_pass_projections, report.ad_pass_whitened):
        assert 0.85 <= share <= 1.0
    assert report.mahalanobis_ks < 0.04  # KS 1% critical value at n = 2000 is 0.036
    assert report.n == 2000 and report.d == 100


def test_sphere_shows_the_thin_shell():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 256))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    assert norm_cv(X, center=False) < 1e-12  # on the sphere by construction
    assert norm_cv(X) < 0.01  # the mean is near 0, so centring barely moves the shell
    gauss = rng.normal(size=(3000, 256))  # a Gaussian's shell is thicker: CV ~ 1/sqrt(2d)
    assert norm_cv(gauss) == pytest.approx(1 / np.sqrt(2 * 256), rel=0.1)


def test_heavy_tails_and_clusters_fail():
    rng = np.random.default_rng(2)
    heavy = diagnose(rng.standard_t(df=3, size=(3000, 50)), reference=False)
    assert heavy.ad_pass_coordinates < 0.3 and heavy.mahalanobis_ks > 0.05
    centers = 8 * rng.normal(size=(4, 50))
    clusters = diagnose(centers[rng.integers(0, 4, 3000)] + rng.normal(size=(3000, 50)),
                        reference=False)
    assert clusters.ad_pass_projections < 0.5


def test_reference_is_an_exact_gaussian_of_the_same_shape():
    X = np.random.default_rng(3).standard_t(df=3, size=(1500, 20))
    report = diagnose(X)
    assert report.reference["n"] == 1500 and report.reference["d"] == 20
    assert report.reference["ad_pass_coordinates"] > report.ad_pass_coordinates
    assert "exact Gaussian" in report.to_markdown()
    assert isinstance(report, GaussianityReport) and report.to_dict()["reference"]


def test_effective_rank_closed_forms():
    rng = np.random.default_rng(4)
    assert effective_rank(rng.normal(size=(20000, 10))) == pytest.approx(10, rel=0.01)
    line = np.outer(rng.normal(size=500), rng.normal(size=5))
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-6)


def test_subsampling_and_errors():
    X = np.random.default_rng(5).normal(size=(12000, 8))
    assert diagnose(X, max_samples=3000, reference=False).n == 3000
    with pytest.raises(ValueError, match="n > d \\+ 1"):
        mahalanobis_beta_ks(np.random.default_rng(6).normal(size=(30, 40)))
    with pytest.raises(ValueError):
        diagnose(np.ones((5, 3)))


def test_qq_data_and_figures(tmp_path):
    rng = np.random.default_rng(5)
    gauss = diagnose(rng.normal(size=(3000, 16)), seed=1)
    qq = gauss.qq_mahalanobis
    theory, sample = np.array(qq["theoretical"]), np.array(qq["sample"])
    # Gaussian rows: sample quantiles on the exact-law quantiles (inner 90%, 5% tolerance)
    inner = (np.array(qq["probabilities"]) > 0.05) & (np.array(qq["probabilities"]) < 0.95)
    assert np.allclose(sample[inner], theory[inner], rtol=0.05)
    heavy = diagnose(rng.standard_t(3, size=(3000, 16)), seed=1).qq_mahalanobis
    assert heavy["sample"][-1] > 1.3 * heavy["theoretical"][-1]   # heavy upper tail
    pytest.importorskip("matplotlib")
    paths = gauss.save_figures(tmp_path / "figs", prefix="g")
    assert [p.name for p in paths] == ["g_norms.png", "g_qq.png", "g_ad.png"]
    assert all(p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    assert "arrays" not in gauss.to_dict() and "qq_mahalanobis" in gauss.to_dict()


def _anderson_darling(x):
    """A^2 of the normal law with estimated mean and variance (Stephens 1974), by hand."""
    from scipy import stats

    y = np.sort((x - x.mean()) / x.std(ddof=1))
    n, i = y.size, np.arange(1, y.size + 1)
    return -n - np.mean((2 * i - 1) * (stats.norm.logcdf(y) + stats.norm.logsf(y[::-1])))


@pytest.mark.parametrize("new_scipy", [True, False], ids=["scipy>=1.17", "older-scipy"])
def test_anderson_statistics_and_decisions(monkeypatch, new_scipy):
    """Statistics against the closed form; decisions against Stephens' 5% critical value
    0.752 / (1 + 0.75/n + 2.25/n^2), through both SciPy code paths."""
    from scipy import stats

    from gaussood import diagnostics
    if not new_scipy:  # SciPy < 1.17 has no method=: the tabulated-critical-value path
        original = stats.anderson

        def old_anderson(x, dist="norm", **kwargs):
            if kwargs:
                raise TypeError("anderson() got an unexpected keyword argument 'method'")
            with warnings.catch_warnings():   # SciPy >= 1.17 warns about the old form
                warnings.simplefilter("ignore", FutureWarning)
                return original(x, dist=dist)

        monkeypatch.setattr(diagnostics.stats, "anderson", old_anderson)
    rng = np.random.default_rng(6)
    n = 400
    X = np.column_stack([rng.normal(size=n), rng.exponential(size=n), rng.uniform(size=n),
                         rng.standard_t(2, size=n), rng.normal(size=n) + 0.2 * rng.normal(size=n) ** 2])
    expected = np.array([_anderson_darling(X[:, j]) for j in range(X.shape[1])])
    stat, passed = diagnostics._anderson_columns(X, 0.05)
    np.testing.assert_allclose(stat, expected, rtol=1e-10)
    critical = 0.752 / (1 + 0.75 / n + 2.25 / n**2)
    clear = np.abs(expected - critical) > 0.05   # far enough from the line for both paths
    assert clear.sum() >= 4
    assert np.array_equal(passed[clear], (expected < critical)[clear])
    assert passed[0] and not passed[1] and not passed[3]


def test_verdict_gaussian_and_not():
    rng = np.random.default_rng(13)
    gauss = diagnose(rng.normal(size=(3000, 24)) * np.linspace(0.5, 2, 24), seed=2)
    assert abs(gauss.parametric_flag_rate - 0.05) < 0.015
    assert gauss.verdict.startswith("Gaussian at this n: parametric p-values")
    assert f"about {100 * gauss.parametric_flag_rate:.1f}% at alpha 5%" in gauss.verdict
    heavy = diagnose(rng.standard_t(3, size=(3000, 24)), seed=2)
    assert heavy.parametric_flag_rate > 0.08
    assert heavy.verdict.startswith("not Gaussian at this n: use conformal thresholds")
    assert f"would flag about {100 * heavy.parametric_flag_rate:.1f}% at alpha 5%" in heavy.verdict
    assert any("heavier tails" in line for line in heavy.advice)
    assert any("pass Anderson-Darling" in line for line in heavy.advice)
    light = diagnose(rng.uniform(size=(3000, 24)), seed=2)
    assert light.parametric_flag_rate < 0.02 and light.verdict.startswith("not Gaussian")
    assert any("lighter tails" in line for line in light.advice)
    sphere = rng.normal(size=(3000, 24))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    assert any("L2-normalised" in line for line in diagnose(sphere, seed=2).advice)
    text = heavy.to_markdown()
    assert "\nVerdict: not Gaussian at this n" in text and "- heavier tails" in text
    assert heavy.to_dict()["verdict"] == heavy.verdict
    assert heavy.to_dict()["advice"] == heavy.advice


def test_verdict_when_the_law_cannot_be_checked():
    report = diagnose(np.random.default_rng(14).normal(size=(30, 40)), reference=False)
    assert report.parametric_flag_rate is None and report.mahalanobis_ks is None
    assert report.verdict.startswith("not Gaussian at this n")
    assert any("cannot be checked" in line for line in report.advice)


def test_mahalanobis_law_is_exact_at_small_n():
    from scipy import stats

    from gaussood.diagnostics import whitened
    rng = np.random.default_rng(9)
    n, d = 40, 10
    d2 = np.concatenate([np.einsum("ij,ij->i", Z, Z) for Z in
                         (whitened(rng.normal(size=(n, d))) for _ in range(300))])
    assert d2.mean() == pytest.approx(d, rel=1e-9)  # exactly d for the MLE covariance
    assert stats.kstest(d2 / (n - 1), stats.beta(d / 2, (n - d - 1) / 2).cdf).statistic < 0.02
