"""Tests of gaussood.deep.data on tiny files written in torchvision's on-disk formats."""

import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from gaussood.deep import data  # noqa: E402
from gaussood.deep.data import (CIFAR10_CLASSES, ImageSet, cache_dir, data_root,  # noqa: E402
                                jpeg_reencode, load_dataset)

SHARED_ARCHIVE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / \
    "cifar10_jpeg_q75.tar.xz"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GAUSSOOD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GAUSSOOD_DATA", raising=False)


def smooth_images(n, h=32, w=32, seed=0):
    """Smooth colour gradients (JPEG-friendly), one per image, uint8 (n, h, w, 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        a, b, c = rng.uniform(40, 200, size=(3, 3))
        out[i] = np.clip(a + 40 * np.sin(3 * x[..., None] + b / 50)
                         + 30 * np.cos(2 * y[..., None] + c / 50), 0, 255)
    return out


def to_cifar_rows(images):
    """(N, 32, 32, 3) -> CIFAR's (N, 3072) rows: all R, then all G, then all B."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_pickle(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def write_idx(path, array, magic):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def jpeg_bytes(img, quality=75):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_jpeg_tar(path, per_class, classes=(0, 3, 9), seed=0):
    """A tiny cifar10_jpeg_q75.tar.xz: test before train and files out of order, like a
    tar made by walking a directory; returns {split: [(label, filename, jpeg bytes)]}."""
    rng = np.random.default_rng(seed)
    content = {}
    with tarfile.open(path, "w:xz") as tf:
        for split in ("test", "train"):
            content[split] = []
            for c in classes:
                names = [f"{i:04d}.jpg" for i in range(per_class[split])]
                for fname in rng.permutation(names):
                    raw = jpeg_bytes(smooth_images(1, seed=int(rng.integers(1 << 30)))[0])
                    info = tarfile.TarInfo(f"cifar10-jpeg/{split}/{CIFAR10_CLASSES[c]}/{fname}")
                    info.size = len(raw)
                    tf.addfile(info, io.BytesIO(raw))
                    content[split].append((c, fname, raw))
    return content


# --------------------------------------------------------------------------- errors, paths
def test_unknown_name_and_split(tmp_path):
    with pytest.raises(ValueError, match="valid names: cifar10, cifar100, svhn"):
        load_dataset("imagenet", root=tmp_path)
    with pytest.raises(ValueError, match="valid splits: train, test"):
        load_dataset("cifar10", "val", root=tmp_path)


