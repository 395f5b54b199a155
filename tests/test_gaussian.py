"""GaussianScorer against scikit-learn's estimators and closed forms."""

import warnings

import numpy as np
import pytest
from sklearn.covariance import OAS, EmpiricalCovariance, LedoitWolf, ShrunkCovariance

from gaussood import GaussianScorer
from conftest import anisotropic_gaussian

REFERENCES = {
    "empirical": EmpiricalCovariance,
    "ledoit_wolf": LedoitWolf,
    "oas": OAS,
    0.3: lambda **kw: ShrunkCovariance(shrinkage=0.3, **kw),
}


@pytest.mark.parametrize("method", list(REFERENCES))
def test_single_gaussian_matches_sklearn(rng, method):
    X = anisotropic_gaussian(rng, 400, 20)
    Xt = anisotropic_gaussian(rng, 100, 20) + 0.5
    ref = REFERENCES[method]().fit(X)
    ours = GaussianScorer(covariance=method).fit(X)
    np.testing.assert_allclose(ours.covariance_, ref.covariance_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.location_, ref.location_, rtol=1e-12)
    np.testing.assert_allclose(ours.mahalanobis(Xt), ref.mahalanobis(Xt), rtol=1e-8)
    if method in ("ledoit_wolf", "oas"):
        assert ours.shrinkage_ == pytest.approx(ref.shrinkage_, rel=1e-10)


def test_class_conditional_matches_reference(rng):
    """Lee et al. 2018: class means, tied covariance of the within-class residuals."""
    K, d = 4, 12
    y = rng.integers(0, K, size=600)
    means = 4.0 * rng.normal(size=(K, d))
    X = means[y] + anisotropic_gaussian(rng, 600, d, mean_scale=0.0)
    ours = GaussianScorer().fit(X, y)
    class_means = np.stack([X[y == k].mean(axis=0) for k in range(K)])
    resid = X - class_means[y]
    lw = LedoitWolf(assume_centered=True).fit(resid)
    np.testing.assert_allclose(ours.covariance_, lw.covariance_, rtol=1e-10, atol=1e-12)
    Xt = rng.normal(size=(50, d)) * 3
    prec = np.linalg.inv(lw.covariance_)  # reference only: the library never inverts
    diff = Xt[:, None, :] - class_means[None]
    brute = np.einsum("nkd,de,nke->nk", diff, prec, diff).min(axis=1)
    np.testing.assert_allclose(ours.mahalanobis(Xt), brute, rtol=1e-8)
    assert ours.structure_ == "class" and list(ours.classes_) == [0, 1, 2, 3]


def test_string_labels(rng):
    X = rng.normal(size=(60, 3))
    y = np.array(["cat", "dog", "emu"] * 20)
    scorer = GaussianScorer().fit(X, y)
    assert list(scorer.classes_) == ["cat", "dog", "emu"]


def test_clusters_find_the_mixture(rng):
    centers = np.array([[10.0, 0, 0], [-10.0, 0, 0], [0, 10.0, 0]])
    X = np.concatenate([c + rng.normal(size=(200, 3)) for c in centers])
    scorer = GaussianScorer(n_clusters=3, random_state=0).fit(X)
    found = np.sort(np.round(scorer.means_).astype(int), axis=0)
    np.testing.assert_array_equal(found, np.sort(centers.astype(int), axis=0))
    # the empty middle of the three clusters is far from all of them
    assert scorer.predict(np.zeros((1, 3)))[0] == -1
    assert np.mean(scorer.predict(X) == 1) > 0.9


def test_high_dimension_fewer_samples_than_features(rng):
    X = rng.normal(size=(100, 512))
    scorer = GaussianScorer().fit(X)
    assert scorer.calibration_ == "cv+"  # auto: d / n >= 0.02 (fold models are much weaker)
    assert 0 < scorer.shrinkage_ <= 1
    scores_in = scorer.score_samples(rng.normal(size=(200, 512)))
    scores_out = scorer.score_samples(rng.normal(size=(200, 512)) * 1.5)
    assert np.all(np.isfinite(scores_in)) and scores_in.mean() > scores_out.mean()


def test_constant_feature(rng):
    X = rng.normal(size=(300, 5))
    X[:, 2] = 7.0
    for method in ("ledoit_wolf", "empirical"):
        with pytest.warns(UserWarning) if method == "empirical" else _nullcontext():
            scorer = GaussianScorer(covariance=method).fit(X)
        assert np.all(np.isfinite(scorer.score_samples(X)))
    moved = X[:5].copy()
    moved[:, 2] = 8.0  # a change along a feature that never varied is anomalous
    assert np.all(scorer.score_samples(moved) < scorer.score_samples(X[:5]))


def _nullcontext():
    import contextlib
    return contextlib.nullcontext()


def test_float32_matches_float64(rng):
    X = anisotropic_gaussian(rng, 2000, 64)
    Xt = anisotropic_gaussian(rng, 500, 64)
    s64 = GaussianScorer().fit(X).score_samples(Xt)
    s32 = GaussianScorer().fit(X.astype(np.float32)).score_samples(Xt.astype(np.float32))
    assert s32.dtype == np.float64
    np.testing.assert_allclose(s32, s64, rtol=2e-4)


