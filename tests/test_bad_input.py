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


# ---------------------------------------------------------------- issue 21, round 2
def _repeated(n_distinct, d, seed):
    """Rows of a Gaussian, each repeated 2-4 times, and fresh rows of the same law."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_distinct, d))
    return np.repeat(base, rng.integers(2, 5, size=n_distinct), axis=0), \
        rng.normal(size=(20_000, d))


def test_repeated_rows_keep_the_false_alarm_rate():
    """Training rows repeated 2-4 times broke conformal calibration: a row held out
    while its copy stayed in the fit scored as a seen row (k-NN with k = 1: distance 0,
    100% of fresh rows flagged at alpha 5%; Gaussian cv+ 7.1% at d = 64). Copies now
    share a fold (k-NN leaves all copies out) and each distinct row gives one
    calibration score, with a warning."""
    X, fresh = _repeated(1_500, 8, seed=0)
    with pytest.warns(UserWarning, match=r"repeat an earlier row exactly \(1500 distinct"):
        knn = KNNScorer(n_neighbors=1, random_state=0).fit(X)
    assert knn.calibration_scores_.shape == (1_500,)
    assert 0.035 <= np.mean(knn.predict(fresh) == -1) <= 0.065
    X, fresh = _repeated(1_500, 64, seed=1)
    with pytest.warns(UserWarning, match="repeat an earlier row"):
        gauss = GaussianScorer(calibration="cv+", random_state=0).fit(X)
    assert gauss.calibration_scores_.shape == (1_500,)
    folds = gauss._folds(X)  # every copy of a row in the fold of that row
    fold_of = np.empty(X.shape[0], int)
    for k, (_, test) in enumerate(folds):
        fold_of[test] = k
    _, first, inverse = np.unique(X, axis=0, return_index=True, return_inverse=True)
    np.testing.assert_array_equal(fold_of, fold_of[first][inverse.ravel()])
    assert 0.035 <= np.mean(gauss.predict(fresh) == -1) <= 0.065


def test_knn_with_k_near_n_flags_alpha():
    """KNNScorer(n_neighbors=499) on 500 rows flagged 0.1% at alpha 5% (1.18% in the
    issue): leave-one-out ranks the farthest of 499 rows against a fresh row's
    second-farthest of 500. The (k-1)-th neighbour, drawn with odds k / (n - 1), is the
    full-conformal correction."""
    rates = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        knn = KNNScorer(n_neighbors=499, random_state=seed).fit(rng.normal(size=(500, 8)))
        rates.append(np.mean(knn.predict(rng.normal(size=(5_000, 8))) == -1))
    assert 0.04 <= np.mean(rates) <= 0.065


def test_whitened_shell_law_warns_below_50_rows_per_feature():
    """NormShellScorer(whiten=True, calibration="shell") at n = 10 d with a decaying
    spectrum flagged 16.9% (d = 64; the docs said about 7%), without a word."""
    X = _X(640, 64) / np.arange(1, 65)
    with pytest.warns(UserWarning, match="over-flags here"):
        NormShellScorer(whiten=True, calibration="shell").fit(X)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NormShellScorer(whiten=True, calibration="shell").fit(_X(3_200, 64))
        NormShellScorer(whiten=True).fit(X)  # conformal: no law to distrust


def test_labels_with_a_few_rows_per_class_warn_with_the_cost():
    """2,000 distinct labels on 4,000 rows were fitted as 2,000 classes (3.3 GB, a
    292 MB file) without a word."""
    X = _X(4_000, 16)
    y = np.arange(4_000) % 2_000
    with pytest.warns(UserWarning, match=r"2000 classes for 4000 rows \(2.0 rows per class\)"
                                         r".*about \d+ MB"):
        GaussianScorer(calibration="chi2").fit(X, y)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GaussianScorer(calibration="chi2").fit(X, np.arange(4_000) % 400)  # 10 per class


def test_a_deeply_nested_scorer_header_is_refused(tmp_path):
    """A header nested 100,000 lists deep raised RecursionError from json."""
    import zipfile

    path = tmp_path / "s.npz"
    GaussianScorer().fit(_X()).save(path)
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    import io

    buf = io.BytesIO()
    np.save(buf, np.array("[" * 100_000 + "]" * 100_000))
    members["__gaussood__.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(ValueError, match="nested too deeply"):
        GaussianScorer.load(path)


def test_cli_fit_never_overwrites_the_identity_file_it_reads(tmp_path, capsys):
    """'gaussood fit --embeddings a.npy --out a.encoder.json' replaced the encoder identity
    that fit reads beside a.npy (its --out inputs list lacks the identity companion)."""
    import hashlib
    import json

    from gaussood.cli import main

    np.save(tmp_path / "a.npy", _X(200, 4).astype(np.float32))
    identity = tmp_path / "a.encoder.json"
    record = {"format": "gaussood.embeddings", "version": 1, "embeddings": "a.npy",
              "sha256": hashlib.sha256((tmp_path / "a.npy").read_bytes()).hexdigest(),
              "shape": [200, 4], "encoder_identity": {"weights_sha256": "0" * 64}}
    identity.write_text(json.dumps(record))
    code = main(["fit", "--embeddings", str(tmp_path / "a.npy"), "--scorer", "gaussian",
                 "--out", str(identity)])
    assert code == 2 and "same file" in capsys.readouterr().err
    assert json.loads(identity.read_text()) == record