def test_data_root_and_cache_dir(tmp_path, monkeypatch):
    assert data_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("GAUSSOOD_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("GAUSSOOD_DATA")
    assert data_root() == Path.home() / ".cache" / "gaussood" / "data"
    assert not (tmp_path / "cache").exists()
    assert cache_dir() == tmp_path / "cache" and (tmp_path / "cache").is_dir()


def test_missing_files_name_paths_and_remedy(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar10_jpeg_q75.tar.xz") in msg
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in msg
    assert "download=True" in msg and f"put cifar10_jpeg_q75.tar.xz in {tmp_path}" in msg
    with pytest.raises(FileNotFoundError, match="test_32x32.mat"):
        load_dataset("svhn", "test", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        load_dataset("cifar100", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"MNIST/raw/t10k-images-idx3-ubyte\[\.gz\]"):
        load_dataset("mnist", "test", root=tmp_path)
    monkeypatch.setattr(data, "DEBIAN_FASHION", tmp_path / "no-debian")
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("fashion-mnist", root=tmp_path)
    msg = str(err.value)
    assert "FashionMNIST/raw/train-images-idx3-ubyte" in msg and "no-debian" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "download=True" in msg


# ------------------------------------------------------------------------ CIFAR pickles
def test_cifar10_pickled_batches(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    imgs = smooth_images(12, seed=1)
    labels = np.arange(12) % 10
    for i in range(5):  # train: 2 images per batch (bytes keys, as torchvision reads them)
        sl = slice(2 * i, 2 * i + 2)
        write_pickle(base / f"data_batch_{i + 1}",
                     {b"batch_label": b"x", b"labels": labels[sl].tolist(),
                      b"data": to_cifar_rows(imgs[sl]), b"filenames": [b"a", b"b"]})
    write_pickle(base / "test_batch", {b"labels": labels[10:].tolist(),
                                       b"data": to_cifar_rows(imgs[10:])})
    train = load_dataset("cifar10", root=tmp_path)
    assert train.images.shape == (10, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64
    np.testing.assert_array_equal(train.images, imgs[:10])
    np.testing.assert_array_equal(train.labels, labels[:10])
    assert train.classes == CIFAR10_CLASSES and len(train) == 10
    assert "cifar-10-batches-py" in train.source and train.source.endswith("N=10")
    test = load_dataset("cifar10", "test", root=tmp_path, jpeg_quality=75)
    assert test.images.shape == (2, 32, 32, 3) and "JPEG re-encoded" in test.source
    assert not np.array_equal(test.images, imgs[10:])


def test_cifar100(tmp_path):
    base = tmp_path / "cifar-100-python"
    imgs = smooth_images(6, seed=2)
    fine = [0, 99, 5, 42, 42, 7]
    names = [f"class{i:02d}" for i in range(100)]
    for split, sl in (("train", slice(0, 4)), ("test", slice(4, 6))):
        write_pickle(base / split, {"data": to_cifar_rows(imgs[sl]), "fine_labels": fine[sl],
                                    "coarse_labels": [0] * len(fine[sl]), "batch_label": split})
    write_pickle(base / "meta", {"fine_label_names": names, "coarse_label_names": ["c"] * 20})
    train = load_dataset("cifar100", root=tmp_path)
    np.testing.assert_array_equal(train.images, imgs[:4])
    np.testing.assert_array_equal(train.labels, fine[:4])
    assert train.classes == names and "CIFAR-100 train split, fine labels" in train.source
    test = load_dataset("cifar100", "test", root=tmp_path, classes=["class42"])
    np.testing.assert_array_equal(test.labels, [42])
    np.testing.assert_array_equal(test.images, imgs[4:5])
    assert "classes [42 class42]" in test.source


# ---------------------------------------------------------------------- SVHN, idx files
def write_svhn(path, imgs, y):
    from scipy.io import savemat
    savemat(str(path), {"X": imgs.transpose(1, 2, 3, 0), "y": np.asarray(y).reshape(-1, 1)})


def test_svhn_label_10_is_digit_0(tmp_path):
    imgs = smooth_images(4, seed=3)
    write_svhn(tmp_path / "train_32x32.mat", imgs, [10, 1, 9, 10])
    ds = load_dataset("svhn", root=tmp_path)
    np.testing.assert_array_equal(ds.images, imgs)
    np.testing.assert_array_equal(ds.labels, [0, 1, 9, 0])
    assert ds.labels.dtype == np.int64 and ds.classes == [str(i) for i in range(10)]
    assert "SVHN train split" in ds.source and "train_32x32.mat" in ds.source


def test_download_calls_torchvision_only_when_missing(tmp_path, monkeypatch):
    datasets = pytest.importorskip("torchvision.datasets")
    calls = []

    def fake_svhn(root, split, download):  # writes what the real one would
        calls.append((root, split, download))
        write_svhn(Path(root) / f"{split}_32x32.mat", smooth_images(2), [10, 3])

    monkeypatch.setattr(datasets, "SVHN", fake_svhn)
    ds = load_dataset("svhn", "test", root=tmp_path, download=True)
    assert calls == [(str(tmp_path), "test", True)] and list(ds.labels) == [0, 3]
    load_dataset("svhn", "test", root=tmp_path, download=True)
    assert len(calls) == 1  # present: no second download


@pytest.mark.parametrize("name, folder, gz", [("mnist", "MNIST", True),
                                              ("mnist", "MNIST", False),
                                              ("fashion-mnist", "FashionMNIST", True)])
def test_idx_files(tmp_path, name, folder, gz):
    rng = np.random.default_rng(4)
    gray = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 0, 9, 1, 1], np.uint8)
    ext = ".gz" if gz else ""
    raw = tmp_path / folder / "raw"
    write_idx(raw / f"t10k-images-idx3-ubyte{ext}", gray, 2051)
    write_idx(raw / f"t10k-labels-idx1-ubyte{ext}", labels, 2049)
    ds = load_dataset(name, "test", root=tmp_path)
    assert ds.images.shape == (5, 32, 32, 3) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.labels.dtype == np.int64
    assert (ds.images[..., 0] == ds.images[..., 2]).all()  # gray replicated
    expected = np.asarray(Image.fromarray(gray[2]).resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(ds.images[2, :, :, 1], expected)
    assert "bilinear" in ds.source and "3 channels" in ds.source and ds.source.endswith("N=5")
    assert ds.classes[0] == ("T-shirt/top" if name == "fashion-mnist" else "0")


def test_bad_idx_magic(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8), 2049)
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.zeros(2, np.uint8), 2049)
    with pytest.raises(ValueError, match="bad idx magic number 2049, expected 2051"):
        load_dataset("mnist", root=tmp_path)


# ----------------------------------------------------------------- CIFAR-10 JPEG archive
def test_cifar10_jpeg_archive_order_labels_and_cache(tmp_path, monkeypatch):
    archive = tmp_path / "cifar10_jpeg_q75.tar.xz"
    content = write_jpeg_tar(archive, {"train": 4, "test": 2})
    train = load_dataset("cifar10", root=tmp_path)
    assert train.images.shape == (12, 32, 32, 3) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.labels, [0] * 4 + [3] * 4 + [9] * 4)
    official = sorted(content["train"], key=lambda t: t[:2])  # class by class, file order
    for img, (_, _, raw) in zip(train.images, official):
        np.testing.assert_array_equal(img, np.asarray(Image.open(io.BytesIO(raw))))
    assert train.source.startswith(f"CIFAR-10 JPEG q75 archive ({archive}")
    assert "train split" in train.source and train.source.endswith("N=12")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 4  # both splits cached

    def no_decoding(*args):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(data, "_decode_jpeg_tree", no_decoding)
    test = load_dataset("cifar10", "test", root=tmp_path, jpeg_quality=75)
    np.testing.assert_array_equal(test.labels, [0, 0, 3, 3, 9, 9])
    again = load_dataset("cifar10", root=tmp_path, jpeg_quality=75)  # no double compression
    np.testing.assert_array_equal(again.images, train.images)
    assert "no-op" in again.source and "re-encoded" not in again.source
    st = archive.stat()
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # archive changed
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar10_extracted_folder(tmp_path):
    content = write_jpeg_tar(tmp_path / "a.tar.xz", {"train": 2, "test": 1}, classes=(1, 2))
    for split, items in content.items():
        for label, fname, raw in items:
            path = tmp_path / "root" / "cifar10-jpeg" / split / CIFAR10_CLASSES[label] / fname
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(raw)
    ds = load_dataset("cifar10", "test", root=tmp_path / "root")
    np.testing.assert_array_equal(ds.labels, [1, 2])
    raw = sorted(content["test"], key=lambda t: t[:2])[1][2]
    np.testing.assert_array_equal(ds.images[1], np.asarray(Image.open(io.BytesIO(raw))))
    assert str(tmp_path / "root" / "cifar10-jpeg") in ds.source


def test_bad_archive_layout(tmp_path):
    with tarfile.open(tmp_path / "cifar10_jpeg_q75.tar.xz", "w:xz") as tf:
        raw = jpeg_bytes(smooth_images(1)[0])
        info = tarfile.TarInfo("cifar10-jpeg/train/unicorn/0000.jpg")
        info.size = len(raw)
        tf.addfile(info, io.BytesIO(raw))
    with pytest.raises(ValueError, match="unicorn"):
        load_dataset("cifar10", root=tmp_path)


# ------------------------------------------------------------- subset, n, JPEG, noise
def make_set():
    labels = np.repeat(np.arange(10), 3)
    return ImageSet(smooth_images(30, seed=5), labels, "toy", list(CIFAR10_CLASSES), "toy; N=30")


def test_subset_keeps_original_ids():
    ds = make_set()
    sub = ds.subset([6, "truck"])
    np.testing.assert_array_equal(sub.labels, [6, 6, 6, 9, 9, 9])
    np.testing.assert_array_equal(sub.images, ds.images[18:21].tolist() + ds.images[27:].tolist())
    assert sub.source == "toy; classes [6 frog, 9 truck]; N=6" and len(sub) == 6
    assert sub.classes == ds.classes and len(ds) == 30
    with pytest.raises(ValueError, match="unknown class"):
        ds.subset(["unicorn"])
    with pytest.raises(ValueError, match="unknown class"):
        ds.subset([10])
    assert "n=30" in repr(ds)


def test_n_is_a_seeded_deterministic_subsample(tmp_path):
    write_svhn(tmp_path / "test_32x32.mat", smooth_images(20, seed=6), np.arange(20) % 10 + 1)
    a = load_dataset("svhn", "test", root=tmp_path, n=7, seed=1)
    b = load_dataset("svhn", "test", root=tmp_path, n=7, seed=1)
    c = load_dataset("svhn", "test", root=tmp_path, n=7, seed=2)
    np.testing.assert_array_equal(a.images, b.images)
    assert len(a) == 7 and not np.array_equal(a.images, c.images)
    assert "first 7 of a permutation with seed 1; N=7" in a.source
    open_set = load_dataset("svhn", "test", root=tmp_path, classes=[0, 1, 2], n=4)
    assert set(open_set.labels) <= {0, 1, 2} and len(open_set) == 4
    with pytest.raises(ValueError, match="only 20 images"):
        load_dataset("svhn", "test", root=tmp_path, n=21)


def test_jpeg_reencode_close_but_not_equal():
    imgs = smooth_images(8, seed=7)
    out = jpeg_reencode(imgs, 75)
    assert out.shape == imgs.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(float) - imgs).mean()
    assert 0 < diff < 4
    assert np.abs(jpeg_reencode(imgs, 10).astype(float) - imgs).mean() > diff
    with pytest.raises(ValueError):
        jpeg_reencode(imgs, 0)


