"""Pickle-free save/load: exact round trips and clear errors on bad files."""

import json
import zipfile

import numpy as np
import pytest

import gaussood
from gaussood import GaussianScorer, KNNScorer, NormShellScorer
from gaussood.persistence import FORMAT_VERSION


def _fitted(rng):
    X = rng.normal(size=(600, 6))
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, 600)]
    return [
        GaussianScorer(random_state=0).fit(X),
        GaussianScorer(covariance=0.2, calibration="chi2").fit(X, y),
        GaussianScorer(n_clusters=3, calibration="conformal", random_state=1).fit(X),
        NormShellScorer(contamination=0.02).fit(X),
        NormShellScorer(whiten=True, random_state=3).fit(X),
        KNNScorer(n_neighbors=7, random_state=2).fit(X),
        KNNScorer(n_neighbors=7, index="ivf", n_lists=10, random_state=2).fit(X),
    ]


def test_round_trip_is_exact(rng, tmp_path):
    Xt = rng.normal(size=(200, 6)) * 1.3
    for i, scorer in enumerate(_fitted(rng)):
        path = tmp_path / f"scorer{i}.npz"
        scorer.save(path)
        loaded = gaussood.load(path)
        assert type(loaded) is type(scorer)
        assert loaded.get_params() == scorer.get_params()
        np.testing.assert_array_equal(loaded.score_samples(Xt), scorer.score_samples(Xt))
        np.testing.assert_array_equal(loaded.predict(Xt), scorer.predict(Xt))
        if scorer.calibration_ != "conformal" or scorer.calibration_scores_ is not None:
            np.testing.assert_array_equal(loaded.pvalue(Xt), scorer.pvalue(Xt))
        assert loaded.offset_ == scorer.offset_


def test_loaded_scorer_keeps_streaming(rng, tmp_path):
    X = rng.normal(size=(900, 5))
    whole = GaussianScorer(calibration="f").fit(X)
    first = GaussianScorer().partial_fit(X[:400])
    first.save(tmp_path / "s.npz")
    resumed = GaussianScorer.load(tmp_path / "s.npz").partial_fit(X[400:])
    np.testing.assert_allclose(resumed.covariance_, whole.covariance_, rtol=1e-10)


def test_truncated_file(rng, tmp_path):
    path = tmp_path / "s.npz"
    GaussianScorer().fit(rng.normal(size=(100, 3))).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        gaussood.load(path)


def test_foreign_files(rng, tmp_path):
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    with pytest.raises(ValueError, match="not a gaussood scorer file"):
        gaussood.load(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a readable gaussood file"):
        gaussood.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError):
        gaussood.load(tmp_path / "missing.npz")


