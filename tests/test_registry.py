"""The scorer registry: a subclass defined in one place is registered, is a choice of
'gaussood fit', saves and loads (with user subclasses of the shipped scorers), is fitted
and scored on Dask, and is documented by docs/make_api.py: no other file changes
(docs/contributing.md, "Adding a scorer")."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import gaussood
from gaussood import GaussianScorer, PValueCombination
from gaussood._base import BaseScorer, registered_scorers, scorer_class
from gaussood.cli import build_parser, main


class MeanDistanceScorer(BaseScorer):
    """Minus the squared distance to the training mean (a toy scorer, defined only here).

    Parameters
    ----------
    scale : float, default=1.0
        Multiplies the distance.
    alpha, contamination, calibration, calibration_folds, random_state, chunk_size
        As in ``GaussianScorer``.
    """

    def __init__(self, scale=1.0, *, alpha=None, contamination=None, calibration="auto",
                 calibration_folds=5, random_state=None, chunk_size=4096):
        vars(self).update({k: v for k, v in locals().items() if k != "self"})

    def _fit_state(self, X, y=None):
        return {"center_": X.mean(axis=0)}

    def _score_chunk(self, X, cache):
        return -self.scale * np.sum((X - self.center_) ** 2, axis=1)


class ShiftedGaussianScorer(GaussianScorer):
    """A user's subclass of a shipped scorer: the Gaussian score plus a constant."""

    def _score_chunk(self, X, cache):
        return super()._score_chunk(X, cache) + 1.0


def test_subclasses_register_themselves():
    scorers = registered_scorers()
    assert scorers["mean-distance"] is MeanDistanceScorer
    assert scorers["shifted-gaussian"] is ShiftedGaussianScorer
    assert {"gaussian", "shell", "knn"} <= set(scorers)
    assert scorer_class("MeanDistanceScorer") is MeanDistanceScorer
    assert scorer_class("PValueCombination") is None  # register=False: not saveable


def test_a_clashing_class_name_is_refused():
    with pytest.raises(TypeError, match="already has that class name"):
        type("GaussianScorer", (GaussianScorer,), {"__module__": "elsewhere"})


def test_new_scorer_is_a_cli_choice_with_its_parameters(tmp_path, capsys):
    fit = build_parser()._subparsers._group_actions[0].choices["fit"]
    scorer = next(a for a in fit._actions if a.dest == "scorer")
    assert "mean-distance" in scorer.choices and "shifted-gaussian" in scorer.choices
    assert "Multiplies the distance" in fit.format_help()

    X = np.random.default_rng(0).normal(size=(300, 4))
    np.save(tmp_path / "X.npy", X)
    code = main(["fit", "--embeddings", str(tmp_path / "X.npy"), "--scorer", "mean-distance",
                 "--scale", "2.5", "--alpha", "0.1", "--out", str(tmp_path / "m.npz")])
    assert code == 0, capsys.readouterr().err
    loaded = gaussood.load(tmp_path / "m.npz")
    assert type(loaded) is MeanDistanceScorer and loaded.scale == 2.5
    code = main(["fit", "--embeddings", str(tmp_path / "X.npy"), "--scorer", "gaussian",
                 "--scale", "2", "--out", str(tmp_path / "g.npz")])
    assert code == 2 and "--scale applies to --scorer mean-distance only" in \
        capsys.readouterr().err


