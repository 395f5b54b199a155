"""Reliability battery, image and training side (issue 21, round 2): the cases of
tests/test_adversarial.py that need torch or Pillow. Each case failed once (unsafe,
silently wrong, or an unclear error); each test pins the fix."""

from __future__ import annotations

import os
import tarfile
import warnings
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from gaussood import GaussianScorer, OODFilter  # noqa: E402
from gaussood.deep import ImageFiles, embed_images, extract_embeddings, make_encoder  # noqa: E402
from gaussood.deep import images as images_module  # noqa: E402


def _first6(batch):
    """Raw callable encoder: the first 6 pixel values of each image, plus one."""
    return np.asarray(batch, np.float32).reshape(len(batch), -1)[:, :6] + 1.0


def _png(path, value=10, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def _filter():
    rng = np.random.default_rng(0)
    return OODFilter(GaussianScorer(), encoder=_first6, preprocessing="raw",
                     progress=False).fit(rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8))


# ====================================================================== silent wrong
def test_one_grayscale_image_is_not_read_as_embeddings():
    """A uint8 40x6 grayscale image went to a 6-d scorer as 40 embeddings."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (80, 40, 6), dtype=np.uint8)
    filt = OODFilter(GaussianScorer(), encoder=_first6, preprocessing="raw",
                     progress=False).fit(images)
    assert filt.predict(images[0]).shape == (1,)
    assert filt.predict(torch.from_numpy(images[0])).shape == (1,)
    assert filt.predict(filt.transform(images[:5])).shape == (5,)  # 2-D floats: embeddings


@pytest.mark.parametrize("content", ["empty", "corrupt"])
def test_a_folder_without_a_readable_image_is_refused(tmp_path, content):
    """An empty or all-corrupt folder gave a (0, 0) array and a 0% flagged share in
    Python (the CLI refuses it)."""
    if content == "corrupt":
        (tmp_path / "a.png").write_bytes(b"not a png")
    match = "No image files" if content == "empty" else "None of the 1 image files"
    with pytest.raises(ValueError, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        embed_images(_first6, tmp_path, preprocessing="raw")
    filt = _filter()
    with pytest.raises(ValueError, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        filt.evaluate(tmp_path)


def test_evaluate_a_list_of_paths_skips_unreadable_files(tmp_path):
    """evaluate([paths]) gave paths=None, and one unreadable file raised PIL's error,
    while docs/filter.md says unreadable files are skipped."""
    _png(tmp_path / "a.png", 10)
    _png(tmp_path / "b.png", 200)
    (tmp_path / "c.png").write_bytes(b"not a png")
    paths = [str(tmp_path / name) for name in ("a.png", "c.png", "b.png")]
    filt = _filter()
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable.*c\.png"):
        result = filt.evaluate(paths)
    assert result.paths == [paths[0], paths[2]] and result.keep.shape == (2,)
    with pytest.warns(UserWarning, match="Skipped 1"):
        kept, _ = filt.filter(paths)
    assert set(kept) <= {paths[0], paths[2]}
    with pytest.raises(ValueError, match="Cannot read image .*c.png"):
        filt.evaluate(paths, strict=True)


# ============================================================ size limits before work
def _declared_png(path, width, height):
    """A valid RGB PNG of zeros declaring width x height, written without holding it."""
    def chunk(kind, data):
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    squeeze = zlib.compressobj(9)
    row = bytes(1 + 3 * width)
    body = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body)
                     + chunk(b"IEND", b""))


def test_an_image_declaring_too_many_pixels_is_not_decoded(tmp_path):
    """4 PNGs declaring 9000x9000 peaked at 2.6 GB in one batch. A file over
    MAX_IMAGE_PIXELS is refused from its header (skipped in a folder)."""
    _declared_png(tmp_path / "huge.png", 9000, 9000)
    _png(tmp_path / "small.png")
    with pytest.warns(UserWarning, match=r"huge\.png.*9000x9000 pixels, more than"):
        Z = embed_images(_first6, tmp_path, preprocessing="raw")
    assert Z.shape == (1, 6)
    with pytest.raises(ValueError, match="9000x9000 pixels"):
        embed_images(_first6, str(tmp_path / "huge.png"), preprocessing="raw")


def test_a_batch_of_files_stops_at_max_batch_pixels(tmp_path, monkeypatch):
    for i in range(7):
        _png(tmp_path / f"{i}.png", i)
    monkeypatch.setattr(images_module, "MAX_BATCH_PIXELS", 3 * 64)  # three 8x8 images
    sizes = []

    def encoder(batch):
        sizes.append(len(batch))
        return _first6(batch)

    Z = make_encoder(encoder, preprocessing="raw", batch_size=256).embed(tmp_path)
    assert sizes == [3, 3, 1]  # the 4th image would pass the limit: a new batch
    np.testing.assert_array_equal(Z[:, 0], np.arange(7) + 1.0)


def test_an_image_1100_folders_deep_is_found(tmp_path):
    """os.walk recursed once per folder and hit Python's recursion limit."""
    folder = os.fspath(tmp_path)
    here = os.getcwd()
    try:
        os.chdir(folder)
        for _ in range(1_100):  # relative steps: the absolute path is 2,200+ characters
            os.mkdir("d")
            os.chdir("d")
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save("a.png")
    finally:
        os.chdir(here)
    try:
        files = ImageFiles(tmp_path)
        assert len(files) == 1 and files.paths[0].count(os.sep + "d") == 1_100
        assert embed_images(_first6, tmp_path, preprocessing="raw").shape == (1, 6)
    finally:  # shutil.rmtree (pytest's tmp_path cleanup) recurses: remove it here
        _remove_tree(os.path.join(folder, "d"))


