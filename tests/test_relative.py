"""Relative Mahalanobis (Ren et al. 2021): GaussianScorer(relative=True)."""

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf, empirical_covariance

from gaussood import GaussianScorer, load, save


def _data(n=3_000, d=12, k=4, seed=0):
    model = np.random.default_rng(42)  # one distribution; seed draws samples from it
    centres = 3.0 * model.normal(size=(k, d))
    mix = model.normal(size=(d, d)) / np.sqrt(d)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    return centres[y] + rng.normal(size=(n, d)) @ mix, y


def _sq_mahalanobis(X, mean, cov):
    diff = X - mean
    return np.einsum("ij,ij->i", diff, np.linalg.solve(cov, diff.T).T)


@pytest.mark.parametrize("covariance", ["empirical", "ledoit_wolf"])
def test_scores_equal_direct_numpy(covariance):
    X, y = _data()
    Xt, _ = _data(n=500, seed=1)
    scorer = GaussianScorer(covariance, relative=True, random_state=0).fit(X, y)
    classes = np.unique(y)
    means = np.stack([X[y == c].mean(axis=0) for c in classes])
    resid = X - means[np.searchsorted(classes, y)]
    if covariance == "empirical":
        tied, background = empirical_covariance(resid, assume_centered=True), np.cov(X.T, bias=True)
    else:
        tied = LedoitWolf(assume_centered=True).fit(resid).covariance_
        background = LedoitWolf().fit(X).covariance_
    per_class = np.stack([_sq_mahalanobis(Xt, m, tied) for m in means], axis=1)
    want = -(per_class.min(axis=1) - _sq_mahalanobis(Xt, X.mean(axis=0), background))
    np.testing.assert_allclose(scorer.score_samples(Xt), want, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(scorer.mahalanobis(Xt), -want, rtol=1e-9, atol=1e-9)


def test_relative_cancels_the_directions_the_classes_do_not_use():
    """Ren et al.'s case: two classes 6 apart along one axis, 49 nuisance axes the
    classes share; near-OOD sits between the classes. The plain distance adds a
    chi-square(49) of nuisance to every score, which swamps the gap; the relative
    one subtracts it (the background has the same nuisance), so it separates."""
    from gaussood import auroc

    rng = np.random.default_rng(3)
    n, d = 4_000, 50

    def sample(m, x0):
        X = rng.normal(size=(m, d))
        X[:, 0] += x0
        return X

    y = rng.integers(0, 2, size=n)
    X = sample(n, 6.0 * y)
    id_test = sample(2_000, 6.0 * rng.integers(0, 2, size=2_000))
    near = sample(2_000, 3.0)
    plain = GaussianScorer(random_state=0).fit(X, y)
    rel = GaussianScorer(relative=True, random_state=0).fit(X, y)
    a_plain = auroc(plain.score_samples(id_test), plain.score_samples(near))
    a_rel = auroc(rel.score_samples(id_test), rel.score_samples(near))
    assert a_rel > 0.9 and a_rel > a_plain + 0.15, (a_plain, a_rel)


@pytest.mark.parametrize("calibration", ["auto", "conformal", "cv+"])
def test_conformal_alpha_holds(calibration):
    X, y = _data(n=6_000)
    fresh, _ = _data(n=20_000, seed=5)
    scorer = GaussianScorer(relative=True, alpha=0.05, calibration=calibration,
                            random_state=0).fit(X, y)
    assert scorer.calibration_ in ("conformal", "cv+")
    rate = np.mean(scorer.predict(fresh) == -1)
    assert 0.04 <= rate <= 0.06, rate


def test_clusters_work_without_labels():
    X, _ = _data()
    scorer = GaussianScorer(relative=True, n_clusters=4, random_state=0).fit(X)
    assert scorer.structure_ == "cluster" and scorer.background_whitener_.shape == (12, 12)


@pytest.mark.parametrize("kwargs, fit_labels, match", [
    ({}, False, "single component"),
    ({"calibration": "f"}, True, "no parametric null law"),
    ({"calibration": "chi2"}, True, "no parametric null law"),
    ({"relative": "yes"}, True, "relative"),
])
def test_meaningless_combinations_refused(kwargs, fit_labels, match):
    X, y = _data(n=300)
    scorer = GaussianScorer(**{"relative": True, **kwargs})
    with pytest.raises(ValueError, match=match):
        scorer.fit(X, y) if fit_labels else scorer.fit(X)
    assert not hasattr(scorer, "offset_")  # nothing half-fitted


def test_no_partial_fit():
    assert not hasattr(GaussianScorer(relative=True, calibration="conformal"), "partial_fit")


@pytest.mark.parametrize("calibration", ["conformal", "cv+"])
def test_persistence_round_trip(tmp_path, calibration):
    X, y = _data()
    Xt, _ = _data(n=400, seed=2)
    scorer = GaussianScorer(relative=True, calibration=calibration, random_state=0).fit(X, y)
    save(scorer, tmp_path / "rel.npz")
    back = load(tmp_path / "rel.npz")
    assert back.relative is True
    for method in ("score_samples", "pvalue", "decision_function", "predict"):
        np.testing.assert_array_equal(getattr(back, method)(Xt), getattr(scorer, method)(Xt))


def test_tampered_file_refused(tmp_path):
    X, y = _data()
    scorer = GaussianScorer(relative=True, random_state=0).fit(X, y)
    del scorer.background_whitener_
    save(scorer, tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="background_whitener_"):
        load(tmp_path / "bad.npz")
