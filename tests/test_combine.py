"""PValueCombination: calibrated false alarms, both methods, labels, errors."""

import numpy as np
import pytest
from scipy import stats

from conftest import anisotropic_gaussian

from gaussood import (
    GaussianScorer,
    KNNScorer,
    NormShellScorer,
    PValueCombination,
    auroc,
)

SCALES = np.linspace(1.0, 0.2, 24)


def draw(rng, n):
    return rng.normal(size=(n, SCALES.size)) * SCALES


@pytest.mark.parametrize("method", ["fisher", "min"])
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_false_alarm_rate_matches_alpha(method, alpha):
    rng = np.random.default_rng(1)
    combo = PValueCombination(method=method, alpha=alpha, random_state=0).fit(draw(rng, 4000))
    fresh = draw(rng, 20000)
    rate = np.mean(combo.predict(fresh) == -1)
    assert abs(rate - alpha) < 0.012          # conformal: about alpha (4000 calibration scores)
    p = combo.pvalue(fresh)
    assert np.all((p > 0) & (p <= 1))
    assert np.mean(p <= 0.5) == pytest.approx(0.5, abs=0.02)


def heavy(rng, n):
    return rng.standard_t(df=3, size=(n, SCALES.size)) * SCALES


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["fisher", "min"])
@pytest.mark.parametrize("law", ["gaussian", "t3"])
def test_fresh_false_alarms_and_uniform_pvalues(law, method, seed):
    """Calibration from the components' out-of-fold scores: valid on fresh ID data.

    n = 10,000 training rows, 20,000 fresh: the rate's standard error is about
    0.0027 (calibration and test together), so [0.04, 0.06] is 3.7 of them on each
    side; the KS statistic's noise is about 0.009 (measured up to 0.018 over these
    12 cases; 0.005 with 40,000 + 40,000 rows, so no bias).
    """
    draw_law = draw if law == "gaussian" else heavy
    rng = np.random.default_rng(seed)
    combo = PValueCombination(method=method, alpha=0.05, random_state=seed).fit(
        draw_law(rng, 10_000))
    assert combo.calibration_scores_.shape == (10_000,)
    fresh = draw_law(rng, 20_000)
    flagged = combo.predict(fresh) == -1
    assert 0.04 <= flagged.mean() <= 0.06
    p = combo.pvalue(fresh)
    np.testing.assert_array_equal(flagged, p <= 0.05)
    assert stats.kstest(p, "uniform").statistic < 0.02


def test_calibration_statistics_come_from_out_of_fold_pvalues():
    """Each training row: its components' p-values from its out-of-fold scores, combined."""
    X = draw(np.random.default_rng(13), 3000)
    combo = PValueCombination(method="fisher", random_state=0).fit(X)
    alone = [GaussianScorer(random_state=0), NormShellScorer(random_state=0)]
    oof = {id(scorer): scorer.fit_out_of_fold(X) for scorer in alone}
    logs = 0.0
    for scorer, fitted in zip(alone, combo.scorers_):   # components fitted once, on all of X
        np.testing.assert_array_equal(fitted.calibration_scores_, scorer.calibration_scores_)
        rank = np.searchsorted(scorer.calibration_scores_, oof[id(scorer)], side="right")
        logs = logs + np.log(rank / 3000)    # conformal p-value against the other 2,999 rows
    np.testing.assert_allclose(combo.calibration_scores_, np.sort(logs), rtol=1e-12)


def test_parametric_components_keep_their_law_and_the_rate():
    rng = np.random.default_rng(14)
    combo = PValueCombination([GaussianScorer(covariance="empirical", calibration="f"),
                               NormShellScorer(calibration="shell")],
                              random_state=0).fit(draw(rng, 10_000))
    assert [s.calibration_ for s in combo.scorers_] == ["f", "shell"]
    assert all(s.calibration_scores_ is None for s in combo.scorers_)
    assert combo.calibration_scores_.shape == (10_000,)
    assert 0.04 <= np.mean(combo.predict(draw(rng, 20_000)) == -1) <= 0.06


def test_knn_component_calibrates_on_its_leave_one_out_rows(monkeypatch):
    """Rows without a k-NN leave-one-out score are left out of the calibration."""
    from gaussood import knn

    monkeypatch.setattr(knn, "MAX_CALIBRATION_ROWS", 1500)
    rng = np.random.default_rng(15)
    combo = PValueCombination([GaussianScorer(), KNNScorer(n_neighbors=20)],
                              random_state=0).fit(heavy(rng, 6000))
    assert combo.scorers_[1].calibration_scores_.shape == (1500,)
    assert combo.calibration_scores_.shape == (1500,)
    assert np.all(np.isfinite(combo.calibration_scores_))
    assert 0.035 <= np.mean(combo.predict(heavy(rng, 20_000)) == -1) <= 0.065  # m = 1,500