def _remove_tree(top):
    """Remove a folder tree of any depth without recursion."""
    folders, stack = [], [top]
    while stack:
        folders.append(stack.pop())
        for entry in os.scandir(folders[-1]):
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            else:
                os.unlink(entry.path)
    for path in reversed(folders):
        os.rmdir(path)


# ===================================================================== embedding cache
def _cached_folder(tmp_path):
    for i in range(10):
        _png(tmp_path / "f" / f"{i}.png", i)
    (tmp_path / "f" / "z.png").write_bytes(b"not a png")
    return tmp_path / "f", tmp_path / "cache"


def _extract(folder, cache):
    return extract_embeddings(_first6, folder, cache_dir=cache, preprocessing="raw",
                              progress=False)


@pytest.mark.parametrize("bad", ["empty", "narrow", "nan"])
def test_a_wrong_cached_embedding_file_is_recomputed(tmp_path, bad):
    """A cached file of shape (0, 6), (9, 3) or all-NaN was returned as it was."""
    folder, cache = _cached_folder(tmp_path)
    with pytest.warns(UserWarning, match="Skipped 1"):
        ref = np.array(_extract(folder, cache))
    (target,) = (cache / "embeddings").glob("*.npy")
    np.save(target, {"empty": np.zeros((0, 6), np.float32), "narrow": np.ones((10, 3), np.float32),
                     "nan": np.full((10, 6), np.nan, np.float32)}[bad])
    with pytest.warns(UserWarning, match="is broken"):
        got = _extract(folder, cache)
    np.testing.assert_array_equal(got, ref)


def test_a_cached_folder_still_warns_about_skipped_files(tmp_path):
    """A second extract_embeddings(folder) from the cache returned 10 of 11 rows
    without the "skipped" warning."""
    folder, cache = _cached_folder(tmp_path)
    with pytest.warns(UserWarning, match="Skipped 1"):
        first = np.array(_extract(folder, cache))
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable image file\(s\): .*z\.png"):
        again = _extract(folder, cache)
    np.testing.assert_array_equal(again, first)