@pytest.mark.filterwarnings("ignore:The empirical covariance is singular")  # the 17-row batch
@pytest.mark.parametrize("labels", [False, True])
@pytest.mark.parametrize("method", ["ledoit_wolf", "oas", "empirical", 0.2])
def test_partial_fit_equals_batch_fit(rng, method, labels):
    d = 16
    X = anisotropic_gaussian(rng, 3000, d) + 100.0  # an offset stresses the merge
    y = rng.integers(0, 3, size=3000) if labels else None
    batch = GaussianScorer(covariance=method, calibration="chi2").fit(X, y)
    stream = GaussianScorer(covariance=method, calibration="chi2")
    bounds = [0, 17, 500, 501, 1800, 3000]
    for a, b in zip(bounds[:-1], bounds[1:]):
        stream.partial_fit(X[a:b], None if y is None else y[a:b])
    for attr in ("location_", "means_", "covariance_", "whitened_means_"):
        np.testing.assert_allclose(getattr(stream, attr), getattr(batch, attr), rtol=1e-10,
                                   atol=1e-10 * max(1.0, np.abs(getattr(batch, attr)).max()))
    assert stream.shrinkage_ == pytest.approx(batch.shrinkage_, rel=1e-10, abs=1e-14)
    Xt = anisotropic_gaussian(rng, 100, d) + 100.0
    np.testing.assert_allclose(stream.score_samples(Xt), batch.score_samples(Xt), rtol=1e-9)


def test_partial_fit_not_offered_where_it_cannot_be_exact():
    assert not hasattr(GaussianScorer(n_clusters=3), "partial_fit")
    assert not hasattr(GaussianScorer(contamination=0.1), "partial_fit")
    assert not hasattr(GaussianScorer(calibration="conformal"), "partial_fit")
    assert hasattr(GaussianScorer(), "partial_fit")


def test_partial_fit_rejects_mixed_structure(rng):
    scorer = GaussianScorer().partial_fit(rng.normal(size=(50, 3)))
    with pytest.raises(ValueError, match="fitted as 'single'"):
        scorer.partial_fit(rng.normal(size=(50, 3)), np.zeros(50))
    with pytest.raises(ValueError, match="features"):
        scorer.partial_fit(rng.normal(size=(50, 4)))
    assert scorer.n_samples_fit_ == 50


def test_whitener_whitens(rng):
    X = anisotropic_gaussian(rng, 1000, 30)
    scorer = GaussianScorer().fit(X)
    W = scorer.whitener_
    np.testing.assert_allclose(W.T @ scorer.covariance_ @ W, np.eye(30), atol=1e-9)


@pytest.mark.parametrize("n, d, params, models, k", [
    (600, 256, {}, 6, 1),                                   # auto: cv+
    (3000, 256, {"calibration": "conformal"}, 6, 1),
    (3000, 256, {"calibration": "chi2"}, 1, 1),
    (3000, 128, {"relative": True}, 6, 4),                  # with 4 classes
])
def test_fit_cost_estimates_the_traced_peak(n, d, params, models, k):
    """fit_cost's memory is the fit's traced peak above its data, within a factor 2."""
    import tracemalloc

    from gaussood.gaussian import fit_cost

    X = np.random.default_rng(0).normal(size=(n, d))
    y = np.arange(n) % k if k > 1 else None
    tracemalloc.start()
    try:
        GaussianScorer(**params).fit(X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size, seconds = fit_cost(n, d, n_components=k, n_models=models,
                             relative=params.get("relative", False))
    assert 0.5 <= (peak - X.nbytes) / size <= 2.0
    assert 0 < seconds < 5


def test_a_fit_too_large_for_the_machine_warns_or_is_refused(rng, monkeypatch):
    """Issue 21: 8,192 flattened features on 600 rows stalled for 10+ minutes. The fit
    warns with its estimate and the way out, or refuses above the machine's memory."""
    from gaussood import gaussian
    from gaussood.gaussian import fit_cost

    size, seconds = fit_cost(600, 8192, n_models=6)
    assert size > 12e9 and seconds > 600      # the case: 13 GB, over 10 minutes
    X = rng.normal(size=(600, 300))           # cv+: 6 models, 25 matrices of 0.7 MB
    need = fit_cost(600, 300, n_models=6)[0]
    monkeypatch.setattr(gaussian, "_physical_memory", lambda: need / 2)
    scorer = GaussianScorer()
    with pytest.raises(ValueError, match=r"600 rows x 300 features .*refused.*PCA"):
        scorer.fit(X)
    assert not hasattr(scorer, "covariance_")
    monkeypatch.setattr(gaussian, "_physical_memory", lambda: need * 2)
    with pytest.warns(UserWarning, match=r"needs about 0\.0 GB .*'name:flatten'.*1 model "
                                         "instead of 6"):
        scorer.fit(X)
    assert scorer.calibration_ == "cv+"
    monkeypatch.setattr(gaussian, "_physical_memory", lambda: need * 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GaussianScorer(calibration="chi2").fit(X)   # 1 model: under a quarter of it