@pytest.mark.parametrize("name", ["uniform-noise", "gaussian-noise"])
def test_noise_is_seeded(name):
    a = load_dataset(name, n=50, seed=3)
    b = load_dataset(name, "test", n=50, seed=3)
    c = load_dataset(name, n=50, seed=4)
    assert a.images.shape == (50, 32, 32, 3) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert (a.labels == -1).all() and a.classes == [] and "seed 3" in a.source
    assert abs(a.images.mean() - 127.5) < 3
    assert len(load_dataset(name)) == 10000
    j = load_dataset(name, n=20, seed=3, jpeg_quality=75)
    assert "JPEG re-encoded with Pillow at quality 75" in j.source
    assert not np.array_equal(j.images, a.images[:20])
    with pytest.raises(ValueError, match="unlabelled"):
        load_dataset(name, classes=[0])


# ------------------------------------------------------------------------------ real data
@pytest.mark.slow
@pytest.mark.skipif(not SHARED_ARCHIVE.exists(), reason="shared CIFAR-10 JPEG archive absent")
def test_real_cifar10_jpeg_archive():
    root = SHARED_ARCHIVE.resolve().parent
    train = load_dataset("cifar10", "train", root=root)  # decodes 60,000 JPEGs, caches both
    test = load_dataset("cifar10", "test", root=root)
    assert train.images.shape == (50000, 32, 32, 3) and test.images.shape == (10000, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(train.labels), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)
    assert train.labels[0] == 0 and train.labels[-1] == 9
    assert (np.diff(train.labels) >= 0).all()
    assert 100 < train.images.mean() < 140
    assert "N=50000" in train.source


