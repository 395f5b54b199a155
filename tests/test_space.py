"""The feature-space parameter ``normalize`` shared by every scorer (gaussood._space)."""

import numpy as np
import pytest

from gaussood import GaussianScorer, KNNScorer, NormShellScorer, load, save
from gaussood._space import l2_rows

CASES = {
    "gaussian-conformal": lambda **kw: GaussianScorer(calibration="conformal", **kw),
    "gaussian-cv+": lambda **kw: GaussianScorer(calibration="cv+", **kw),
    "gaussian-f": lambda **kw: GaussianScorer("empirical", calibration="f", **kw),
    "gaussian-class": lambda **kw: GaussianScorer(**kw),
    "gaussian-relative": lambda **kw: GaussianScorer(relative=True, **kw),
    "gaussian-contamination": lambda **kw: GaussianScorer(contamination=0.1, **kw),
    "knn": lambda **kw: KNNScorer(n_neighbors=7, **kw),
}
LABELLED = {"gaussian-class", "gaussian-relative"}


def _data(n=2_000, d=10, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    return rng.normal(size=(n, d)) + 2.0 + y[:, None] * np.linspace(0, 1, d), y


def _transform(space, X, fit_rows):
    if space == "l2":
        return l2_rows(X)
    return l2_rows(X - fit_rows.mean(axis=0))


@pytest.mark.parametrize("space", ["l2", "center-l2"])
@pytest.mark.parametrize("case", list(CASES))
def test_equals_fitting_on_features_you_transformed(case, space):
    """Scores, p-values, decisions and offset equal those of the same scorer fitted
    on features normalised by hand (float64: to 1e-12)."""
    X, y = _data()
    Xt, _ = _data(n=300, seed=1)
    Xt[:5] *= 3.0
    y = y if case in LABELLED else None
    ours = CASES[case](normalize=space, random_state=0).fit(X, y)
    ref_kw = {"normalize": False} if case == "knn" and space == "center-l2" else {}
    ref = CASES[case](random_state=0, **ref_kw)
    if case == "knn":  # KNN normalises by itself: give it the centred rows only
        ref.set_params(normalize=True)
        shift = X.mean(axis=0) if space == "center-l2" else 0.0
        ref.fit(X - shift, y)
        got, want = ours.score_pvalue_decision(Xt), ref.score_pvalue_decision(Xt - shift)
    else:
        ref.fit(_transform(space, X, X), y)
        got, want = ours.score_pvalue_decision(Xt), ref.score_pvalue_decision(
            _transform(space, Xt, X))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    if np.isnan(ref.offset_):
        assert np.isnan(ours.offset_)
    else:
        assert ours.offset_ == pytest.approx(ref.offset_, rel=1e-12, abs=1e-12)


def test_knn_boolean_keeps_working():
    X, _ = _data()
    Xt, _ = _data(n=200, seed=2)
    for old, new in ((True, "l2"), (False, None)):
        a = KNNScorer(n_neighbors=5, normalize=old, random_state=0).fit(X)
        b = KNNScorer(n_neighbors=5, normalize=new, random_state=0).fit(X)
        np.testing.assert_array_equal(a.score_samples(Xt), b.score_samples(Xt))
        np.testing.assert_array_equal(a.kneighbors(Xt)[1], b.kneighbors(Xt)[1])


def test_l2_scores_ignore_the_norm():
    X, _ = _data()
    Xt, _ = _data(n=100, seed=3)
    scorer = GaussianScorer(normalize="l2", random_state=0).fit(X)
    np.testing.assert_allclose(scorer.score_samples(5.0 * Xt), scorer.score_samples(Xt),
                               rtol=1e-10)


def test_zero_rows_stay_zero():
    Z = np.zeros((2, 4))
    Z[1, 0] = 3.0
    np.testing.assert_array_equal(l2_rows(Z), [[0, 0, 0, 0], [1, 0, 0, 0]])


def test_partial_fit_center_l2_streams_around_the_first_batch_mean():
    """Streaming "center-l2": the mean of the first batch is kept and every later
    batch (and every scored row) is centred on it; "l2" streams exactly."""
    X, _ = _data(n=3_000)
    Xt, _ = _data(n=200, seed=4)
    parts = np.array_split(X, 3)
    stream = GaussianScorer(normalize="center-l2", calibration="chi2")
    for part in parts:
        stream.partial_fit(part)
    first = parts[0].mean(axis=0)
    np.testing.assert_array_equal(stream.normalize_mean_, first)
    ref = GaussianScorer(calibration="chi2").fit(l2_rows(X - first))
    np.testing.assert_allclose(stream.score_samples(Xt), ref.score_samples(l2_rows(Xt - first)),
                               rtol=1e-9, atol=1e-9)
    l2 = GaussianScorer(normalize="l2", calibration="chi2")
    for part in parts:
        l2.partial_fit(part)
    whole = GaussianScorer(normalize="l2", calibration="chi2").fit(X)
    np.testing.assert_allclose(l2.score_samples(Xt), whole.score_samples(Xt), rtol=1e-9)


@pytest.mark.parametrize("space", ["l2", "center-l2"])
def test_norm_shell_refuses_a_normalised_space(space):
    X, _ = _data(n=200)
    scorer = NormShellScorer(normalize=space)
    with pytest.raises(ValueError, match="nothing is left to score"):
        scorer.fit(X)
    assert not hasattr(scorer, "offset_")


def test_bad_value_refused():
    with pytest.raises(ValueError, match="normalize"):
        GaussianScorer(normalize="L2").fit(_data(n=100)[0])


@pytest.mark.parametrize("space", ["l2", "center-l2"])
@pytest.mark.parametrize("make", [lambda s: GaussianScorer(normalize=s, random_state=0),
                                  lambda s: GaussianScorer(normalize=s, calibration="cv+",
                                                           random_state=0),
                                  lambda s: KNNScorer(n_neighbors=5, normalize=s)])
def test_persistence_round_trip(tmp_path, make, space):
    X, _ = _data()
    Xt, _ = _data(n=200, seed=5)
    scorer = make(space).fit(X)
    save(scorer, tmp_path / "s.npz")
    back = load(tmp_path / "s.npz")
    assert back.normalize == space
    np.testing.assert_array_equal(back.score_samples(Xt), scorer.score_samples(Xt))
    np.testing.assert_array_equal(back.pvalue(Xt), scorer.pvalue(Xt))


def test_center_missing_from_file_refused(tmp_path):
    scorer = GaussianScorer(normalize="center-l2", random_state=0).fit(_data()[0])
    del scorer.normalize_mean_
    save(scorer, tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="normalize_mean_"):
        load(tmp_path / "bad.npz")