@pytest.mark.parametrize("cls", [MeanDistanceScorer, ShiftedGaussianScorer])
def test_new_and_user_subclasses_save_and_load(cls, tmp_path):
    rng = np.random.default_rng(1)
    X, Xt = rng.normal(size=(400, 5)), rng.normal(size=(50, 5)) * 1.5
    scorer = cls(random_state=0).fit(X)
    scorer.save(tmp_path / "s.npz")
    for loaded in (gaussood.load(tmp_path / "s.npz"), cls.load(tmp_path / "s.npz")):
        assert type(loaded) is cls
        np.testing.assert_array_equal(loaded.score_samples(Xt), scorer.score_samples(Xt))
        np.testing.assert_array_equal(loaded.pvalue(Xt), scorer.pvalue(Xt))
        np.testing.assert_array_equal(loaded.predict(Xt), scorer.predict(Xt))
    if cls is ShiftedGaussianScorer:  # loading through the parent class is fine ...
        assert type(GaussianScorer.load(tmp_path / "s.npz")) is cls
    with pytest.raises(TypeError):  # ... through an unrelated one is not
        gaussood.KNNScorer.load(tmp_path / "s.npz")


def test_unregistered_scorers_are_not_saved(tmp_path):
    class Unregistered(GaussianScorer, register=False):
        pass

    scorer = Unregistered().fit(np.random.default_rng(2).normal(size=(200, 3)))
    with pytest.raises(TypeError, match="registered gaussood scorer"):
        gaussood.save(scorer, tmp_path / "c.npz")
    assert list(tmp_path.iterdir()) == []


def test_combinations_save_but_are_not_plain_scorers(tmp_path):
    """A combination is composite: saved with its components, never a --scorer choice."""
    assert PValueCombination not in registered_scorers().values()
    assert scorer_class("PValueCombination") is None
    combo = PValueCombination(random_state=0).fit(np.random.default_rng(2).normal(size=(200, 3)))
    combo.save(tmp_path / "c.npz")
    assert isinstance(PValueCombination.load(tmp_path / "c.npz"), PValueCombination)


def test_decision_from_scores_is_the_flag_rule():
    X = np.random.default_rng(3).normal(size=(500, 3))
    scorer = GaussianScorer(random_state=0).fit(X)
    scores = scorer.score_samples(X)
    np.testing.assert_array_equal(scorer.decision_from_scores(scores), scorer.decision_function(X))
    np.testing.assert_array_equal(scorer.decision_from_scores(scores) < 0, scorer.predict(X) == -1)


def test_new_scorers_are_fitted_and_scored_on_dask():
    dask = pytest.importorskip("dask")
    import dask.array as da

    import gaussood.dask as gd

    routes = gd.supported_scorers()
    assert routes["mean-distance"] == "gathered" and routes["shifted-gaussian"] == "moments"
    rng = np.random.default_rng(4)
    X, Xt = rng.normal(size=(600, 4)), rng.normal(size=(80, 4)) * 1.5
    for cls in (MeanDistanceScorer, ShiftedGaussianScorer):
        reference = cls(alpha=0.1, calibration="conformal", random_state=0).fit(X)
        with dask.config.set(scheduler="synchronous"):
            on_dask = gd.fit(cls(alpha=0.1, calibration="conformal", random_state=0),
                             da.from_array(X, chunks=(150, 4)))
            scores = gd.score_samples(on_dask, Xt).compute()
        assert type(on_dask) is cls
        np.testing.assert_allclose(scores, reference.score_samples(Xt), rtol=1e-10)
        if cls is MeanDistanceScorer:   # gathered: the in-memory fit on the same rows
            np.testing.assert_array_equal(on_dask.pvalue(Xt), reference.pvalue(Xt))


def test_new_scorers_are_in_the_api_docs_once_exported(monkeypatch):
    pytest.importorskip("torch")   # make_api documents gaussood.deep too
    path = Path(__file__).resolve().parents[1] / "docs" / "make_api.py"
    spec = importlib.util.spec_from_file_location("make_api", path)
    make_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_api)
    monkeypatch.setattr(gaussood, "MeanDistanceScorer", MeanDistanceScorer, raising=False)
    monkeypatch.setattr(gaussood, "__all__", gaussood.__all__ + ["MeanDistanceScorer"])
    text = make_api.render()
    assert "### `MeanDistanceScorer`" in text
    assert "Minus the squared distance to the training mean" in text
