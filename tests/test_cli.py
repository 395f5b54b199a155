"""The gaussood command line, numpy side: fit, score, diagnose, errors.

Real scorers on synthetic Gaussian .npy files ('bench' is tested in tests/deep).
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import gaussood
from gaussood.cli import main

ALPHA = 0.05
# A conformal false-alarm rate on 4000 fresh rows varies by about 0.006 (sd; 0.0035
# from the 4000 test rows, 0.005 from the 2000 calibration scores): 0.02 is > 3 sd.
FLAG_TOL = 0.02


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err, command, code, expected):
    assert code == expected
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    prefix = "gaussood" + (f" {command}" if command else "") + ": error: "
    assert lines[0].startswith(prefix), err
    assert "Traceback" not in err


@pytest.fixture
def data(tmp_path):
    """ID training rows, fresh ID rows and shifted OOD rows, saved as .npy."""
    rng = np.random.default_rng(7)
    d = 8
    scales = 1.0 / np.sqrt(1.0 + np.arange(d))
    mean = rng.normal(size=d)

    def draw(n):
        return mean + rng.normal(size=(n, d)) * scales

    paths = {"train": tmp_path / "train.npy", "fresh": tmp_path / "fresh.npy",
             "ood": tmp_path / "ood.npy"}
    np.save(paths["train"], draw(2000))
    np.save(paths["fresh"], draw(4000))
    np.save(paths["ood"], draw(500) + 2.0)
    return paths


def read_csv(path):
    with open(path) as fh:
        header = fh.readline().strip()
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    return header, table


@pytest.mark.parametrize("scorer", ["gaussian", "shell", "knn"])
def test_fit_score_round_trip(tmp_path, data, capsys, scorer):
    model = tmp_path / f"{scorer}.npz"
    code, out, err = run(capsys, "fit", "--embeddings", data["train"], "--scorer", scorer,
                         "--alpha", ALPHA, "--random-state", 0, "--out", model)
    assert code == 0, err
    assert out.count("\n") == 1 and "fitted" in out and str(model) in out
    loaded = gaussood.load(model)
    assert loaded.alpha_ == ALPHA and loaded.n_features_in_ == 8

    scores = tmp_path / "fresh.csv"
    code, out, err = run(capsys, "score", "--scorer", model, "--embeddings", data["fresh"],
                         "--out", scores)
    assert code == 0, err
    header, table = read_csv(scores)
    assert header == "index,score,pvalue,flagged"
    index, score, pvalue, flagged = table.T
    np.testing.assert_array_equal(index, np.arange(4000))
    fresh = np.load(data["fresh"])
    np.testing.assert_allclose(score, loaded.score_samples(fresh), rtol=1e-8)
    np.testing.assert_allclose(pvalue, loaded.pvalue(fresh), rtol=1e-8)
    np.testing.assert_array_equal(flagged, loaded.predict(fresh) == -1)
    # flagged exactly when the p-value is at most alpha (below it for a parametric law)
    flagged = flagged.astype(bool)
    assert np.all(pvalue[flagged] <= ALPHA + 1e-9) and np.all(pvalue[~flagged] >= ALPHA - 1e-9)
    assert np.all((pvalue > 0) & (pvalue <= 1))
    rate = flagged.mean()
    assert abs(rate - ALPHA) < FLAG_TOL
    assert abs(np.mean(pvalue <= 0.5) - 0.5) < 0.04  # p-values roughly uniform on ID data
    assert f"4000 rows, {int(flagged.sum())} flagged ({100 * rate:.2f}%) at alpha 0.05" in out

    code, _, err = run(capsys, "score", "--scorer", model, "--embeddings", data["ood"],
                       "--out", tmp_path / "ood.npz")
    assert code == 0, err
    with np.load(tmp_path / "ood.npz") as result:
        assert sorted(result.files) == ["flagged", "pvalue", "score"]
        assert result["flagged"].dtype == bool and result["score"].shape == (500,)
        assert result["flagged"].mean() > 0.5  # shifted by 2 in every coordinate


def test_csv_and_npz_hold_the_same_numbers(tmp_path, data, capsys):
    model = tmp_path / "g.npz"
    assert run(capsys, "fit", "--embeddings", data["train"], "--scorer", "gaussian",
               "--covariance", "empirical", "--out", model)[0] == 0
    assert gaussood.load(model).calibration_ == "f"  # auto picks the exact F law here
    for name in ("s.csv", "s.npz"):
        assert run(capsys, "score", "--scorer", model, "--embeddings", data["ood"],
                   "--out", tmp_path / name)[0] == 0
    _, table = read_csv(tmp_path / "s.csv")
    with np.load(tmp_path / "s.npz") as result:
        np.testing.assert_allclose(table[:, 1], result["score"], rtol=1e-9)
        np.testing.assert_allclose(table[:, 2], result["pvalue"], rtol=1e-9)
        np.testing.assert_array_equal(table[:, 3].astype(bool), result["flagged"])


def test_labels_give_a_class_conditional_fit(tmp_path, capsys):
    rng = np.random.default_rng(3)
    centers = 6.0 * rng.normal(size=(3, 5))
    y = np.arange(3000) % 3
    X = centers[y] + rng.normal(size=(3000, 5))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    y_fresh = np.arange(4000) % 3
    np.save(tmp_path / "fresh.npy", centers[y_fresh] + rng.normal(size=(4000, 5)))
    code, out, err = run(capsys, "fit", "--embeddings", tmp_path / "X.npy", "--labels",
                         tmp_path / "y.npy", "--scorer", "gaussian", "--out", tmp_path / "g.npz")
    assert code == 0, err
    assert "with 3 classes" in out
    scorer = gaussood.load(tmp_path / "g.npz")
    assert scorer.structure_ == "class"
    np.testing.assert_array_equal(scorer.classes_, [0, 1, 2])
    assert run(capsys, "score", "--scorer", tmp_path / "g.npz", "--embeddings",
               tmp_path / "fresh.npy", "--out", tmp_path / "s.npz")[0] == 0
    with np.load(tmp_path / "s.npz") as result:
        assert abs(result["flagged"].mean() - ALPHA) < FLAG_TOL


def test_contamination_flags_that_share_of_the_training_rows(tmp_path, data, capsys):
    code, out, err = run(capsys, "fit", "--embeddings", data["train"], "--scorer", "knn",
                         "--n-neighbors", 10, "--contamination", 0.1, "--out",
                         tmp_path / "k.npz")
    assert code == 0, err
    assert "contamination 0.1" in out
    assert gaussood.load(tmp_path / "k.npz").n_neighbors == 10
    code, out, _ = run(capsys, "score", "--scorer", tmp_path / "k.npz", "--embeddings",
                       data["train"], "--out", tmp_path / "s.npz")
    assert code == 0 and "contamination 0.1 threshold" in out
    with np.load(tmp_path / "s.npz") as result:
        assert abs(result["flagged"].mean() - 0.1) < 0.002  # a percentile of these scores


def test_options_reach_the_scorer(tmp_path, data, capsys):
    assert run(capsys, "fit", "--embeddings", data["train"], "--scorer", "shell", "--whiten",
               "--covariance", "0.1", "--calibration", "shell", "--out", tmp_path / "s.npz")[0] == 0
    shell = gaussood.load(tmp_path / "s.npz")
    assert shell.whiten and shell.covariance == 0.1 and shell.calibration_ == "shell"
    assert run(capsys, "fit", "--embeddings", data["train"], "--scorer", "gaussian",
               "--n-clusters", 2, "--calibration", "chi2", "--random-state", 5,
               "--out", tmp_path / "g.npz")[0] == 0
    gauss = gaussood.load(tmp_path / "g.npz")
    assert gauss.structure_ == "cluster" and gauss.calibration_ == "chi2"
    assert gauss.random_state == 5


def test_warnings_are_one_line(tmp_path, capsys):
    np.save(tmp_path / "X.npy", np.random.default_rng(0).normal(size=(50, 3)))
    code, _, err = run(capsys, "fit", "--embeddings", tmp_path / "X.npy", "--scorer", "knn",
                       "--n-neighbors", 5, "--alpha", 0.001, "--out", tmp_path / "k.npz")
    assert code == 0
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("gaussood fit: warning: ") for line in lines), err
    assert "cannot certify alpha" in err


def test_diagnose_prints_and_writes_the_report(tmp_path, data, capsys):
    folder = tmp_path / "report"
    code, out, err = run(capsys, "diagnose", "--embeddings", data["train"], "--max-samples",
                         500, "--projections", 8, "--seed", 1, "--out-dir", folder)
    assert code == 0, err
    assert out.startswith("Gaussianity diagnostics (n = 500, d = 8)")
    assert (folder / "report.md").read_text().strip() == out.strip()
    report = json.loads((folder / "report.json").read_text())
    assert report["n"] == 500 and report["d"] == 8 and report["reference"]["d"] == 8
    assert 0.0 <= report["ad_pass_coordinates"] <= 1.0
    assert "\nVerdict: " in out and report["verdict"] in out
    figures = ["gaussianity_norms.png", "gaussianity_qq.png", "gaussianity_ad.png"]
    if importlib.util.find_spec("matplotlib") is not None:   # figures must be drawn
        assert err.strip().endswith("and figures"), err
        assert all((folder / name).read_bytes()[:4] == b"\x89PNG" for name in figures)
    else:                                                     # and said to be skipped
        assert "figures skipped" in err and not any((folder / n).exists() for n in figures)
    code, out, _ = run(capsys, "diagnose", "--embeddings", data["train"], "--max-samples", 500,
                       "--projections", 8)
    assert code == 0 and "| effective rank |" in out


def test_fit_errors(tmp_path, data, capsys):
    np.save(tmp_path / "flat.npy", np.zeros(10))
    np.save(tmp_path / "y_short.npy", np.zeros(5))
    (tmp_path / "text.npy").write_text("not an array\n")
    out = tmp_path / "never.npz"
    fit = ["fit", "--scorer", "gaussian", "--out", out, "--embeddings"]
    cases = [
        (fit + [tmp_path / "missing.npy"], 1, "embeddings file not found"),
        (fit + [tmp_path / "flat.npy"], 1, "must be a 2-D array"),
        (fit + [tmp_path / "text.npy"], 1, "is not a .npy file"),
        (fit + [data["train"], "--labels", tmp_path / "y_short.npy"], 1, "one per embedding row"),
        (fit + [data["train"], "--alpha", 0.05, "--contamination", 0.1], 2, "not allowed with"),
        (fit + [data["train"], "--alpha", 1.5], 2, "--alpha"),
        (fit + [data["train"], "--calibration", "shell"], 2, "--calibration"),
        (fit + [data["train"], "--n-neighbors", 5], 2, "--n-neighbors applies to --scorer knn"),
        (["fit", "--scorer", "forest", "--out", out, "--embeddings", data["train"]], 2,
         "invalid choice: 'forest'"),
        (["fit", "--scorer", "knn", "--embeddings", data["train"]], 2, "--out"),
    ]
    for argv, expected, message in cases:
        code, stdout, err = run(capsys, *argv)
        assert_one_line_error(err, "fit", code, expected)
        assert message in err, (argv, err)
        assert stdout == ""
    assert not out.exists()


def test_score_errors_leave_no_file(tmp_path, data, capsys):
    model = tmp_path / "g.npz"
    assert run(capsys, "fit", "--embeddings", data["train"], "--scorer", "gaussian",
               "--out", model)[0] == 0
    np.save(tmp_path / "wide.npy", np.zeros((4, 9)))
    out = tmp_path / "scores.csv"
    score = ["score", "--out", out]
    cases = [
        (score + ["--scorer", tmp_path / "nope.npz", "--embeddings", data["fresh"]], 1,
         "scorer file not found"),
        (score + ["--scorer", data["train"], "--embeddings", data["fresh"]], 1,
         "not a gaussood scorer file"),
        (score + ["--scorer", model, "--embeddings", tmp_path / "wide.npy"], 1,
         "have 9 features but the scorer"),
        (["score", "--scorer", model, "--embeddings", data["fresh"], "--out",
          tmp_path / "s.txt"], 2, "must end in .csv or .npz"),
    ]
    for argv, expected, message in cases:
        code, _, err = run(capsys, *argv)
        assert_one_line_error(err, "score", code, expected)
        assert message in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fresh.npy", "g.npz", "ood.npy", "train.npy", "wide.npy"]  # no partial files


def test_top_level_usage(capsys):
    code, out, err = run(capsys, "--version")
    assert code == 0 and out.strip() == f"gaussood {gaussood.__version__}"
    code, _, err = run(capsys)
    assert code == 2 and "usage: gaussood" in err
    code, _, err = run(capsys, "frobnicate")
    assert_one_line_error(err, "", code, 2)
    code, out, _ = run(capsys, "score", "--help")
    assert code == 0 and "index,score,pvalue,flagged" in out and "--images" in out
    code, _, err = run(capsys, "diagnose", "--embeddings")
    assert_one_line_error(err, "diagnose", code, 2)


def _run_python(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          check=False, timeout=120)


def test_python_dash_m_help():
    proc = _run_python("-m", "gaussood", "--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "embed", "fit", "score", "diagnose", "bench"):
        assert command in proc.stdout


def write_identity(embeddings, identity):
    """The ``X.encoder.json`` that 'gaussood embed' writes beside ``X.npy``."""
    import hashlib

    record = {"format": "gaussood.embeddings", "version": 1, "embeddings": embeddings.name,
              "sha256": hashlib.sha256(embeddings.read_bytes()).hexdigest(),
              "encoder_identity": identity}
    embeddings.with_name(embeddings.stem + ".encoder.json").write_text(json.dumps(record))


IDENTITY = {"weights_sha256": "ab" * 32, "layer": "backbone",
            "preprocessing": {"input_size": [32, 32], "mean": [0.5, 0.5, 0.5]}}


def test_the_encoder_identity_goes_from_embeddings_to_scorer(tmp_path, data, capsys):
    write_identity(data["train"], IDENTITY)
    model = tmp_path / "g.npz"
    code, out, err = run(capsys, "fit", "--embeddings", data["train"], "--scorer", "gaussian",
                         "--out", model)
    assert code == 0 and out.strip().endswith("with the encoder identity of the embeddings")
    scorer = gaussood.load(model)
    assert scorer.provenance_ == {"encoder_identity": IDENTITY}
    scorer.save(tmp_path / "again.npz")                        # kept through save/load
    assert gaussood.load(tmp_path / "again.npz").provenance_ == scorer.provenance_
    scores = tmp_path / "s.csv"
    # embeddings without an identity file are scored, with a warning that the check
    # cannot run (it used to be skipped silently); with the same identity, no warning
    code, _, err = run(capsys, "score", "--scorer", model, "--embeddings", data["fresh"],
                       "--out", scores)
    assert code == 0 and "cannot check that they come from the same encoder" in err
    write_identity(data["fresh"], IDENTITY)
    code, _, err = run(capsys, "score", "--scorer", model, "--embeddings", data["fresh"],
                       "--out", scores)
    assert code == 0 and "cannot check" not in err
    # embeddings of another encoder are refused
    write_identity(data["ood"], {**IDENTITY, "layer": "head"})
    code, _, err = run(capsys, "score", "--scorer", model, "--embeddings", data["ood"],
                       "--out", tmp_path / "ood.csv")
    assert_one_line_error(err, "score", code, 1)
    assert "another encoder" in err and 'layer: "backbone" vs "head"' in err
    assert not (tmp_path / "ood.csv").exists()
    # an identity file of an older version of the embeddings is ignored, with a warning
    np.save(data["ood"], np.load(data["ood"])[:100])
    code, _, err = run(capsys, "score", "--scorer", model, "--embeddings", data["ood"],
                       "--out", tmp_path / "ood.csv")
    assert code == 0 and "describes another version" in err


def test_numpy_commands_do_not_import_torch(tmp_path, data):
    write_identity(data["train"], IDENTITY)    # read by fit, without torch
    script = (
        "import sys\n"
        "from gaussood.cli import main\n"
        f"d = {str(tmp_path)!r}\n"
        "assert main(['fit', '--embeddings', d + '/train.npy', '--scorer', 'gaussian',"
        " '--out', d + '/g.npz']) == 0\n"
        "assert main(['score', '--scorer', d + '/g.npz', '--embeddings', d + '/ood.npy',"
        " '--out', d + '/s.csv']) == 0\n"
        "assert main(['diagnose', '--embeddings', d + '/ood.npy', '--projections', '4']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n")
    proc = _run_python("-c", script)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "s.csv").exists()


def test_score_with_a_cvplus_scorer(tmp_path, capsys):
    """gaussood score: p-values and flags from the fold models (d / n >= 0.02: auto cv+)."""
    rng = np.random.default_rng(3)
    np.save(tmp_path / "train.npy", rng.normal(size=(600, 24)))
    fresh = rng.normal(size=(1000, 24)) * 1.05
    np.save(tmp_path / "fresh.npy", fresh)
    model = tmp_path / "g.npz"
    code, out, err = run(capsys, "fit", "--embeddings", tmp_path / "train.npy", "--scorer",
                         "gaussian", "--random-state", 0, "--out", model)
    assert code == 0, err
    assert "calibration cv+" in out and "flags by the CV+ p-value" in out
    code, out, err = run(capsys, "score", "--scorer", model, "--embeddings",
                         tmp_path / "fresh.npy", "--out", tmp_path / "s.npz")
    assert code == 0, err
    loaded = gaussood.load(model)
    assert loaded.calibration_ == "cv+"
    with np.load(tmp_path / "s.npz") as result:
        np.testing.assert_array_equal(result["pvalue"], loaded.pvalue(fresh))
        np.testing.assert_array_equal(result["flagged"], loaded.predict(fresh) == -1)
        np.testing.assert_array_equal(result["flagged"], result["pvalue"] <= ALPHA)
        assert f"{int(result['flagged'].sum())} flagged" in out


def test_feature_space_and_relative_options(tmp_path, data, capsys):
    """--normalize (every scorer's feature space; KNN also takes true/false, its old
    boolean) and --relative reach the scorer file; meaningless ones are refused."""
    y = np.arange(2000) % 2
    np.save(tmp_path / "y.npy", y)
    for scorer, value in (("gaussian", "l2"), ("gaussian", "center-l2"), ("knn", "false"),
                          ("knn", "center-l2")):
        out = tmp_path / f"{scorer}-{value}.npz"
        code, _, err = run(capsys, "fit", "--embeddings", data["train"], "--scorer", scorer,
                           "--normalize", value, "--out", out)
        assert code == 0, err
        want = {"false": False}.get(value, value)
        assert gaussood.load(out).normalize == want
    code, _, err = run(capsys, "fit", "--embeddings", data["train"], "--labels",
                       tmp_path / "y.npy", "--scorer", "gaussian", "--relative", "--normalize",
                       "l2", "--out", tmp_path / "rel.npz")
    assert code == 0, err
    rel = gaussood.load(tmp_path / "rel.npz")
    assert rel.relative and rel.normalize == "l2" and rel.calibration_ in ("conformal", "cv+")
    never = tmp_path / "never.npz"
    for argv, expected, message in [
        (["--scorer", "shell", "--normalize", "l2"], 1, "nothing is left to score"),
        (["--scorer", "gaussian", "--relative"], 1, "single component"),
        (["--scorer", "gaussian", "--normalize", "L3"], 2, "--normalize"),
    ]:
        code, stdout, err = run(capsys, "fit", "--embeddings", data["train"], *argv,
                                "--out", never)
        assert_one_line_error(err, "fit", code, expected)
        assert message in err, (argv, err)
    assert not never.exists()


def test_fit_and_score_several_embeddings_files(tmp_path, capsys):
    """Two layers of the same rows: one Gaussian per file, Fisher- (or min-) combined, as
    the combination built directly; score takes one file per layer, in the fitted order."""
    from gaussood import GaussianScorer, PValueCombination

    rng = np.random.default_rng(3)
    base = rng.normal(size=(1500, 4))
    W = rng.normal(size=(4, 5))
    rows = {"fit": base[:1000], "new": np.vstack([base[1000:], base[1000:1100] * 3.0])}
    files = {}
    for split, z in rows.items():
        feats = {"backbone": np.hstack([z, rng.normal(size=(len(z), 4))]),
                 "head": np.tanh(z @ W) + 0.1 * rng.normal(size=(len(z), 5))}
        for layer, X in feats.items():
            files[split, layer] = tmp_path / f"{split}.{layer}.npy"
            np.save(files[split, layer], X.astype(np.float32))
            write_identity(files[split, layer], {**IDENTITY, "layer": layer})
    fit = [arg for layer in ("backbone", "head") for arg in ("--embeddings", files["fit", layer])]
    new = [arg for layer in ("backbone", "head") for arg in ("--embeddings", files["new", layer])]
    X_fit = np.hstack([np.load(files["fit", layer]) for layer in ("backbone", "head")])
    X_new = np.hstack([np.load(files["new", layer]) for layer in ("backbone", "head")])
    for method in ("fisher", "min"):
        model = tmp_path / f"{method}.npz"
        code, out, err = run(capsys, "fit", *fit, "--scorer", "gaussian", "--combine", method,
                             "--out", model)
        assert code == 0, err
        assert f"{method} combination of 2 GaussianScorers on 1000 x (8 + 5)" in out
        scorer = gaussood.load(model)
        assert scorer.columns == [[0, 8], [8, 13]]
        assert scorer.provenance_ == {
            "encoder_identity": {**IDENTITY, "layer": ["backbone", "head"]},
            "layer_identities": [{**IDENTITY, "layer": "backbone"},
                                 {**IDENTITY, "layer": "head"}]}
        direct = PValueCombination([GaussianScorer(random_state=0)] * 2, method=method,
                                   columns=[(0, 8), (8, 13)], random_state=0).fit(X_fit)
        code, _, err = run(capsys, "score", "--scorer", model, *new, "--out",
                           tmp_path / f"{method}-s.npz")
        assert code == 0 and "cannot check" not in err, err
        with np.load(tmp_path / f"{method}-s.npz") as result:
            np.testing.assert_allclose(result["score"], direct.score_samples(X_new),
                                       rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(result["pvalue"], direct.pvalue(X_new), rtol=1e-6)
            np.testing.assert_array_equal(result["flagged"], direct.predict(X_new) == -1)
            assert result["flagged"][-100:].mean() > 0.5    # the scaled rows stand out

    model, out = tmp_path / "fisher.npz", tmp_path / "refused.csv"
    # the files in the other order: each is checked against its layer's identity
    swapped = [new[2], new[3], new[0], new[1]]
    code, _, err = run(capsys, "score", "--scorer", model, *swapped, "--out", out)
    assert_one_line_error(err, "score", code, 1)
    assert 'layer: "backbone" vs "head"' in err and "new.head.encoder.json" in err
    # one file, or three, for a scorer of two; several for a scorer of one
    code, _, err = run(capsys, "score", "--scorer", model, *new[:2], "--out", out)
    assert_one_line_error(err, "score", code, 1)
    assert "fitted on 2 embeddings files (layers); got 1 --embeddings" in err
    code, _, err = run(capsys, "score", "--scorer", model, *new, *new[:2], "--out", out)
    assert_one_line_error(err, "score", code, 1)
    assert "fitted on 2 embeddings files (layers); got 3 --embeddings" in err
    # the features side by side in one file of your own (no identity): taken as they are
    np.save(tmp_path / "both.npy", X_new)
    code, _, err = run(capsys, "score", "--scorer", model, "--embeddings", tmp_path / "both.npy",
                       "--out", tmp_path / "both.npz")
    assert code == 0 and "cannot check" in err, err
    with np.load(tmp_path / "both.npz") as result, np.load(tmp_path / "fisher-s.npz") as ref:
        np.testing.assert_array_equal(result["score"], ref["score"])
    one = tmp_path / "one.npz"
    assert run(capsys, "fit", *fit[:2], "--scorer", "gaussian", "--out", one)[0] == 0
    code, _, err = run(capsys, "score", "--scorer", one, *new, "--out", out)
    assert_one_line_error(err, "score", code, 1)
    assert "fitted on one embeddings file; got 2 --embeddings" in err
    # rows that do not match, at fit and at score time
    short = tmp_path / "short.head.npy"
    np.save(short, np.load(files["fit", "head"])[:999])
    code, _, err = run(capsys, "fit", *fit[:2], "--embeddings", short, "--scorer", "gaussian",
                       "--out", tmp_path / "x.npz")
    assert_one_line_error(err, "fit", code, 1)
    assert f"embeddings in {short} have 999 rows but those in" in err
    code, _, err = run(capsys, "score", "--scorer", model, *new[:2], "--embeddings", short,
                       "--out", out)
    assert_one_line_error(err, "score", code, 1)
    assert "999 rows" in err
    # usage errors
    code, _, err = run(capsys, "fit", *fit[:2], "--scorer", "gaussian", "--combine", "min",
                       "--out", tmp_path / "x.npz")
    assert_one_line_error(err, "fit", code, 2)
    assert "--combine applies to several --embeddings only" in err
    code, _, err = run(capsys, "fit", *fit[:2], *fit[:2], "--scorer", "gaussian",
                       "--out", tmp_path / "x.npz")
    assert_one_line_error(err, "fit", code, 2)
    assert "given twice" in err
    assert not out.exists() and not (tmp_path / "x.npz").exists()
