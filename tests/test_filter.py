"""OODFilter and AbstainingClassifier on numpy embeddings (no torch needed)."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from gaussood import (
    AbstainingClassifier,
    GaussianScorer,
    KNNScorer,
    NormShellScorer,
    OODFilter,
)

D = 12


def flatten_encoder(batch):
    """A picklable stand-in encoder: the first D pixel values."""
    return batch.reshape(len(batch), -1)[:, :D].astype(float)


def id_data(rng, n):
    y = rng.integers(0, 3, n)
    return rng.normal(size=(n, D)) + 3.0 * np.eye(3, D)[y], y


@pytest.mark.parametrize("scorer", [GaussianScorer(), NormShellScorer(), KNNScorer(n_neighbors=10)],
                         ids=["gaussian", "shell", "knn"])
def test_drop_rate_on_id_matches_alpha(scorer):
    rng = np.random.default_rng(0)
    X, _ = id_data(rng, 5000)
    filt = OODFilter(scorer, alpha=0.05).fit(X)
    fresh, _ = id_data(rng, 20000)
    kept, result = filt.filter(fresh)
    assert abs(result.flagged_share - 0.05) < 0.012   # conformal thresholds: about alpha
    assert kept.shape == (int(result.keep.sum()), D)
    assert np.array_equal(filt.predict(fresh) == 1, result.keep)
    assert filt.scorer is scorer and filt.scorer_ is not scorer  # the template is cloned


def test_far_points_are_dropped_and_pvalues_small():
    rng = np.random.default_rng(1)
    X, _ = id_data(rng, 3000)
    filt = OODFilter(GaussianScorer(), alpha=0.01).fit(X)
    far = rng.normal(size=(200, D)) + 8.0
    result = filt.evaluate(far)
    assert not result.keep.any()
    assert result.pvalue.max() <= 0.01


def test_contamination_and_from_fitted():
    rng = np.random.default_rng(2)
    X, _ = id_data(rng, 4000)
    filt = OODFilter(GaussianScorer(), contamination=0.1).fit(X)
    assert filt.predict(X).tolist().count(-1) == pytest.approx(400, abs=2)
    fitted = GaussianScorer(alpha=0.2).fit(X)
    wrap = OODFilter.from_fitted(fitted)
    assert wrap.scorer_ is fitted
    assert abs(np.mean(wrap.predict(id_data(rng, 10000)[0]) == -1) - 0.2) < 0.02
    with pytest.raises(ValueError, match="threshold"):
        OODFilter.from_fitted(fitted, alpha=0.1)


def test_abstaining_classifier_in_place_of_a_pipeline():
    rng = np.random.default_rng(3)
    X, y = id_data(rng, 3000)
    clf = AbstainingClassifier(OODFilter(GaussianScorer(), alpha=0.05),
                               LogisticRegression(max_iter=500)).fit(X, y)
    test, ty = id_data(rng, 2000)
    pred = clf.predict(test)
    answered = pred != -1
    assert abs(1 - answered.mean() - 0.05) < 0.02
    assert np.mean(pred[answered] == ty[answered]) > 0.9
    assert np.all(clf.predict(rng.normal(size=(50, D)) + 9.0) == -1)


def test_bad_input():
    rng = np.random.default_rng(4)
    X, _ = id_data(rng, 500)
    with pytest.raises(ValueError, match="action"):
        OODFilter(GaussianScorer(), action="delete").fit(X)
    with pytest.raises(ValueError, match="not both"):
        OODFilter(GaussianScorer(), alpha=0.1, contamination=0.1).fit(X)
    with pytest.raises(TypeError, match="gaussood scorer"):
        OODFilter(object()).fit(X)
    filt = OODFilter(GaussianScorer()).fit(X)
    with pytest.raises(ValueError, match="no encoder"):
        filt.evaluate(np.zeros((2, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="dimensions"):
        filt.evaluate(np.zeros(5))
    with pytest.raises(ValueError, match="features"):
        filt.evaluate(np.zeros((3, D + 1)))


def test_string_classes_and_labels_reach_the_filter():
    rng = np.random.default_rng(5)
    X, y = id_data(rng, 2000)
    names = np.array(["a", "b", "c"])[y]
    clf = AbstainingClassifier(OODFilter(GaussianScorer(), alpha=0.05),
                               LogisticRegression(max_iter=500)).fit(X, names)
    assert clf.filter_.scorer_.classes_.tolist() == ["a", "b", "c"]   # class-conditional
    pred = clf.predict(np.vstack([X[:5], np.full((1, D), 9.0)]))
    assert pred[-1] == -1 and set(pred[:5]) <= {"a", "b", "c", -1}
    named = AbstainingClassifier(OODFilter(GaussianScorer()), LogisticRegression(max_iter=500),
                                 abstain_label="unknown").fit(X, names)
    assert named.predict(np.full((1, D), 9.0)).tolist() == ["unknown"]


def test_pvalue_from_scores_and_pickling():
    import pickle

    rng = np.random.default_rng(6)
    X, _ = id_data(rng, 1000)
    filt = OODFilter(GaussianScorer(), encoder=lambda images: images.reshape(len(images), -1)
                     [:, :D].astype(float)).fit(X)
    s = filt.scorer_.score_samples(X[:50])
    assert np.array_equal(filt.scorer_.pvalue_from_scores(s), filt.scorer_.pvalue(X[:50]))
    filt.evaluate(np.zeros((2, 2, 3, 3), dtype=np.uint8) + 1)   # builds the encoder cache
    plain = OODFilter(GaussianScorer(random_state=0)).fit(X)
    clone = pickle.loads(pickle.dumps(plain))                 # the same fitted filter, round-tripped
    assert clone is not plain and clone.scorer_ is not plain.scorer_
    probe = np.vstack([X[:20], np.full((3, D), 6.0)])
    np.testing.assert_array_equal(clone.evaluate(probe).score, plain.evaluate(probe).score)
    np.testing.assert_array_equal(clone.predict(probe), plain.predict(probe))
    assert clone.predict(probe)[-3:].tolist() == [-1, -1, -1]
    assert clone.scorer_.offset_ == plain.scorer_.offset_
    filt.set_params(encoder=None)
    with pytest.raises(ValueError, match="no encoder"):
        filt.evaluate(np.zeros((2, 2, 3, 3), dtype=np.uint8))


def test_numpy_nchw_images_empty_batches_and_live_cache():
    import pickle

    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, size=(500, 4, 4, 3), dtype=np.uint8)
    filt = OODFilter(GaussianScorer(), encoder=flatten_encoder).fit(images)
    nchw = images[:10].transpose(0, 3, 1, 2)
    assert np.array_equal(filt.evaluate(nchw).score, filt.evaluate(images[:10]).score)
    empty = filt.evaluate(images[:0])
    assert empty.keep.shape == (0,) and empty.flagged_share == 0.0
    kept, result = filt.filter(images[:0])
    assert kept.shape == (0, 4, 4, 3)
    assert filt._encoder_cache is not None
    pickle.dumps(filt)
    assert filt._encoder_cache is not None          # pickling copies, never strips


def test_cvplus_scorer_in_the_filter():
    """The filter keeps what the scorer's predict keeps, with its CV+ p-values."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(500, 40))                  # d / n = 0.08: auto picks cv+
    filt = OODFilter(GaussianScorer(random_state=0), alpha=0.1).fit(X)
    assert filt.scorer_.calibration_ == "cv+"
    probe = np.vstack([rng.normal(size=(400, 40)), np.full((3, 40), 3.0)])
    kept, result = filt.filter(probe)
    scorer = filt.scorer_
    np.testing.assert_array_equal(result.keep, scorer.predict(probe) == 1)
    np.testing.assert_array_equal(result.pvalue, scorer.pvalue(probe))
    np.testing.assert_array_equal(result.score, scorer.score_samples(probe))
    np.testing.assert_array_equal(result.keep, result.pvalue > 0.1)
    assert kept.shape[0] == result.keep.sum() and not result.keep[-3:].any()
    # the cross-conformal threshold on the full model's score would keep other rows
    assert not np.array_equal(result.keep, scorer.score_samples(probe) >= np.nanmax(
        [GaussianScorer(calibration="conformal", alpha=0.1, random_state=0).fit(X).offset_]))
