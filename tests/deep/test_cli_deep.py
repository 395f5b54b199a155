"""The gaussood command line, torch side: train and embed through the real code path.

Uniform noise needs no files, so these run everywhere; the CIFAR-10 test runs only
where GAUSSOOD_DATA points at the data (labels files, class subsets).
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gaussood.cli import main
from gaussood.deep import embed_images, load_dataset, load_encoder
from gaussood.deep.checkpoint import file_sha256, read_payload

SMOKE = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "32", "--threads", "1",
         "--device", "cpu", "--quiet"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err, command, code, expected):
    assert code == expected, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gaussood {command}: error: "), err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A 2-step InfoNCE encoder trained on uniform noise through ``gaussood train``."""
    folder = tmp_path_factory.mktemp("train")
    out = folder / "enc.pt"
    code = main(["train", "--dataset", "uniform-noise", "--n", "96", *SMOKE,
                 "--work-dir", str(folder / "work"), "--out", str(out)])
    assert code == 0
    return out


def test_train_writes_encoder_and_provenance(encoder):
    provenance = json.loads(encoder.with_suffix(".json").read_text())
    assert provenance["sha256"] == file_sha256(encoder)
    assert provenance["size_bytes"] == encoder.stat().st_size
    assert provenance["weights"] == "float16" and provenance["encoder_file"] == "enc.pt"
    config = provenance["config"]
    assert (config["model"], config["objective"], config["epochs"], config["batch_size"],
            config["steps_per_epoch"]) == ("small", "infonce", 1, 32, 2)
    assert len(provenance["history"]) == 1 and np.isfinite(provenance["history"][0]["loss"])
    assert provenance["data"]["train"].startswith("uniform-noise")
    assert provenance["data"]["n_train"] == 96 and provenance["data"]["eval"] is None
    assert provenance["command"].startswith("gaussood train --dataset uniform-noise")
    payload = read_payload(encoder)
    assert all(v.dtype == torch.float16 for v in payload["state_dict"].values()
               if v.is_floating_point())
    assert not list(encoder.parent.glob("tmp-*"))  # no partial files left
    load_encoder(encoder)


def test_train_resumes_from_work_dir_and_refuses_another_config(encoder, capsys):
    work = encoder.parent / "work"
    before = json.loads(encoder.with_suffix(".json").read_text())["history"]
    again = encoder.parent / "again.pt"
    code, _, err = run(capsys, "train", "--dataset", "uniform-noise", "--n", 96, *SMOKE,
                       "--work-dir", work, "--out", again)
    assert code == 0, err
    assert json.loads(again.with_suffix(".json").read_text())["history"] == before
    code, _, err = run(capsys, "train", "--dataset", "uniform-noise", "--n", 96, *SMOKE,
                       "--lr", 0.5, "--work-dir", work, "--out", encoder.parent / "no.pt")
    assert_one_line_error(err, "train", code, 1)
    assert "another configuration" in err and not (encoder.parent / "no.pt").exists()


def test_train_errors(tmp_path, capsys):
    out = tmp_path / "enc.pt"
    code, _, err = run(capsys, "train", "--dataset", "uniform-noise", "--n", 64, *SMOKE,
                       "--objective", "supervised", "--out", out)
    assert_one_line_error(err, "train", code, 1)
    assert "labelled" in err
    code, _, err = run(capsys, "train", "--dataset", "uniform-noise", "--n", 64, *SMOKE,
                       "--objective", "supcon", "--out", out)
    assert_one_line_error(err, "train", code, 1)
    assert "objective='supcon' needs a labelled" in err
    code, _, err = run(capsys, "train", "--dataset", "no-such-set", *SMOKE, "--out", out)
    assert_one_line_error(err, "train", code, 1)
    assert "unknown dataset" in err
    code, _, err = run(capsys, "train", "--model", "vit", "--out", out)
    assert_one_line_error(err, "train", code, 2)
    assert not out.exists()


def test_embed_images(encoder, tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    out = tmp_path / "emb.npy"
    code, stdout, err = run(capsys, "embed", "--encoder", encoder, "--images",
                            tmp_path / "images.npy", "--device", "cpu", "--quiet", "--out", out)
    assert code == 0, err
    feats = np.load(out)
    assert feats.dtype == np.float32 and feats.shape[0] == 40
    expected = embed_images(load_encoder(encoder), images, device="cpu")
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "emb.labels.npy").exists()
    assert "40 x" in stdout

    code, _, err = run(capsys, "embed", "--encoder", encoder, "--images", tmp_path / "images.npy",
                       "--layer", "head", "--device", "cpu", "--quiet", "--out", out)
    assert code == 0, err
    assert np.load(out).shape == (40, 128)  # proj_dim