def test_component_that_bypasses_base_fit_is_refused():
    class OwnFit(GaussianScorer, register=False):
        def fit(self, X, y=None):
            self.__dict__.update(GaussianScorer(calibration="chi2").fit(X).__dict__)
            return self

    with pytest.raises(TypeError, match="out-of-fold"):
        PValueCombination([OwnFit(), NormShellScorer()]).fit(draw(np.random.default_rng(0), 300))


def test_combination_sees_both_departures():
    rng = np.random.default_rng(2)
    X = draw(rng, 5000)
    test = draw(rng, 3000)
    # off the shell only (same direction, 1.4x radius) and a Mahalanobis-type shift
    shell_ood = 1.4 * draw(rng, 3000)
    shifted = draw(rng, 3000)
    shifted[:, -1] += 1.0
    combo = PValueCombination(random_state=0).fit(X)
    gauss = GaussianScorer(random_state=0).fit(X)
    shell = NormShellScorer(random_state=0).fit(X)
    for ood in (shell_ood, shifted):
        scores = [auroc(m.score_samples(test), m.score_samples(ood)) for m in (combo, gauss, shell)]
        assert scores[0] >= min(scores[1:]) + 0.01   # better than the weaker component
    assert combo.component_pvalues(test).shape == (2, 3000)


def test_labels_reach_components_and_custom_list():
    rng = np.random.default_rng(3)
    means = 3 * rng.normal(size=(3, SCALES.size))
    y = rng.integers(0, 3, 3000)
    X = draw(rng, 3000) + means[y]
    combo = PValueCombination([GaussianScorer(), KNNScorer(n_neighbors=5)], method="min",
                              random_state=0).fit(X, y)
    assert combo.scorers_[0].classes_.tolist() == [0, 1, 2]
    assert isinstance(combo.scorers_[1], KNNScorer)
    assert combo.scorers[0] is not combo.scorers_[0]   # templates are cloned


def test_errors():
    X = np.random.default_rng(0).normal(size=(200, 4))
    with pytest.raises(ValueError, match="method"):
        PValueCombination(method="mean").fit(X)
    with pytest.raises(TypeError, match="gaussood scorers"):
        PValueCombination([object()]).fit(X)
    with pytest.raises(ValueError, match="calibration"):
        PValueCombination(calibration="chi2").fit(X)


def test_parametric_components_flag_far_points_without_overflow():
    rng = np.random.default_rng(7)
    combo = PValueCombination([GaussianScorer(covariance="empirical", calibration="f"),
                               NormShellScorer(calibration="shell")],
                              random_state=0).fit(draw(rng, 2000))
    far = np.full((2, SCALES.size), 10.0)
    far[1] *= 100.0
    assert np.all(combo.predict(far) == -1)          # p-values underflow to 0 here
    assert np.all(np.isfinite(combo.score_samples(far)))


