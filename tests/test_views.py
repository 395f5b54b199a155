"""gaussian_views: one detector over several feature spaces of the same embeddings."""

import warnings

import numpy as np
import pytest

from gaussood import GaussianScorer, PValueCombination, gaussian_views
from gaussood.views import VIEWS


def _data(n=3_000, d=8, seed=0):
    model = np.random.default_rng(42)
    centres = 3.0 * model.normal(size=(3, d))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    return centres[y] + rng.normal(size=(n, d)) + 2.0, y


def test_equals_the_explicit_combination():
    X, y = _data()
    Xt, _ = _data(n=500, seed=1)
    ours = gaussian_views(("raw", "l2", "relative-l2"), random_state=0).fit(X, y)
    ref = PValueCombination([GaussianScorer(), GaussianScorer(normalize="l2"),
                             GaussianScorer(relative=True, normalize="l2")],
                            random_state=0).fit(X, y)
    for a, b in zip(ours.score_pvalue_decision(Xt), ref.score_pvalue_decision(Xt)):
        np.testing.assert_array_equal(a, b)


def test_labels_win_over_clusters_without_warning():
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detector = gaussian_views(random_state=0).fit(X, y)
    assert [s.structure_ for s in detector.scorers_] == ["class", "class", "class"]
    unlabelled = gaussian_views(random_state=0).fit(X)
    assert unlabelled.scorers_[2].structure_ == "cluster"


@pytest.mark.parametrize("view", list(VIEWS))
def test_every_view_fits_and_flags_alpha(view):
    X, y = _data(n=6_000)
    fresh, _ = _data(n=20_000, seed=3)
    detector = gaussian_views([view], alpha=0.05, random_state=0).fit(X, y)
    assert 0.035 <= np.mean(detector.predict(fresh) == -1) <= 0.065


@pytest.mark.parametrize("views, match", [([], "non-empty"), (["l3"], "non-empty"),
                                          (["raw", "raw"], "twice")])
def test_bad_views_refused(views, match):
    with pytest.raises(ValueError, match=match):
        gaussian_views(views)


def test_relative_without_labels_or_clusters_is_a_clear_error():
    with pytest.raises(ValueError, match="n_clusters"):
        gaussian_views(["relative-l2"], n_clusters=None).fit(_data()[0])