@pytest.mark.skipif(not (data.DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Debian dataset-fashion-mnist not installed")
def test_real_debian_fashion_mnist(tmp_path):
    train = load_dataset("fashion-mnist", "train", root=tmp_path)
    test = load_dataset("fashion-mnist", "test", root=tmp_path)
    assert train.images.shape == (60000, 32, 32, 3) and test.images.shape == (10000, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)
    assert str(data.DEBIAN_FASHION) in test.source


def test_parse_classes():
    assert data.parse_classes("0-5") == [0, 1, 2, 3, 4, 5]
    assert data.parse_classes("0,1,7") == [0, 1, 7]
    assert data.parse_classes("1-2, 9") == [1, 2, 9]
    assert data.parse_classes("cat,dog") == ["cat", "dog"]
    assert data.parse_classes(None) is None
    for bad in ("5-1", ",", ""):
        with pytest.raises(ValueError):
            data.parse_classes(bad)


def test_datasets_is_a_name_to_builder_registry(tmp_path):
    assert set(data.DATASETS) == {"cifar10", "cifar100", "svhn", "mnist", "fashion-mnist",
                                  "uniform-noise", "gaussian-noise"}
    got = data.DATASETS["uniform-noise"](tmp_path, "test", False, 5, 0)
    assert got.images.shape == (5, 32, 32, 3) and got.sized and not got.names