def test_shared_fold_moments_change_nothing_but_the_work(monkeypatch):
    """The components' fold moments are computed once per fold, with the same result."""
    import gaussood._moments as moments_module
    from gaussood._base import BaseScorer

    rng = np.random.default_rng(11)
    X, test = draw(rng, 3000).astype(np.float32), draw(rng, 500)
    calls = []
    original = moments_module.compute_moments

    def counting(X, codes, n_components):
        calls.append(X.shape[0])
        return original(X, codes, n_components)

    monkeypatch.setattr(moments_module, "compute_moments", counting)
    shared = PValueCombination(random_state=0).fit(X)
    rows_shared = sum(calls)
    calls.clear()
    unshared = BaseScorer.fit_out_of_fold   # each component without the shared cache
    monkeypatch.setattr(BaseScorer, "fit_out_of_fold",
                        lambda self, X, y=None, *, fold_moments=None: unshared(self, X, y))
    alone = PValueCombination(random_state=0).fit(X)
    rows_alone = sum(calls)
    assert shared.offset_ == pytest.approx(alone.offset_, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(shared.calibration_scores_, alone.calibration_scores_,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(shared.score_samples(test), alone.score_samples(test),
                               rtol=1e-12, atol=1e-12)
    # the norm shell's fold moments come from the Gaussian's: half the rows moved
    assert rows_shared == rows_alone // 2


def test_covariance_decompositions_run_on_one_blas_thread(monkeypatch):
    """eigh/eigvalsh of a d x d covariance with a pool of 2 threads available: 1 is used."""
    from threadpoolctl import threadpool_info, threadpool_limits

    seen = []
    for name in ("eigh", "eigvalsh"):
        original = getattr(np.linalg, name)

        def wrapped(*args, _original=original, **kwargs):
            seen.append(max((p["num_threads"] for p in threadpool_info()), default=1))
            return _original(*args, **kwargs)

        monkeypatch.setattr(np.linalg, name, wrapped)
    X = draw(np.random.default_rng(12), 500)
    with threadpool_limits(2):
        if max((p["num_threads"] for p in threadpool_info()), default=1) < 2:
            pytest.skip("no BLAS thread pool to limit here")
        PValueCombination(random_state=0).fit(X)
    assert len(seen) == 2 * 6            # each component: 5 fold fits + 1, one decomposition each
    assert set(seen) == {1}


def test_cvplus_component():
    """A CV+ component: its training rows rank among its out-of-fold scores (as a
    conformal one), fresh rows get its CV+ p-value; the rate stays near alpha."""
    rng = np.random.default_rng(12)
    X = anisotropic_gaussian(rng, 2000, 48)          # d / n = 0.024: auto picks cv+
    combo = PValueCombination(random_state=0, alpha=0.05).fit(X)
    gauss = combo.scorers_[0]
    assert gauss.calibration_ == "cv+"
    fresh = anisotropic_gaussian(rng, 4000, 48)
    np.testing.assert_array_equal(combo.component_pvalues(fresh)[0], gauss.pvalue(fresh))
    result = combo.score_pvalue_decision(fresh)
    np.testing.assert_array_equal(result.flagged, combo.predict(fresh) == -1)
    assert 0.035 <= result.flagged.mean() <= 0.065


def test_fit_out_of_fold_fits_as_fit_does():
    """fit_out_of_fold(X) leaves the state of fit(X); a shared moments dict changes nothing."""
    X = draw(np.random.default_rng(16), 1200)
    makers = [lambda: GaussianScorer(random_state=0), lambda: NormShellScorer(random_state=0),
              lambda: GaussianScorer(calibration="chi2", random_state=0),
              lambda: KNNScorer(n_neighbors=10)]
    shared = {}
    for make in makers:
        plain, oof, with_cache = make().fit(X), make(), make()
        scores = oof.fit_out_of_fold(X)
        assert scores.shape == (1200,)
        np.testing.assert_array_equal(with_cache.fit_out_of_fold(X, fold_moments=shared), scores)
        for fitted in (oof, with_cache):
            assert set(vars(fitted)) == set(vars(plain))
            for key, value in vars(plain).items():
                if key.endswith("_") and isinstance(value, np.ndarray):  # parametric: the
                    scale = np.max(np.abs(value), initial=1.0)   # moments merge from folds
                    np.testing.assert_allclose(getattr(fitted, key), value, rtol=1e-9,
                                               atol=1e-12 * scale)
        if plain.calibration_scores_ is not None:
            np.testing.assert_array_equal(np.sort(scores), plain.calibration_scores_)
    assert len(shared) == 5   # one entry per fold, shared by the Gaussian and the shell


def test_components_are_called_once_per_scoring_and_chunk_alone(monkeypatch):
    """Scoring calls each component once on all rows (not once per chunk of the
    combination); each scores in chunks of its own chunk_size, so the combined scores
    are those of the components scored alone."""
    rng = np.random.default_rng(4)
    X, Xt = draw(rng, 1500), draw(rng, 300) * 1.3
    combo = PValueCombination([GaussianScorer(chunk_size=7), GaussianScorer(normalize="l2")],
                              chunk_size=50, random_state=0).fit(X)
    calls = []
    original = GaussianScorer._evaluate

    def counted(self, rows, **kw):
        calls.append(rows.shape[0])
        return original(self, rows, **kw)

    monkeypatch.setattr(GaussianScorer, "_evaluate", counted)
    result = combo.score_pvalue_decision(Xt)
    assert calls == [300, 300]
    alone = np.stack([s.pvalue(Xt) for s in combo.scorers_])
    np.testing.assert_array_equal(result.score, np.log(alone).sum(axis=0))
    np.testing.assert_array_equal(result.pvalue, combo.pvalue_from_scores(result.score))