def test_embed_dataset_is_cached(encoder, tmp_path, capsys):
    out = tmp_path / "noise.npy"
    argv = ["embed", "--encoder", encoder, "--dataset", "uniform-noise", "--n", 64, "--seed", 4,
            "--device", "cpu", "--quiet", "--cache-dir", tmp_path / "cache", "--out", out]
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    feats = np.load(out)
    assert feats.shape[0] == 64 and feats.dtype == np.float32
    assert not (tmp_path / "noise.labels.npy").exists()  # noise sets are unlabelled
    assert len(list((tmp_path / "cache" / "embeddings").glob("uniform-noise-backbone-*.npy"))) == 1
    images = load_dataset("uniform-noise", n=64, seed=4).images
    np.testing.assert_allclose(feats, embed_images(load_encoder(encoder), images, device="cpu"),
                               rtol=1e-5, atol=1e-6)
    assert run(capsys, *argv)[0] == 0  # from the cache
    np.testing.assert_array_equal(np.load(out), feats)


def test_embed_errors(encoder, tmp_path, capsys):
    np.save(tmp_path / "float.npy", np.zeros((4, 32, 32, 3), dtype=np.float32))
    out = tmp_path / "emb.npy"
    cases = [
        (["--images", tmp_path / "float.npy"], 1, "must be uint8"),
        (["--images", tmp_path / "missing.npy"], 1, "images file not found"),
        (["--images", tmp_path / "float.npy", "--dataset", "uniform-noise"], 2, "exactly one"),
        ([], 2, "exactly one"),
        (["--images", tmp_path / "float.npy", "--n", 5], 2, "--n apply to --dataset only"),
        (["--dataset", "uniform-noise", "--classes", "0-1"], 1, "unlabelled"),
    ]
    for extra, expected, message in cases:
        code, _, err = run(capsys, "embed", "--encoder", encoder, "--device", "cpu", "--quiet",
                           "--out", out, *extra)
        assert_one_line_error(err, "embed", code, expected)
        assert message in err, (extra, err)
    code, _, err = run(capsys, "embed", "--encoder", tmp_path / "none.pt", "--dataset",
                       "uniform-noise", "--out", out)
    assert_one_line_error(err, "embed", code, 1)
    assert "encoder file not found" in err
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    code, _, err = run(capsys, "embed", "--encoder", tmp_path / "bad.pt", "--dataset",
                       "uniform-noise", "--n", 8, "--no-cache", "--out", out)
    assert_one_line_error(err, "embed", code, 1)
    assert not out.exists()


@pytest.mark.skipif(not os.environ.get("GAUSSOOD_DATA"),
                    reason="set GAUSSOOD_DATA to the folder with the CIFAR-10 archive")
def test_cifar_train_embed_with_labels(tmp_path, capsys):
    root = os.environ["GAUSSOOD_DATA"]
    try:
        load_dataset("cifar10", "test", root=root, n=8)
    except FileNotFoundError:
        pytest.skip("CIFAR-10 not found under GAUSSOOD_DATA")
    enc = tmp_path / "enc.pt"
    code, _, err = run(capsys, "train", "--data-root", root, "--classes", "0-1", "--n", 128,
                       "--no-eval", *SMOKE, "--out", enc)
    assert code == 0, err
    provenance = json.loads(enc.with_suffix(".json").read_text())
    assert provenance["data"]["classes"] == [0, 1] and "CIFAR-10" in provenance["data"]["train"]
    out = tmp_path / "test.npy"
    code, _, err = run(capsys, "embed", "--encoder", enc, "--dataset", "cifar10", "--data-root",
                       root, "--split", "test", "--classes", "0,1", "--n", 64, "--device", "cpu",
                       "--quiet", "--no-cache", "--out", out)
    assert code == 0, err
    labels = np.load(tmp_path / "test.labels.npy")
    expected = load_dataset("cifar10", "test", root=root, classes=[0, 1], n=64).labels
    np.testing.assert_array_equal(labels, expected)
    assert np.load(out).shape[0] == 64
    # fit a class-conditional scorer on what embed wrote
    assert run(capsys, "fit", "--embeddings", out, "--labels", tmp_path / "test.labels.npy",
               "--scorer", "gaussian", "--out", tmp_path / "g.npz")[0] == 0
    # embedding unlabelled images to the same name removes the stale labels file
    np.save(tmp_path / "images.npy", np.zeros((4, 32, 32, 3), dtype=np.uint8))
    code, _, err = run(capsys, "embed", "--encoder", enc, "--images", tmp_path / "images.npy",
                       "--device", "cpu", "--quiet", "--out", out)
    assert code == 0 and "removed stale" in err
    assert not (tmp_path / "test.labels.npy").exists()


def test_bench_evaluates_an_encoder_file(encoder, tmp_path, capsys):
    code, out, err = run(capsys, "bench", "--encoder", encoder, "--dataset", "uniform-noise",
                         "--ood", "gaussian-noise", "--quick", "--n-fit", 100, "--n-eval", 100,
                         "--seeds", 4, "--quiet", "--out-dir", tmp_path, "--name", "b")
    assert code == 0, err
    assert out.startswith("### Setting `uniform-noise`: AUROC (%), mean over seeds [4]")
    assert (tmp_path / "b.md").read_text().strip() == out.strip()
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["seeds"] == [4] and "Gaussian (pooled)" in result["summary"]
    code, _, err = run(capsys, "bench", "--encoder", tmp_path / "none.pt")
    assert_one_line_error(err, "bench", code, 1)
    assert "encoder file not found" in err