def _members(path):
    """Every member of a saved file, by name."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _write(path, entries, header):
    """A file of ``entries`` with ``header`` (a hand-edited or crafted scorer file)."""
    np.savez(path, **{**entries, "__gaussood__": np.array(json.dumps(header))})
    return path


def _rewrite_header(path, **changes):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(str(arrays["__gaussood__"]))
    header.update(changes)
    arrays["__gaussood__"] = np.array(json.dumps(header))
    np.savez(path, **arrays)


def test_newer_version_and_wrong_class(rng, tmp_path):
    path = tmp_path / "s.npz"
    NormShellScorer().fit(rng.normal(size=(100, 3))).save(path)
    with pytest.raises(TypeError, match="holds a NormShellScorer"):
        GaussianScorer.load(path)
    _rewrite_header(path, version=FORMAT_VERSION + 1)
    with pytest.raises(ValueError, match="Upgrade gaussood"):
        gaussood.load(path)


def test_files_contain_no_pickle(rng, tmp_path):
    path = tmp_path / "s.npz"
    GaussianScorer().fit(rng.normal(size=(100, 3)), np.arange(100) % 2).save(path)
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            with zf.open(name) as fh:
                np.lib.format.read_array(fh, allow_pickle=False)  # raises on pickled data


def test_unfitted_and_unsaveable(rng, tmp_path):
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        GaussianScorer().save(tmp_path / "s.npz")
    scorer = GaussianScorer(random_state=np.random.RandomState(0)).fit(rng.normal(size=(50, 2)))
    with pytest.raises(TypeError, match="int random_state"):
        scorer.save(tmp_path / "s.npz")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_missing_or_reshaped_arrays(rng, tmp_path):
    path = tmp_path / "s.npz"
    GaussianScorer().fit(rng.normal(size=(100, 3))).save(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    broken = dict(arrays)
    del broken["attr/whitener_"]
    np.savez(tmp_path / "missing.npz", **broken)
    with pytest.raises(ValueError, match="incomplete or inconsistent"):
        gaussood.load(tmp_path / "missing.npz")
    broken = dict(arrays, **{"attr/whitener_": np.ones((2, 2))})
    np.savez(tmp_path / "reshaped.npz", **broken)
    with pytest.raises(ValueError, match="incomplete or inconsistent"):
        gaussood.load(tmp_path / "reshaped.npz")
    _rewrite_header(path, version=0)
    with pytest.raises(ValueError, match="invalid format version"):
        gaussood.load(path)


@pytest.mark.parametrize("name", ["gaussian", "shell", "knn"])
def test_files_written_before_the_registry_still_load(name):
    """tests/data/v1_*.npz were written by gaussood 0.1.0 before the scorer registry."""
    from pathlib import Path

    folder = Path(__file__).parent / "data"
    expected = json.loads((folder / "v1_expected.json").read_text())[name]
    queries = np.load(folder / "v1_queries.npy")
    scorer = gaussood.load(folder / f"v1_{name}.npz")
    np.testing.assert_array_equal(scorer.score_samples(queries), expected["score"])
    np.testing.assert_array_equal(scorer.pvalue(queries), expected["pvalue"])
    np.testing.assert_array_equal(scorer.predict(queries), expected["predict"])


def test_cvplus_round_trip(rng, tmp_path):
    """Fold states travel as arrays (no pickle): identical p-values and predictions."""
    X, Xt = rng.normal(size=(300, 12)), rng.normal(size=(200, 12)) * 1.2
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, 300)]
    for i, scorer in enumerate([GaussianScorer(random_state=0).fit(X),           # auto: cv+
                                GaussianScorer(calibration="cv+", random_state=1).fit(X, y),
                                GaussianScorer(contamination=0.05, calibration="cv+",
                                               random_state=2).fit(X),
                                NormShellScorer(calibration="cv+", random_state=3).fit(X),
                                NormShellScorer(whiten=True, calibration="cv+",
                                                random_state=3).fit(X)]):
        assert scorer.calibration_ == "cv+"
        path = tmp_path / f"cv{i}.npz"
        scorer.save(path)
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["__gaussood__"]))
            assert header["version"] == 2 and len(header["fold_scalars"]) == 5
            assert any(k.startswith("fold/4/") for k in data.files)
        loaded = gaussood.load(path)
        assert len(loaded.fold_states_) == 5
        for method in ("score_samples", "pvalue", "decision_function", "predict"):
            np.testing.assert_array_equal(getattr(loaded, method)(Xt),
                                          getattr(scorer, method)(Xt), err_msg=method)
        np.testing.assert_array_equal(loaded.calibration_fold_, scorer.calibration_fold_)
        assert np.isnan(loaded.offset_) == np.isnan(scorer.offset_)
    # files without folds stay version 1, as before
    GaussianScorer(calibration="conformal").fit(X).save(tmp_path / "plain.npz")
    with np.load(tmp_path / "plain.npz", allow_pickle=False) as data:
        header = json.loads(str(data["__gaussood__"]))
        assert header["version"] == 1 and "fold_scalars" not in header
        assert not any(k.startswith("fold/") for k in data.files)


def test_cvplus_fold_states_are_validated_on_load(rng, tmp_path):
    path = tmp_path / "s.npz"
    GaussianScorer(calibration="cv+", random_state=0).fit(rng.normal(size=(200, 5))).save(path)
    arrays = _members(path)
    header = json.loads(str(arrays["__gaussood__"]))

    cases = {
        "whitener": (dict(arrays, **{"fold/2/whitener_": np.eye(4)}), header,
                     r"fold_states_\[2\]: whitener_ has shape"),
        "missing": ({k: v for k, v in arrays.items() if k != "fold/1/location_"}, header,
                    r"fold_states_\[1\]: location_ is missing"),
        "nan": (dict(arrays, **{"fold/0/location_": np.full(5, np.nan)}), header,
                r"fold_states_\[0\]: location_ holds NaN"),
        "stray": (dict(arrays, **{"fold/9/location_": np.zeros(5)}), header,
                  "unexpected fold array"),
        "one-fold": ({k: v for k, v in arrays.items() if not k.startswith("fold/")
                      or k.startswith("fold/0/")}, {**header, "fold_scalars":
                                                    header["fold_scalars"][:1]},
                     "at least 2 fold states"),
        "bad-scalar": (arrays, {**header, "fold_scalars": [
            {**f, "shrinkage_": 3.0} for f in header["fold_scalars"]]},
            r"fold_states_\[0\]: shrinkage_ is 3.0"),
        "not-a-list": (arrays, {**header, "fold_scalars": {"a": 1}}, "not a list"),
    }
    for name, (entries, head, match) in cases.items():
        with pytest.raises(ValueError, match=match):
            gaussood.load(_write(tmp_path / f"{name}.npz", entries, head))


# ----------------------------------------------------------------- combinations
def _combinations(rng):
    """Fitted combinations: gaussian_views with labels and with n_clusters, Fisher and
    min of the default components, and one whose components are CV+ and k-NN."""
    from gaussood import PValueCombination, gaussian_views

    X = rng.normal(size=(700, 6)) + rng.integers(0, 3, 700)[:, None]
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, 700)]
    return X, [
        gaussian_views(random_state=0).fit(X, y),
        gaussian_views(["l2", "relative-center-l2"], n_clusters=4, random_state=1).fit(X),
        PValueCombination(method="fisher", random_state=2).fit(X),
        PValueCombination(method="min", contamination=0.03, random_state=3).fit(X),
        PValueCombination([GaussianScorer(calibration="cv+"), KNNScorer(n_neighbors=5)],
                          method="min", alpha=0.1, random_state=4).fit(X),
    ]


def _params(combo):
    """get_params of a combination with its templates as (class, parameters)."""
    params = combo.get_params(deep=False)
    templates = params.pop("scorers")
    return params, None if templates is None else [
        (type(t), t.get_params()) for t in templates]


def test_combination_round_trip_is_exact(rng, tmp_path):
    X, combos = _combinations(rng)
    Xt = np.vstack([rng.normal(size=(300, 6)) * 1.5, X[:50], np.full((2, 6), 9.0)])
    for i, combo in enumerate(combos):
        path = tmp_path / f"combo{i}.npz"
        combo.save(path)
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["__gaussood__"]))
            assert header["version"] == 3 and header["components"] == len(combo.scorers_)
        loaded = gaussood.load(path)
        assert type(loaded) is type(combo) and _params(loaded) == _params(combo)
        for mine, theirs in zip(loaded.scorers_, combo.scorers_):
            assert type(mine) is type(theirs) and mine.get_params() == theirs.get_params()
        got, want = loaded.score_pvalue_decision(Xt), combo.score_pvalue_decision(Xt)
        for name, a, b in zip(("score", "pvalue", "decision"), got, want):
            np.testing.assert_array_equal(a, b, err_msg=f"combo{i} {name}")
        np.testing.assert_array_equal(loaded.predict(Xt), combo.predict(Xt))
        np.testing.assert_array_equal(loaded.component_pvalues(Xt), combo.component_pvalues(Xt))
        np.testing.assert_array_equal(loaded.calibration_scores_, combo.calibration_scores_)
        assert loaded.offset_ == combo.offset_ and loaded.alpha_ == combo.alpha_
    # the templates come back unfitted: refitting the loaded combination gives the original
    refit = gaussood.load(tmp_path / "combo2.npz").fit(X)
    np.testing.assert_array_equal(refit.score_samples(Xt), combos[2].score_samples(Xt))


def test_filter_default_detector_saves_with_its_provenance(rng, tmp_path):
    """OODFilter has no save of its own: its fitted detector (gaussian_views by default)
    is saved, and OODFilter.from_fitted wraps the loaded one."""
    from gaussood import OODFilter

    X = rng.normal(size=(800, 5))
    filt = OODFilter().fit(X)
    filt.scorer_.provenance_ = {"encoder_identity": {"weights_sha256": "ab" * 32}}
    gaussood.save(filt.scorer_, tmp_path / "filter.npz")
    loaded = gaussood.load(tmp_path / "filter.npz")
    assert loaded.provenance_ == filt.scorer_.provenance_
    again = OODFilter.from_fitted(loaded)
    Xt = np.vstack([rng.normal(size=(100, 5)), np.full((3, 5), 5.0)])
    first, second = filt.evaluate(Xt), again.evaluate(Xt)
    np.testing.assert_array_equal(first.keep, second.keep)
    np.testing.assert_array_equal(first.pvalue, second.pvalue)


def test_combination_files_are_refused_when_broken(rng, tmp_path):
    from gaussood import PValueCombination

    X = rng.normal(size=(400, 5))
    path = tmp_path / "c.npz"
    PValueCombination(random_state=0).fit(X).save(path)
    arrays = _members(path)
    header = json.loads(str(arrays["__gaussood__"]))
    GaussianScorer(random_state=0).fit(rng.normal(size=(400, 3))).save(tmp_path / "other.npz")
    three = _members(tmp_path / "other.npz")
    shell_header = json.loads(str(arrays["component/1/__gaussood__"]))

    without_1 = {k: v for k, v in arrays.items() if not k.startswith("component/1/")}
    cases = {
        "missing": (without_1, header, r"component 1\) is missing"),
        "count": (arrays, {**header, "components": 3}, r"component 2\) is missing"),
        "zero": (arrays, {**header, "components": 0}, "invalid 'components' count"),
        "stray": (dict(arrays, **{"component/5/attr/x_": np.zeros(2)}), header,
                  "unexpected member 'component/5/attr/x_'"),
        "extra": (dict(arrays, **{"weights": np.zeros(3)}), header,
                  "unexpected member 'weights'"),
        "extra-in-component": (dict(arrays, **{"component/0/junk": np.zeros(3)}), header,
                               r"component 0\) holds an unexpected member 'junk'"),
        "wrong-width": ({**{k: v for k, v in arrays.items() if not k.startswith(
            "component/0/")}, **{f"component/0/{k}": v for k, v in three.items()}},
            header, "scorers_.0. takes 3 features, the combination gives it 5"),
        "broken-component": (dict(arrays, **{"component/0/attr/whitener_": np.eye(2)}),
                             header, r"component 0\) holds an incomplete or inconsistent"),
        "old-version": (arrays, {**header, "version": 2}, "combinations are version 3"),
        "plain-as-3": (arrays, {**header, "class": "GaussianScorer"},
                       "combinations are version 3"),
        "component-newer": (dict(arrays, **{"component/1/__gaussood__": np.array(
            json.dumps({**shell_header, "version": 99}))}), header, "Upgrade gaussood"),
        "templates": (arrays, {**header, "templates": [{"class": "Nope", "params": {}}]},
                      "unknown scorer class 'Nope'"),
        "bad-template": (arrays, {**header, "templates": [
            {"class": "GaussianScorer", "params": {"covariance": "magic"}}]},
            r"templates\[0\] has invalid GaussianScorer"),
        "method": (arrays, {**header, "params": {**header["params"], "method": "mean"}},
                   "incomplete or inconsistent PValueCombination"),
        "unknown-attribute": (dict(arrays, **{"attr/secret_": np.zeros(2)}), header,
                              "does not have: 'secret_'"),
    }
    for name, (entries, head, match) in cases.items():
        with pytest.raises(ValueError, match=match):
            gaussood.load(_write(tmp_path / f"{name}.npz", entries, head))
    with pytest.raises(TypeError, match="holds a PValueCombination, not a GaussianScorer"):
        GaussianScorer.load(path)

    class Unregistered(GaussianScorer, register=False):
        pass

    combo = PValueCombination([Unregistered(), NormShellScorer()], random_state=0).fit(X)
    with pytest.raises(TypeError, match="registered gaussood scorer"):
        combo.save(tmp_path / "unregistered.npz")
    assert not (tmp_path / "unregistered.npz").exists()


def test_nested_combination_round_trip(rng, tmp_path):
    """A combination of combinations (OODFilter's detector over several layers)."""
    from gaussood import PValueCombination, gaussian_views

    X, y = rng.normal(size=(600, 4)), rng.integers(0, 2, 600)
    nested = PValueCombination([gaussian_views(["raw", "l2"]), NormShellScorer()],
                               random_state=0).fit(X, y)
    nested.save(tmp_path / "nested.npz")
    with np.load(tmp_path / "nested.npz", allow_pickle=False) as data:
        assert "component/0/component/1/attr/whitener_" in data.files
    loaded = gaussood.load(tmp_path / "nested.npz")
    assert _params(loaded.scorers[0]) == _params(nested.scorers[0])
    Xt = rng.normal(size=(200, 4)) * 1.4
    for a, b in zip(loaded.score_pvalue_decision(Xt), nested.score_pvalue_decision(Xt)):
        np.testing.assert_array_equal(a, b)
