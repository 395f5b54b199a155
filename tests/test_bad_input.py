"""Bad input gets a clear error, and a failed fit leaves the scorer as it was."""

import numpy as np
import pytest

from gaussood import GaussianScorer, KNNScorer, NormShellScorer

SCORERS = [GaussianScorer, NormShellScorer, lambda: KNNScorer(n_neighbors=3)]
IDS = ["gaussian", "shell", "knn"]


@pytest.fixture(params=SCORERS, ids=IDS)
def make(request):
    return request.param


def _X(n=40, d=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


@pytest.mark.parametrize("bad, exc, match", [
    (np.array([[1.0, np.nan, 2.0]] * 10), ValueError, "NaN"),
    (np.array([[1.0, np.inf, 2.0]] * 10), ValueError, "infinity"),
    (np.ones(10), ValueError, "2D array"),
    (np.ones((2, 3, 4)), ValueError, "dim"),
    (np.ones((1, 3)), ValueError, "minimum of 2"),
    (np.ones((0, 3)), ValueError, "0 sample"),
    (np.array([["a", "b"], ["c", "d"]]), TypeError, "real numbers"),
    (np.array([[1 + 2j, 1], [2, 3j]]), ValueError, "Complex"),
])
def test_fit_rejects(make, bad, exc, match):
    with pytest.raises(exc, match=match):
        make().fit(bad)


def test_score_rejects_nan_and_feature_mismatch(make):
    scorer = make().fit(_X())
    bad = _X(5)
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        scorer.score_samples(bad)
    with pytest.raises(ValueError, match="features"):
        scorer.score_samples(_X(5, 4))


def test_float32_overflow_is_explained():
    scorer = GaussianScorer().fit(_X())
    with pytest.raises(ValueError, match="too large"):
        scorer.score_samples(np.full((2, 3), 3e38, dtype=np.float32))


def test_labels_of_wrong_length():
    with pytest.raises(ValueError, match="same length"):
        GaussianScorer().fit(_X(), np.zeros(39))
    with pytest.raises(ValueError, match="1-D"):
        GaussianScorer().fit(_X(), np.zeros((40, 2)))


def test_bad_parameters(make):
    X = _X()
    with pytest.raises(ValueError, match="alpha"):
        make().set_params(alpha=1.5).fit(X)
    with pytest.raises(ValueError, match="contamination"):
        make().set_params(contamination=0.7).fit(X)
    with pytest.raises(ValueError, match="calibration"):
        make().set_params(calibration="magic").fit(X)
    with pytest.raises(TypeError, match="chunk_size"):
        make().set_params(chunk_size=2.5).fit(X)


def test_failed_fit_keeps_the_previous_fit(make):
    scorer = make().fit(_X())
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(scorer).items()}
    with pytest.raises(ValueError):
        scorer.fit(_X(30, 5) * np.nan)
    assert set(vars(scorer)) == set(before)
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(scorer, key), value)
        else:
            assert getattr(scorer, key) is value or getattr(scorer, key) == value
    assert scorer.n_features_in_ == 3


def test_failed_first_fit_leaves_nothing():
    scorer = GaussianScorer()
    with pytest.raises(ValueError):
        scorer.fit(_X(), np.zeros(5))
    assert not [k for k in vars(scorer) if k.endswith("_")]


def test_failed_partial_fit_keeps_state():
    scorer = GaussianScorer().partial_fit(_X())
    n = scorer.n_samples_fit_
    with pytest.raises(ValueError):
        scorer.partial_fit(_X(5, 3) * np.inf)
    assert scorer.n_samples_fit_ == n


def test_too_many_components():
    with pytest.raises(ValueError, match="more samples than components"):
        GaussianScorer().fit(_X(4), np.arange(4))
    with pytest.raises(ValueError, match="n_clusters"):
        GaussianScorer(n_clusters=50).fit(_X())


def test_n_neighbors_as_large_as_the_data_is_clipped_to_n_minus_1(monkeypatch):
    """KNNScorer(n_neighbors=n) on n rows ran the fold refits with k = n (20,000 rows:
    241 s, 895 MB peak, no warning). Now, as scikit-learn's LocalOutlierFactor: k is
    clipped to n - 1 with a warning, the leave-one-out calibration applies, and the
    score is the (n - 1)-th neighbour's cosine similarity minus 1."""
    import gaussood.knn

    X, fresh = _X(300, 4), _X(7, 4, seed=1)
    with pytest.warns(UserWarning, match="not less than the 300 fitted samples; using 299"):
        knn = KNNScorer(n_neighbors=300, random_state=0).fit(X)
    assert knn.n_neighbors_ == 299 and knn.calibration_scores_.shape == (300,)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    q = fresh / np.linalg.norm(fresh, axis=1, keepdims=True)
    want = np.sort(q @ unit.T, axis=1)[:, ::-1][:, 298] - 1.0
    whole = knn.score_samples(fresh)
    np.testing.assert_allclose(whole, want, atol=1e-5)
    # searches are cut to about SEARCH_ENTRIES results: the same scores in pieces
    monkeypatch.setattr(gaussood.knn, "SEARCH_ENTRIES", 600)  # 2 rows per search
    np.testing.assert_array_equal(knn.score_samples(fresh), whole)
    small = KNNScorer(n_neighbors=300, random_state=0)
    with pytest.warns(UserWarning, match="using 299"):
        small.fit(X)
    np.testing.assert_allclose(small.calibration_scores_, knn.calibration_scores_, atol=1e-6)
    np.testing.assert_allclose(small.score_samples(fresh), want, atol=1e-5)


def test_non_integral_float_labels_are_refused():
    """1,000 distinct float labels on 4,000 rows were fitted as 1,000 classes."""
    X = _X(4_000, 3)
    y = np.random.default_rng(1).normal(size=1_000)[np.arange(4_000) % 1_000]
    with pytest.raises(ValueError, match="non-integral float labels"):
        GaussianScorer().fit(X, y)
    fitted = GaussianScorer(calibration="chi2").fit(X, (np.arange(4_000) % 3).astype(float))
    assert fitted.classes_.tolist() == [0.0, 1.0, 2.0]  # integral floats stay classes