def test_bench_calibrates_on_held_out_images(encoder, tmp_path, capsys):
    code, out, err = run(capsys, "bench", "--encoder", encoder, "--dataset", "uniform-noise",
                         "--ood", "gaussian-noise", "--quick", "--n-fit", 100, "--n-eval", 100,
                         "--calibrate-held-out", 60, "--seeds", 4, "--quiet")
    assert code == 0, err
    assert "- ID calibration: 60 other random images per seed" in out
    code, out, err = run(capsys, "bench", "--encoder", encoder, "--dataset", "uniform-noise",
                         "--ood", "gaussian-noise", "--quick", "--n-fit", 100, "--n-eval", 100,
                         "--seeds", 4, "--quiet")  # default: every other read image (2 n_eval)
    assert code == 0, err
    assert "- ID calibration: 100 other random images per seed" in out
    code, out, err = run(capsys, "bench", "--encoder", encoder, "--dataset", "uniform-noise",
                         "--ood", "gaussian-noise", "--quick", "--n-fit", 100, "--n-eval", 100,
                         "--calibrate-held-out", "fit", "--seeds", 4, "--quiet")
    assert code == 0, err
    assert "- ID calibration: on the fit rows" in out
    for bad in (0, "all"):
        code, _, err = run(capsys, "bench", "--encoder", encoder, "--calibrate-held-out", bad)
        assert_one_line_error(err, "bench", code, 2)
        assert "want 'rest', 'fit' or a positive integer" in err


def test_train_nproc_is_passed_through_and_only_rank_0_writes(tmp_path, monkeypatch, capsys):
    """``--nproc`` reaches train_encoder (not TrainConfig); a rank other than 0 (under
    torchrun) returns 0 without writing --out or the provenance."""
    import gaussood.deep
    from gaussood.deep import TrainResult
    from gaussood.deep.models import Encoder

    seen = {}

    def fake_train_encoder(train, config, **kwargs):
        seen.update(kwargs, batch_size=config.batch_size)
        return TrainResult(Encoder("small"), [], None, 0, rank=1, world_size=2)

    monkeypatch.setattr(gaussood.deep, "train_encoder", fake_train_encoder)
    out = tmp_path / "enc.pt"
    code, _, err = run(capsys, "train", "--dataset", "uniform-noise", "--n", "64", *SMOKE,
                       "--nproc", "2", "--out", out)
    assert code == 0, err
    assert seen["nproc"] == 2 and seen["batch_size"] == 32
    assert not out.exists() and not out.with_suffix(".json").exists()
    code, _, err = run(capsys, "train", "--dataset", "uniform-noise", "--n", "64", *SMOKE,
                       "--nproc", "0", "--out", out)
    assert_one_line_error(err, "train", code, 2)


def test_train_nproc_must_divide_the_global_batch(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--dataset", "uniform-noise", "--n", "64", *SMOKE,
                       "--nproc", "3", "--out", tmp_path / "enc.pt")
    assert_one_line_error(err, "train", code, 1)
    assert "batch_size=32 is the global batch and must split evenly across the 3" in err


def test_benchmark_training_script_writes_the_training_record(tmp_path, monkeypatch):
    """benchmarks/train_encoder.py writes the schema of ``gaussood train``
    (gaussood.provenance.training_record): ``config``, not the old ``recipe``."""
    import importlib.util

    from gaussood.deep.data import ImageSet
    from gaussood.provenance import TRAINING_KEYS, data_fingerprint

    spec = importlib.util.spec_from_file_location(
        "train_encoder_script", Path(__file__).resolve().parents[2] / "benchmarks" /
        "train_encoder.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rng = np.random.default_rng(0)
    sets = {split: ImageSet(rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
                            np.arange(64) % 2, "toy", ["a", "b"], f"toy {split}; N=64")
            for split in ("train", "test")}
    monkeypatch.setattr(script, "load_dataset", lambda _name, split, **kw: sets[split])
    script.main(["--threads", "1", "--epochs", "1", "--batch-size", "32", "--steps-per-epoch",
                 "2", "--name", "toy", "--work-dir", str(tmp_path / "work"),
                 "--checkpoint-dir", str(tmp_path), "--results-dir", str(tmp_path / "results")])
    record = json.loads((tmp_path / "toy.json").read_text())
    assert list(record)[:len(TRAINING_KEYS)] == list(TRAINING_KEYS) and "recipe" not in record
    assert record["config"]["steps_per_epoch"] == 2 and record["sha256"] == file_sha256(
        tmp_path / "toy.pt")
    assert record["data"]["eval"] == "toy test; N=64"
    assert record["data"]["fingerprint"] == data_fingerprint(sets["train"])