# ======================================================================== archives
def _archive(tmp_path, member_bytes=None):
    tree = tmp_path / "tree" / "cifar10-jpeg" / "test" / "cat"
    tree.mkdir(parents=True)
    for i in range(20):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            tree / f"{i:04d}.jpg", quality=95)
    if member_bytes is not None:
        (tree / "9999.jpg").write_bytes(bytes(member_bytes))
    root = tmp_path / "data"
    root.mkdir()
    path = root / "cifar10_jpeg_q75.tar.xz"
    with tarfile.open(path, "w:xz") as tf:
        tf.add(tmp_path / "tree" / "cifar10-jpeg", arcname="cifar10-jpeg")
    return root, path


def test_a_truncated_archive_names_its_path(tmp_path, monkeypatch):
    """A truncated archive gave tarfile.ReadError without the path."""
    from gaussood.deep.data import load_dataset

    monkeypatch.setenv("GAUSSOOD_CACHE", str(tmp_path / "cache"))
    root, path = _archive(tmp_path)
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"{path.name} is not a readable .tar.xz"):
        load_dataset("cifar10", "test", root=root)


def test_an_archive_member_too_large_for_a_jpeg_is_refused_before_reading(tmp_path,
                                                                          monkeypatch):
    """A 175 KB .tar.xz with a 1.2 GB member of zeros took load_dataset to 2.9 GB."""
    from gaussood.deep import data

    monkeypatch.setenv("GAUSSOOD_CACHE", str(tmp_path / "cache"))
    root, path = _archive(tmp_path, member_bytes=data.MAX_MEMBER_BYTES + 1)
    assert path.stat().st_size < 100_000
    with pytest.raises(ValueError, match=r"cifar10-jpeg/test/cat/9999\.jpg' is 1048577 bytes"):
        data.load_dataset("cifar10", "test", root=root)


# ===================================================================== resume files
def _checkpoint(tmp_path):
    from gaussood.deep import ImageSet, TrainConfig, train_encoder

    rng = np.random.default_rng(0)
    train = ImageSet(images=rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
                     labels=np.arange(64) % 2, name="tiny", classes=["a", "b"], source="test")
    config = TrainConfig(model="small", epochs=1, batch_size=32, steps_per_epoch=2,
                         knn_bank=32, knn_queries=16, knn_k=5, seed=0)
    train_encoder(train, config, checkpoint_dir=tmp_path, progress=False, stop_after_steps=1)
    return train, config, tmp_path / "last.pt"


@pytest.mark.parametrize("edit, match", [
    ({"config": "x"}, "'config' entry is a str, not a dict"),
    ({"total_steps": 10**12}, "total_steps 1000000000000; a run has 1 to 100000000 steps"),
    ({"step": 5, "total_steps": 2}, "step 5 of total_steps 2"),
    ({"step": "1"}, "'step' entry is '1'"),
])
def test_a_tampered_resume_checkpoint_is_refused(tmp_path, edit, match):
    """config="x" gave an AttributeError; total_steps=10**12 trained without end."""
    from gaussood.deep import train_encoder

    train, config, path = _checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    state.update(edit)
    torch.save(state, path)
    with pytest.raises(ValueError, match=match):
        train_encoder(train, config, checkpoint_dir=tmp_path, progress=False)


def test_an_archive_without_images_is_refused(tmp_path, monkeypatch):
    """A CIFAR archive with no images gave a 0 x 0 array (and 'gaussood embed' exit 0)."""
    from gaussood.deep.data import load_dataset

    monkeypatch.setenv("GAUSSOOD_CACHE", str(tmp_path / "cache"))
    (tmp_path / "tree" / "cifar10-jpeg" / "test").mkdir(parents=True)
    (tmp_path / "tree" / "cifar10-jpeg" / "README").write_text("no images")
    (tmp_path / "data").mkdir()
    with tarfile.open(tmp_path / "data" / "cifar10_jpeg_q75.tar.xz", "w:xz") as tf:
        tf.add(tmp_path / "tree" / "cifar10-jpeg", arcname="cifar10-jpeg")
    for _ in range(2):  # decoded, then from the decoded cache
        with pytest.raises(ValueError, match="holds no test images"):
            load_dataset("cifar10", "test", root=tmp_path / "data")
