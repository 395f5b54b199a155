"""KNNScorer against a brute-force numpy k-NN, and its faiss index options."""

import pickle

import numpy as np
import pytest

from gaussood import KNNScorer, auroc


def brute_force_scores(train, test, k):
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    sims = np.sort(b @ a.T, axis=1)[:, ::-1]
    return sims[:, k - 1] - 1.0


def test_exact_index_matches_brute_force(rng):
    train, test = rng.normal(size=(3000, 24)), rng.normal(size=(400, 24))
    knn = KNNScorer(n_neighbors=50, random_state=0).fit(train)
    np.testing.assert_allclose(knn.score_samples(test), brute_force_scores(train, test, 50),
                               atol=2e-6)


def test_score_is_scale_invariant(rng):
    train, test = rng.normal(size=(1000, 8)), rng.normal(size=(50, 8))
    knn = KNNScorer(n_neighbors=5).fit(train)
    np.testing.assert_allclose(knn.score_samples(test), knn.score_samples(7.0 * test), atol=1e-6)


def test_neighbour_count_is_clipped_with_a_warning(rng):
    X = rng.normal(size=(20, 4))
    with pytest.warns(UserWarning, match="using 19"):  # n - 1, as scikit-learn's LOF
        knn = KNNScorer(n_neighbors=50, contamination=0.1).fit(X)
    assert knn.n_neighbors_ == 19 and knn.n_neighbors == 50


def test_ivf_index_is_close_to_exact(rng):
    centers = 5 * rng.normal(size=(20, 32))
    train = centers[rng.integers(0, 20, 20000)] + rng.normal(size=(20000, 32))
    test_in = centers[rng.integers(0, 20, 1000)] + rng.normal(size=(1000, 32))
    test_out = 5 * rng.normal(size=(1000, 32))
    exact = KNNScorer(n_neighbors=50, random_state=0).fit(train)
    ivf = KNNScorer(n_neighbors=50, index="ivf", n_probe=16, random_state=0).fit(train)
    a_exact = auroc(exact.score_samples(test_in), exact.score_samples(test_out))
    a_ivf = auroc(ivf.score_samples(test_in), ivf.score_samples(test_out))
    assert abs(a_exact - a_ivf) < 0.002
    q = test_in / np.linalg.norm(test_in, axis=1, keepdims=True)
    _, ids_exact = exact._index.search(q.astype(np.float32), 50)
    _, ids_ivf = ivf._index.search(q.astype(np.float32), 50)
    recall = np.mean([len(np.intersect1d(a, b)) / 50 for a, b in zip(ids_exact, ids_ivf)])
    assert recall >= 0.95


@pytest.mark.parametrize("index", ["flat", "ivf"])
def test_pickle_rebuilds_the_index(rng, index):
    X, Xt = rng.normal(size=(500, 6)), rng.normal(size=(40, 6))
    knn = KNNScorer(n_neighbors=5, index=index, n_lists=8, random_state=0).fit(X)
    clone = pickle.loads(pickle.dumps(knn))
    np.testing.assert_array_equal(clone.score_samples(Xt), knn.score_samples(Xt))


def test_kneighbors_matches_brute_force(rng):
    train, test = rng.normal(size=(500, 8)), rng.normal(size=(30, 8))
    knn = KNNScorer(n_neighbors=5, contamination=0.1).fit(train)
    sims, ids = knn.kneighbors(test, n_neighbors=7)
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    expected = np.argsort(-(b @ a.T), axis=1)[:, :7]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(sims, np.take_along_axis(b @ a.T, expected, axis=1), atol=1e-6)


def test_unnormalised_euclidean_matches_sklearn_and_keeps_the_norm():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(11)
    X = rng.normal(size=(3000, 16)).astype(np.float32)
    Q = rng.normal(size=(200, 16)).astype(np.float32)
    knn = KNNScorer(n_neighbors=7, normalize=False, random_state=0).fit(X)
    dist, _ = NearestNeighbors(n_neighbors=7).fit(X).kneighbors(Q)
    assert np.allclose(knn.score_samples(Q), -dist[:, -1], rtol=1e-4, atol=1e-4)
    sims, ids = knn.kneighbors(Q[:5], n_neighbors=3)
    assert np.allclose(sims, -dist[:5, :3], rtol=1e-4, atol=1e-4)
    # a scaled copy of an ID direction: the cosine score cannot see it, the Euclidean one can
    far = 4.0 * X[:100]
    cosine = KNNScorer(n_neighbors=7, random_state=0).fit(X)
    assert np.mean(cosine.predict(far) == -1) < 0.2
    assert np.all(knn.predict(far) == -1)
    # leave-one-out calibration keeps the false-alarm rate
    fresh = rng.normal(size=(20000, 16)).astype(np.float32)
    assert abs(np.mean(knn.predict(fresh) == -1) - 0.05) < 0.012


def test_normalize_must_be_bool_and_survives_save(tmp_path):
    X = np.random.default_rng(12).normal(size=(300, 4))
    with pytest.raises(TypeError, match="normalize"):
        KNNScorer(n_neighbors=3, normalize="yes").fit(X)
    knn = KNNScorer(n_neighbors=3, normalize=False, random_state=0).fit(X)
    knn.save(tmp_path / "k.npz")
    back = KNNScorer.load(tmp_path / "k.npz")
    assert back.normalize is False
    assert np.array_equal(back.score_samples(X[:20]), knn.score_samples(X[:20]))


def test_ivf_short_searches_warn():
    X = np.random.default_rng(13).normal(size=(400, 8))
    with pytest.warns(UserWarning, match="fewer than"):
        KNNScorer(n_neighbors=30, index="ivf", n_lists=100, n_probe=1, random_state=0).fit(X)
