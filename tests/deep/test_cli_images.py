"""The command line on image folders: embed with any encoder, one-step scoring, encoder
identity carried from embed to fit to score, and nothing named in a file is imported.

Images are real files written with Pillow (mixed sizes, modes and formats); encoders are
a gaussood encoder file, a random-init torchvision ResNet-18 (a state-dict file for the
runs that must agree) and a TorchScript file, all built here (nothing is downloaded).
"""

import csv
import json
import os
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from PIL import Image  # noqa: E402

import gaussood  # noqa: E402
from gaussood.cli import main  # noqa: E402
from gaussood.deep import Encoder, make_encoder, save_encoder  # noqa: E402
from gaussood.deep.checkpoint import encoder_payload  # noqa: E402

CPU = ["--device", "cpu", "--quiet"]
TINY = '{"input_size": 32, "resize": "resize", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}'
TRAP = "gaussood_trap_module_xyz"   # a module that must never be imported


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_error(err, command, code, expected, *words):
    assert code == expected, err
    lines = [line for line in err.strip().splitlines() if ": warning: " not in line]
    assert len(lines) == 1 and lines[0].startswith(f"gaussood {command}: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, err)


def write_photos(folder, n, seed):
    """n smooth colour images of 20-70 px, as PNG and JPEG, RGB, L, RGBA and P, in two
    levels of folders."""
    rng = np.random.default_rng(seed)
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        low = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        size = tuple(int(s) for s in rng.integers(20, 71, 2))
        image = Image.fromarray(low).resize(size, Image.BICUBIC)
        mode = ("RGB", "L", "RGBA", "P")[i % 4]
        image = image.convert(mode) if mode != "P" else image.quantize(16)
        ext = ".jpg" if mode in ("RGB", "L") and i % 3 == 0 else ".png"
        image.save(folder / ("sub" if i % 2 else "") / f"im{i:03d}{ext}")
    return folder


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two photo folders (fit and test), two gaussood encoder files, a ResNet-18
    state dict and a TorchScript file."""
    root = tmp_path_factory.mktemp("images")
    write_photos(root / "fit", 60, seed=0)
    write_photos(root / "test", 9, seed=1)
    for seed, name in ((0, "enc.pt"), (1, "other.pt")):
        torch.manual_seed(seed)
        save_encoder(Encoder("small").eval(), root / name)
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), root / "my_resnet18.pt")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)    # torch.jit is deprecated
        torch.jit.script(net).save(str(root / "net.ts"))
    return root


def test_embed_folder_with_a_gaussood_encoder(files, tmp_path, capsys):
    out = tmp_path / "emb.npy"
    code, stdout, err = run(capsys, "embed", "--encoder", files / "enc.pt", "--images",
                            files / "test", *CPU, "--out", out)
    assert code == 0, err
    X = np.load(out)
    assert X.shape == (9, 256) and X.dtype == np.float32
    header, rows = read_rows(tmp_path / "emb.paths.csv")
    assert header == ["index", "path"]
    paths = [path for _, path in rows]
    expected = sorted(str(p) for p in (files / "test").rglob("im*"))
    assert paths == expected and [int(i) for i, _ in rows] == list(range(9))
    encoder = make_encoder(files / "enc.pt", device="cpu")
    np.testing.assert_allclose(X, encoder.embed(paths), rtol=1e-5, atol=1e-5)  # row order
    record = json.loads((tmp_path / "emb.encoder.json").read_text())
    assert record["encoder_identity"] == json.loads(json.dumps(encoder.identity()))
    assert record["shape"] == [9, 256] and record["format"] == "gaussood.embeddings"
    assert "9 images from folder" in stdout and "(backbone)" in stdout
    assert not list(tmp_path.glob("tmp-*"))


def test_embed_folder_with_torchvision_and_torchscript(files, tmp_path, capsys):
    out = tmp_path / "tv.npy"
    code, stdout, err = run(capsys, "embed", "--encoder", "torchvision:resnet18", "--images",
                            files / "test", *CPU, "--out", out)
    assert code == 0, err
    assert "weights are random" in err and "--weights FILE" in err    # warned, CLI words
    assert np.load(out).shape == (9, 512) and "(fc:input)" in stdout
    # with a weights file: deterministic, and the identity names no spec
    code, _, err = run(capsys, "embed", "--encoder", "torchvision:resnet18", "--weights",
                       files / "my_resnet18.pt", "--layer", "avgpool", "--images",
                       files / "test", *CPU, "--out", out)
    assert code == 0 and "random" not in err, err
    identity = json.loads((tmp_path / "tv.encoder.json").read_text())["encoder_identity"]
    assert identity["layer"] == "avgpool" and "resnet18" not in json.dumps(identity)

    ts = tmp_path / "ts.npy"
    code, _, err = run(capsys, "embed", "--encoder", files / "net.ts", "--preprocessing", TINY,
                       "--images", files / "test", *CPU, "--out", ts)
    assert code == 0 and "warning" not in err, err
    expected = make_encoder(files / "net.ts", preprocessing=json.loads(TINY)).embed(
        files / "test")
    np.testing.assert_allclose(np.load(ts), expected, rtol=1e-5, atol=1e-6)
    code, _, err = run(capsys, "embed", "--encoder", files / "net.ts", "--images",
                       files / "test", *CPU, "--out", ts)
    assert code == 0 and "Pass --preprocessing JSON" in err, err    # ImageNet's, warned



def test_embed_with_an_import_spec_from_the_caller(files, tmp_path, capsys, monkeypatch):
    (tmp_path / "my_models_abc.py").write_text(
        "import torch\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.Flatten(),\n"
        "                               torch.nn.LazyLinear(7), torch.nn.ReLU(),\n"
        "                               torch.nn.Linear(7, 2))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, stdout, err = run(capsys, "embed", "--encoder", "my_models_abc:build",
                            "--preprocessing", TINY, "--images", files / "test", *CPU,
                            "--out", tmp_path / "m.npy")
    assert code == 0, err
    assert np.load(tmp_path / "m.npy").shape == (9, 7) and "(4:input)" in stdout


def test_one_step_score_equals_embed_fit_score(files, tmp_path, capsys):
    enc = ["--encoder", files / "enc.pt", *CPU]
    fit = tmp_path / "fit.npy"
    assert run(capsys, "embed", *enc, "--images", files / "fit", "--out", fit)[0] == 0
    code, stdout, err = run(capsys, "fit", "--embeddings", tmp_path / "fit.npy", "--scorer",
                            "gaussian", "--alpha", 0.2, "--out", tmp_path / "g.npz")
    assert code == 0 and "with the encoder identity" in stdout, err
    stored = gaussood.load(tmp_path / "g.npz").provenance_["encoder_identity"]
    assert stored == json.loads(json.dumps(make_encoder(files / "enc.pt").identity()))
    # separately: embed the test folder, score the embeddings
    test = tmp_path / "t.npy"
    assert run(capsys, "embed", *enc, "--images", files / "test", "--out", test)[0] == 0
    assert run(capsys, "score", "--scorer", tmp_path / "g.npz", "--embeddings",
               tmp_path / "t.npy", "--out", tmp_path / "two.csv")[0] == 0
    # in one step
    code, stdout, err = run(capsys, "score", "--scorer", tmp_path / "g.npz", "--images",
                            files / "test", *enc, "--out", tmp_path / "one.csv")
    assert code == 0 and "identity" not in err, err        # checked, and the same
    assert stdout.startswith("9 images, ") and "at alpha 0.2" in stdout
    header, one = read_rows(tmp_path / "one.csv")
    assert header == ["path", "score", "pvalue", "flagged"]
    _, two = read_rows(tmp_path / "two.csv")
    _, paths = read_rows(tmp_path / "t.paths.csv")
    assert [r[0] for r in one] == [p for _, p in paths]
    assert [r[1:] for r in one] == [r[1:] for r in two]    # the same text, digit for digit
    assert {r[3] for r in one} <= {"0", "1"}
    # .npz: the same numbers, with the paths
    assert run(capsys, "score", "--scorer", tmp_path / "g.npz", "--images", files / "test",
               *enc, "--out", tmp_path / "one.npz")[0] == 0
    with np.load(tmp_path / "one.npz", allow_pickle=False) as result:
        assert list(result["path"]) == [r[0] for r in one]
        np.testing.assert_array_equal(result["flagged"], [r[3] == "1" for r in one])
        np.testing.assert_allclose(result["score"], [float(r[1]) for r in one], rtol=1e-9)


def test_score_refuses_another_encoder(files, tmp_path, capsys):
    enc = ["--encoder", files / "enc.pt", *CPU]
    fit = tmp_path / "fit.npy"
    assert run(capsys, "embed", *enc, "--images", files / "fit", "--out", fit)[0] == 0
    assert run(capsys, "fit", "--embeddings", tmp_path / "fit.npy", "--scorer", "gaussian",
               "--out", tmp_path / "g.npz")[0] == 0
    out = tmp_path / "s.csv"
    score = ["score", "--scorer", tmp_path / "g.npz", "--out", out, *CPU]
    cases = [(["--encoder", files / "other.pt"], "weights_sha256"),          # other weights
             (["--encoder", files / "enc.pt", "--layer", "head"], "layer"),  # other layer
             (["--encoder", files / "enc.pt", "--preprocessing", TINY], "preprocessing")]
    for extra, word in cases:
        code, _, err = run(capsys, *score, "--images", files / "test", *extra)
        assert_error(err, "score", code, 1, "fitted on embeddings of another encoder", word)
    # embeddings of another encoder, known by their .encoder.json, are refused too
    assert run(capsys, "embed", "--encoder", files / "other.pt", *CPU, "--images",
               files / "test", "--out", tmp_path / "o.npy")[0] == 0
    code, _, err = run(capsys, *score[:-3], "--embeddings", tmp_path / "o.npy")
    assert_error(err, "score", code, 1, "another encoder", "o.encoder.json")
    assert not out.exists()

    # a scorer without an identity is accepted, with a warning
    np.save(tmp_path / "plain.npy", np.load(tmp_path / "fit.npy"))
    assert run(capsys, "fit", "--embeddings", tmp_path / "plain.npy", "--scorer", "gaussian",
               "--out", tmp_path / "plain.npz")[0] == 0
    assert not hasattr(gaussood.load(tmp_path / "plain.npz"), "provenance_")
    code, _, err = run(capsys, "score", "--scorer", tmp_path / "plain.npz", "--images",
                       files / "test", "--encoder", files / "other.pt", *CPU, "--out", out)
    assert code == 0 and "stores no encoder identity" in err, err

    # embeddings changed after embed: their stale identity is not stored
    np.save(tmp_path / "fit.npy", np.load(tmp_path / "fit.npy")[:50])
    code, stdout, err = run(capsys, "fit", "--embeddings", tmp_path / "fit.npy", "--scorer",
                            "gaussian", "--out", tmp_path / "stale.npz")
    assert code == 0 and "describes another version" in err, err
    assert "encoder identity" not in stdout
    assert not hasattr(gaussood.load(tmp_path / "stale.npz"), "provenance_")


def test_a_plain_state_dict_says_how_to_load_it(files, tmp_path, capsys):
    code, _, err = run(capsys, "embed", "--encoder", files / "my_resnet18.pt", "--images",
                       files / "test", *CPU, "--out", tmp_path / "x.npy")
    assert_error(err, "embed", code, 1, "plain weights",
                 f"--encoder torchvision:resnet18 --weights {files / 'my_resnet18.pt'}")
    code, _, err = run(capsys, "score", "--scorer", tmp_path / "none.npz", "--images",
                       files / "test", "--encoder", files / "my_resnet18.pt", "--weights",
                       files / "my_resnet18.pt", "--out", tmp_path / "s.csv")
    assert_error(err, "score", code, 2, "--weights goes with --encoder torchvision:NAME only")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _trap(tmp_path, monkeypatch):
    """A module that records being imported (and then fails loudly)."""
    marker = tmp_path / "IMPORTED"
    (tmp_path / f"{TRAP}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "raise SystemExit('a module named in a file was imported')\n"
        "def build():\n    raise SystemExit('built')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(TRAP, None)
    return marker


def test_files_naming_a_module_never_import_it(files, tmp_path, capsys, monkeypatch):
    marker = _trap(tmp_path, monkeypatch)
    spec = f"{TRAP}:build"
    # an encoder file whose architecture is an import spec
    payload = encoder_payload(Encoder("small"))
    payload["config"]["model"] = spec
    torch.save(payload, tmp_path / "evil.pt")
    code, _, err = run(capsys, "embed", "--encoder", tmp_path / "evil.pt", "--images",
                       files / "test", *CPU, "--out", tmp_path / "x.npy")
    assert_error(err, "embed", code, 1)
    # a scorer file whose class is an import spec
    assert run(capsys, "embed", "--encoder", files / "enc.pt", *CPU, "--images",
               files / "fit", "--out", tmp_path / "fit.npy")[0] == 0
    assert run(capsys, "fit", "--embeddings", tmp_path / "fit.npy", "--scorer", "gaussian",
               "--out", tmp_path / "g.npz")[0] == 0
    with np.load(tmp_path / "g.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(str(arrays["__gaussood__"]))
    header["class"] = spec
    np.savez(tmp_path / "evil.npz", **{**arrays, "__gaussood__": np.array(json.dumps(header))})
    code, _, err = run(capsys, "score", "--scorer", tmp_path / "evil.npz", "--images",
                       files / "test", "--encoder", files / "enc.pt", *CPU,
                       "--out", tmp_path / "s.csv")
    assert_error(err, "score", code, 1, "unknown scorer class")
    # a scorer (and embeddings) whose stored identity names the module: compared, not used
    identity = {"weights_sha256": None, "layer": "output", "preprocessing": "raw",
                "callable": f"{TRAP}.build", "spec": spec}
    record = json.loads((tmp_path / "fit.encoder.json").read_text())
    record["encoder_identity"] = identity
    (tmp_path / "fit.encoder.json").write_text(json.dumps(record))
    code, stdout, err = run(capsys, "fit", "--embeddings", tmp_path / "fit.npy", "--scorer",
                            "gaussian", "--out", tmp_path / "named.npz")
    assert code == 0 and "with the encoder identity" in stdout, err
    assert gaussood.load(tmp_path / "named.npz").provenance_ == {"encoder_identity": identity}
    code, _, err = run(capsys, "score", "--scorer", tmp_path / "named.npz", "--images",
                       files / "test", "--encoder", files / "enc.pt", *CPU,
                       "--out", tmp_path / "s.csv")
    assert_error(err, "score", code, 1, "another encoder")
    assert TRAP not in sys.modules and not marker.exists()


def test_companions_and_refusals(files, tmp_path, capsys):
    enc = ["--encoder", files / "enc.pt", *CPU]
    out = tmp_path / "emb.npy"
    # a folder, then an image array to the same name: the paths file goes
    assert run(capsys, "embed", *enc, "--images", files / "test", "--out", out)[0] == 0
    assert (tmp_path / "emb.paths.csv").exists()
    np.save(tmp_path / "arr.npy", np.zeros((3, 40, 30, 3), np.uint8))
    code, _, err = run(capsys, "embed", *enc, "--images", tmp_path / "arr.npy", "--out", out)
    assert code == 0 and "removed stale" in err and np.load(out).shape == (3, 256)
    assert not (tmp_path / "emb.paths.csv").exists()
    assert json.loads((tmp_path / "emb.encoder.json").read_text())["shape"] == [3, 256]

    # outputs (and their companions) that are inputs are refused, before anything runs
    (tmp_path / "x.encoder.json").write_bytes((files / "enc.pt").read_bytes())
    (tmp_path / "dir.npy").mkdir()
    write_photos(tmp_path / "dir.npy", 2, seed=3)
    (tmp_path / "w.paths.csv").write_bytes((files / "my_resnet18.pt").read_bytes())
    (tmp_path / "enc.csv").write_bytes((files / "enc.pt").read_bytes())
    cases = [
        ("embed", ["--encoder", tmp_path / "x.encoder.json", "--images", files / "test",
                   "--out", tmp_path / "x.npy"], "the encoder identity file"),
        ("embed", [*enc, "--images", tmp_path / "dir.npy", "--out", tmp_path / "dir.npy"],
         "--out"),
        ("embed", ["--encoder", "torchvision:resnet18", "--weights", tmp_path / "w.paths.csv",
                   "--images", files / "test", "--out", tmp_path / "w.npy"], "the paths file"),
        ("score", ["--scorer", tmp_path / "emb.npy", "--images", files / "test", "--encoder",
                   tmp_path / "enc.csv", "--out", tmp_path / "enc.csv"], "--out"),
    ]
    before = snapshot(tmp_path)
    for command, argv, what in cases:
        code, _, err = run(capsys, command, *argv)
        assert_error(err, command, code, 2, what, "is the same file as")
    assert snapshot(tmp_path) == before


def test_usage_and_image_errors(files, tmp_path, capsys):
    enc = ["--encoder", files / "enc.pt", *CPU]
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken"
    write_photos(broken, 2, seed=4)
    (broken / "bad.jpg").write_bytes(b"not a JPEG")
    (tmp_path / "allbad").mkdir()
    (tmp_path / "allbad" / "bad.png").write_bytes(b"not a PNG")
    out = tmp_path / "o.npy"
    cases = [
        (["embed", *enc, "--images", tmp_path / "empty", "--out", out], 1, "no image files"),
        (["embed", *enc, "--images", tmp_path / "allbad", "--out", out], 1, "could be read"),
        (["embed", *enc, "--images", broken, "--strict", "--out", out], 1, "bad.jpg"),
        (["embed", *enc, "--dataset", "uniform-noise", "--strict", "--out", out], 2,
         "--strict applies to --images FOLDER only"),
        (["embed", *enc, "--images", broken, "--layer", "neck", "--out", out], 1, "neck"),
        (["embed", *enc, "--images", broken, "--preprocessing", "{bad", "--out", out], 2,
         "JSON object"),
        (["embed", "--encoder", "torchvision:resnet1", "--images", broken, "--out", out], 1,
         "resnet18"),
        (["embed", "--encoder", tmp_path / "none.pt", "--images", broken, "--out", out], 1,
         "encoder file not found"),
        (["score", "--scorer", tmp_path / "g.npz", "--images", broken, "--out",
          tmp_path / "s.csv"], 2, "--images needs --encoder"),
        (["score", "--scorer", tmp_path / "g.npz", "--embeddings", tmp_path / "x.npy",
          "--layer", "head", "--out", tmp_path / "s.csv"], 2, "--layer apply to --images only"),
        (["score", "--scorer", tmp_path / "g.npz", "--out", tmp_path / "s.csv"], 2,
         "exactly one of --embeddings"),
    ]
    for argv, expected, word in cases:
        code, _, err = run(capsys, *argv)
        assert_error(err, argv[0], code, expected, word)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["allbad", "broken", "empty"], names     # no output, no partial file
    # without --strict the unreadable file is skipped, said, and left out of the rows
    code, stdout, err = run(capsys, "embed", *enc, "--images", broken, "--out", out)
    assert code == 0 and "1 unreadable file(s) skipped" in stdout
    assert "bad.jpg" in err and "--strict stops instead" in err
    _, rows = read_rows(tmp_path / "o.paths.csv")
    assert len(rows) == 2 and not any("bad.jpg" in p for _, p in rows)


def test_embed_and_score_a_file_name_that_is_not_utf8(files, tmp_path, capsys):
    """A file name with bytes that are not UTF-8 (legal on Linux) reaches the .paths.csv
    and the score CSV as its own bytes, instead of failing after all the work."""
    folder = tmp_path / "odd"
    folder.mkdir()
    name = os.fsdecode(b"bad\xff.png")
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(folder / name)
    Image.fromarray(np.full((32, 32, 3), 30, np.uint8)).save(folder / "good.png")
    out = tmp_path / "emb.npy"
    code, _, err = run(capsys, "embed", "--encoder", files / "enc.pt", "--images", folder,
                       *CPU, "--out", out)
    assert code == 0, err
    raw = (tmp_path / "emb.paths.csv").read_bytes()
    assert b"bad\xff.png" in raw and b"good.png" in raw
    np.save(tmp_path / "fit.npy", np.random.default_rng(0).normal(size=(300, 256)))
    assert run(capsys, "fit", "--embeddings", tmp_path / "fit.npy", "--scorer", "gaussian",
               "--out", tmp_path / "g.npz")[0] == 0
    code, _, err = run(capsys, "score", "--scorer", tmp_path / "g.npz", "--encoder",
                       files / "enc.pt", "--images", folder, *CPU, "--out", tmp_path / "s.csv")
    assert code in (0, 1), err  # an identity mismatch is refused with a message, never a crash
    assert "Traceback" not in err


def test_several_layers_embed_fit_score_as_the_python_path(files, tmp_path, capsys):
    """embed --layer backbone --layer head (one pass, one file and identity per layer),
    fit on both files, score --images with both layers: the scores of
    OODFilter(layer=[...]) on the same images."""
    from gaussood import GaussianScorer, OODFilter

    enc = ["--encoder", files / "enc.pt", *CPU]
    layers = ["--layer", "backbone", "--layer", "head"]
    code, stdout, err = run(capsys, "embed", *enc, *layers, "--images", files / "fit",
                            "--out", tmp_path / "fit.npy")
    assert code == 0, err
    assert "60 images from folder" in stdout and "(backbone, head)" in stdout
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["fit.backbone.encoder.json", "fit.backbone.npy", "fit.head.encoder.json",
                     "fit.head.npy", "fit.paths.csv"], names
    _, rows = read_rows(tmp_path / "fit.paths.csv")
    paths = [p for _, p in rows]
    for layer in ("backbone", "head"):   # what one layer alone gives, and its identity
        alone = make_encoder(files / "enc.pt", layer=layer, device="cpu")
        np.testing.assert_allclose(np.load(tmp_path / f"fit.{layer}.npy"), alone.embed(paths),
                                   rtol=1e-5, atol=1e-5)
        record = json.loads((tmp_path / f"fit.{layer}.encoder.json").read_text())
        assert record["encoder_identity"] == json.loads(json.dumps(alone.identity()))
    model = tmp_path / "g.npz"
    code, stdout, err = run(capsys, "fit", "--embeddings", tmp_path / "fit.backbone.npy",
                            "--embeddings", tmp_path / "fit.head.npy", "--scorer", "gaussian",
                            "--alpha", 0.2, "--out", model)
    assert code == 0 and "with the encoder identity of the embeddings" in stdout, err
    out = tmp_path / "s.npz"
    code, stdout, err = run(capsys, "score", "--scorer", model, "--images", files / "test",
                            *enc, *layers, "--out", out)
    assert code == 0 and "identity" not in err, err
    filt = OODFilter(GaussianScorer(random_state=0), files / "enc.pt", alpha=0.2,
                     layer=["backbone", "head"], batch_size=256, device="cpu",
                     progress=False).fit(files / "fit")
    expected = filt.evaluate(files / "test")
    with np.load(out) as result:
        assert list(result["path"]) == expected.paths
        np.testing.assert_allclose(result["score"], expected.score, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(result["pvalue"], expected.pvalue, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(result["flagged"], ~expected.keep)
    # the CLI's scorer carries the identity OODFilter checks, and the reverse
    OODFilter.from_fitted(gaussood.load(model), files / "enc.pt", layer=["backbone", "head"],
                          device="cpu")
    filt.scorer_.save(tmp_path / "py.npz")
    assert run(capsys, "score", "--scorer", tmp_path / "py.npz", "--images", files / "test",
               *enc, *layers, "--out", tmp_path / "py.npz.npz")[0] == 0
    with np.load(tmp_path / "py.npz.npz") as result:
        np.testing.assert_allclose(result["score"], expected.score, rtol=1e-6, atol=1e-6)

    # refused: the layers in another order, one layer, another encoder
    score = ["score", "--scorer", model, "--images", files / "test", "--out", tmp_path / "r.csv"]
    for extra, words in (
            ([*enc, "--layer", "head", "--layer", "backbone"],
             ["fitted on the layers backbone, head, in this order",
              "give --layer backbone --layer head"]),
            (enc, ["got backbone: give --layer backbone --layer head"]),
            (["--encoder", files / "other.pt", *CPU, *layers],
             ["another encoder", "weights_sha256"])):
        code, _, err = run(capsys, *score, *extra)
        assert_error(err, "score", code, 1, *words)
    code, _, err = run(capsys, "embed", *enc, "--layer", "head", "--layer", "head", "--images",
                       files / "test", "--out", tmp_path / "t.npy")
    assert_error(err, "embed", code, 2, "--layer head is given twice")
    assert not (tmp_path / "r.csv").exists() and not list(tmp_path.glob("t.*"))


def test_several_layers_of_a_dataset_and_of_a_torchvision_model(files, tmp_path, capsys):
    """A dataset embeds all layers in one pass (no cache); layer names that are not
    file-name characters become '-', and names that would collide are refused."""
    weights = ["--encoder", "torchvision:resnet18", "--weights", files / "my_resnet18.pt", *CPU]
    code, stdout, err = run(capsys, "embed", *weights, "--layer", "layer4", "--layer",
                            "fc:input", "--dataset", "uniform-noise", "--n", 6,
                            "--out", tmp_path / "n.npy")
    assert code == 0, err
    A, B = np.load(tmp_path / "n.layer4.npy"), np.load(tmp_path / "n.fc-input.npy")
    assert A.shape == B.shape == (6, 512)
    np.testing.assert_allclose(A, B, rtol=1e-5, atol=1e-5)   # avgpool of layer4 = fc's input
    for name, layer in (("n.layer4", "layer4"), ("n.fc-input", "fc:input")):
        record = json.loads((tmp_path / f"{name}.encoder.json").read_text())
        assert record["encoder_identity"]["layer"] == layer and record["shape"] == [6, 512]
    code, _, err = run(capsys, "embed", *weights, "--layer", "fc:input", "--layer", "fc-input",
                       "--images", files / "test", "--out", tmp_path / "c.npy")
    assert_error(err, "embed", code, 2, "two outputs would be written to")
    assert not list(tmp_path.glob("c.*"))


def test_cli_batch_size_default_is_the_librarys():
    """The CLI's --batch-size default (kept torch-free) is the library's, chosen by memory."""
    from gaussood.cli._encoder import EMBED_BATCH_SIZE as CLI_DEFAULT
    from gaussood.deep.encoders import EMBED_BATCH_SIZE

    assert CLI_DEFAULT == EMBED_BATCH_SIZE == 64


def test_shift_on_images_equals_shift_on_their_embeddings(files, tmp_path, capsys):
    """'shift --images DIR --encoder E' embeds with the scorer's encoder (identity checked)
    and tests the batch as 'shift --embeddings' of the same images does."""
    enc = ["--encoder", files / "enc.pt", *CPU]
    assert run(capsys, "embed", *enc, "--images", files / "fit", "--out",
               tmp_path / "fit.npy")[0] == 0
    assert run(capsys, "fit", "--embeddings", tmp_path / "fit.npy", "--scorer", "gaussian",
               "--out", tmp_path / "g.npz")[0] == 0
    assert run(capsys, "embed", *enc, "--images", files / "test", "--out",
               tmp_path / "t.npy")[0] == 0
    code_e, out_e, err = run(capsys, "shift", "--scorer", tmp_path / "g.npz", "--embeddings",
                             tmp_path / "t.npy")
    assert code_e in (0, 1), err
    code_i, out_i, err = run(capsys, "shift", "--scorer", tmp_path / "g.npz", "--images",
                             files / "test", *enc)
    assert (code_i, out_i) == (code_e, out_e), err
    code, _, err = run(capsys, "shift", "--scorer", tmp_path / "g.npz", "--images",
                       files / "test", "--encoder", files / "other.pt", *CPU)
    assert_error(err, "shift", code, 2, "another encoder")
