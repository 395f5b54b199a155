"""gaussood.provenance: file and data hashes, the code hash of callables, the identity
check, and the training record (numpy only: no torch here)."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gaussood import provenance
from gaussood.provenance import (Unverifiable, check_identity, code_sha256, data_fingerprint,
                                 file_sha256, read_training_record, training_record)

REPO = Path(__file__).resolve().parents[1]


def scale(x, factor):
    return x * factor


def test_file_sha256_is_hashlib_of_the_bytes(tmp_path):
    path = tmp_path / "blob"
    data = np.random.default_rng(0).bytes(3 << 20)      # three 1 MiB blocks
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_one_import_spec_pattern():
    pytest.importorskip("torch")
    from gaussood.deep import encoders

    assert encoders._IMPORT_SPEC is provenance.IMPORT_SPEC
    assert provenance.IMPORT_SPEC.match("pkg.mod:factory")
    assert not provenance.IMPORT_SPEC.match("pkg.mod:factory()")


def test_data_fingerprint_keeps_the_checkpoint_definition():
    """sha256 of the images' bytes then the labels as int64: the hash training checkpoints
    have recorded since the first release (so they still resume)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)
    labels = np.arange(20, dtype=np.int32) % 3
    got = data_fingerprint(SimpleNamespace(images=images, labels=labels, name="toy"))
    want = hashlib.sha256(images.tobytes() + labels.astype(np.int64).tobytes()).hexdigest()
    assert got == {"sha256": want, "n": 20, "shape": [20, 4, 4, 3], "name": "toy",
                   "classes": [0, 1, 2]}
    # other content, other shape of the same bytes: other fingerprints
    other = data_fingerprint(SimpleNamespace(images=images[::-1], labels=labels, name="toy"))
    reshaped = data_fingerprint(SimpleNamespace(images=images.reshape(20, 2, 8, 3),
                                                labels=labels, name="toy"))
    assert other["sha256"] != got["sha256"] and reshaped["shape"] != got["shape"]


def test_partials_with_other_arguments_have_other_code_hashes():
    one, seven = functools.partial(scale, factor=1.0), functools.partial(scale, factor=7.0)
    assert code_sha256(one) != code_sha256(seven)
    assert code_sha256(one) == code_sha256(functools.partial(scale, factor=1.0))
    assert code_sha256(functools.partial(scale, 1.0)) != code_sha256(one)   # args vs keywords
    # the same name and arguments, other code: other hashes
    assert code_sha256(lambda x: x * 2) != code_sha256(lambda x: x * 3)
    a, b = 2.0, 3.0
    assert code_sha256(lambda x: x * a) != code_sha256(lambda x: x * b)     # closure values
    # a class as the factory (torchvision's norm_layer=partial(LayerNorm, eps=1e-6))
    assert code_sha256(functools.partial(SimpleNamespace, eps=1e-6)) != \
        code_sha256(functools.partial(SimpleNamespace, eps=1e-5))
    arrays = [functools.partial(scale, factor=np.full(3, v)) for v in (1.0, 1.0, 2.0)]
    hashes = [code_sha256(p) for p in arrays]
    assert hashes[0] == hashes[1] != hashes[2]


def test_code_hash_is_the_same_in_another_process():
    code = ("import functools; from gaussood import metrics; from gaussood.provenance import "
            "code_sha256; print(code_sha256(functools.partial(metrics.fpr_at_tpr, tpr=0.9)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout.strip()
    from gaussood import metrics

    assert out == code_sha256(functools.partial(metrics.fpr_at_tpr, tpr=0.9))


def test_an_argument_without_a_stable_text_is_unverifiable():
    with pytest.raises(Unverifiable, match="no stable text"):
        code_sha256(functools.partial(scale, factor=object()))
    ident = provenance.encoder_identity(functools.partial(scale, factor=object()),
                                        weights_module=None, layer="output",
                                        preprocessing="raw", kind="callable")
    assert ident["code_sha256"] is None and "no stable text" in ident["unverifiable"]
    assert ident["callable"].endswith("test_provenance.scale")
    json.dumps(ident)
    with pytest.warns(UserWarning, match="cannot check .* no stable hash"):
        check_identity(ident, dict(ident), "s.npz", "the encoder given")
    with pytest.raises(ValueError, match="another encoder"):   # what it can compare, it does
        check_identity(ident, {**ident, "layer": "fc"}, "s.npz", "the encoder given")


def test_an_identity_from_before_code_hashes_is_compared_without_them():
    new = provenance.encoder_identity(functools.partial(scale, factor=1.0),
                                      weights_module=None, layer="output",
                                      preprocessing="raw", kind="callable")
    old = {k: v for k, v in new.items() if k != "code_sha256"}
    with pytest.warns(UserWarning, match="older gaussood"):
        check_identity(old, new, "s.npz", "the encoder given")
    with pytest.raises(ValueError, match="callable"):          # but the name still counts
        check_identity({**old, "callable": "other.f"}, new, "s.npz", "the encoder given")
    other = provenance.encoder_identity(functools.partial(scale, factor=7.0),
                                        weights_module=None, layer="output",
                                        preprocessing="raw", kind="callable")
    with pytest.raises(ValueError, match="code_sha256"):
        check_identity(new, other, "s.npz", "the encoder given")


def test_training_record_schema_and_old_files(tmp_path):
    enc = tmp_path / "enc.pt"
    enc.write_bytes(b"weights")
    record = training_record(command="gaussood train", config={"model": "small"},
                             encoder_file=enc, encoder_name="enc.pt", total_steps=10, epochs=1,
                             device="cpu", data={"train": "toy", "n_train": 4},
                             knn_top1=None, train_seconds=1.5, environment={},
                             history=[{"loss": 1.0}])
    assert list(record)[:len(provenance.TRAINING_KEYS)] == list(provenance.TRAINING_KEYS)
    assert record["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert record["size_bytes"] == 7 and record["data"]["eval"] is None
    path = tmp_path / "enc.json"
    path.write_text(json.dumps(record))
    assert read_training_record(path) == record
    with pytest.raises(ValueError, match="schema keys"):
        training_record(**{k: record[k] for k in ("command", "config", "total_steps", "epochs",
                                                  "device", "data", "knn_top1",
                                                  "train_seconds", "environment")},
                        encoder_file=enc, encoder_name="enc.pt", sha256="x")
    # a file written by benchmarks/train_encoder.py before the schema: "recipe", data "test"
    shipped = read_training_record(REPO / "benchmarks/checkpoints/cifar10-cpu.json")
    assert shipped["config"]["model"] == "small" and "recipe" not in shipped
    assert shipped["data"]["eval"].startswith("CIFAR-10")
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ValueError, match="bad.json"):
        read_training_record(tmp_path / "bad.json")
