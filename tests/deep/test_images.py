"""Every image input kind of gaussood.deep.images, through one raw callable encoder."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from torch.utils.data import DataLoader, Dataset, TensorDataset  # noqa: E402

from gaussood.deep import ImageFiles, make_encoder, open_images  # noqa: E402
from gaussood.deep.images import to_rgb  # noqa: E402


def stats(batch):
    """Raw callable encoder: per-image channel means and the image size."""
    b = np.asarray(batch, dtype=np.float64)
    return np.column_stack([b.mean(axis=(1, 2)), np.full(len(b), b.shape[1] * b.shape[2])])


@pytest.fixture()
def rgb():
    return np.random.default_rng(0).integers(0, 256, (6, 9, 7, 3), dtype=np.uint8)


def test_array_layouts_and_dtypes_agree(rgb):
    enc = make_encoder(stats)
    ref = enc.embed(rgb)
    assert ref.shape == (6, 4) and ref.dtype == np.float32
    nchw = rgb.transpose(0, 3, 1, 2)
    for x in (nchw, torch.from_numpy(rgb), torch.from_numpy(nchw),
              torch.from_numpy(nchw).float() / 255, rgb.astype(np.float32) / 255,
              np.concatenate([rgb, np.full((6, 9, 7, 1), 7, np.uint8)], axis=-1),   # RGBA
              list(rgb), [Image.fromarray(im) for im in rgb], tuple(torch.from_numpy(nchw))):
        np.testing.assert_allclose(enc.embed(x), ref, atol=1e-4)
    np.testing.assert_allclose(enc.embed(rgb[0]), ref[:1])                 # one HWC image
    np.testing.assert_allclose(enc.embed(Image.fromarray(rgb[0])), ref[:1])  # one PIL image
    np.testing.assert_allclose(enc.embed(torch.from_numpy(nchw[0])), ref[:1])  # one CHW tensor
    with pytest.raises(ValueError, match="Normalize"):
        enc.embed((torch.from_numpy(nchw).float() / 255 - 0.5) / 0.2)
    with pytest.raises(ValueError, match="channels"):
        enc.embed(np.zeros((2, 5, 5, 2), np.uint8))


def test_grayscale_and_modes_become_rgb():
    gray = np.random.default_rng(1).integers(0, 256, (3, 8, 8), dtype=np.uint8)
    out = open_images(gray)
    batch = next(iter(out))
    assert batch.shape == (3, 8, 8, 3) and (batch[..., 0] == gray).all()
    assert (batch[..., 2] == gray).all()
    pil = Image.fromarray(gray[0]).convert("P")
    assert to_rgb(pil).shape == (8, 8, 3)
    rgba = Image.fromarray(np.zeros((4, 5, 4), np.uint8), "RGBA")
    assert to_rgb(rgba).shape == (4, 5, 3)
    assert to_rgb(Image.fromarray(np.ones((4, 4), bool))).max() == 255


def test_mixed_sizes_keep_their_sizes():
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(5, 5), (9, 4), (5, 5)]]
    batches = list(open_images(images, batch_size=2))
    assert isinstance(batches[0], list) and batches[1].shape == (1, 5, 5, 3)
    np.testing.assert_allclose(make_encoder(lambda x: x.reshape(len(x), -1)[:, :2],
                                            preprocessing={"input_size": 4, "resize": "resize"},
                                            device="cpu").embed(images).shape, (3, 2))
    with pytest.raises(ValueError, match="different sizes"):
        make_encoder(stats).embed(images)


class PILDataset(Dataset):
    def __init__(self, n):
        rng = np.random.default_rng(3)
        self.images = [Image.fromarray(rng.integers(0, 256, (8 + i, 10, 3), dtype=np.uint8))
                       for i in range(n)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].convert("L" if i % 2 else "RGBA"), i


def test_dataset_and_dataloader_inputs(rgb):
    enc = make_encoder(stats)
    ref = enc.embed(rgb)
    chw = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255
    ds = TensorDataset(chw, torch.arange(6))
    np.testing.assert_allclose(enc.embed(ds, batch_size=4), ref, atol=1e-4)
    np.testing.assert_allclose(enc.embed(DataLoader(ds, batch_size=4)), ref, atol=1e-4)
    loader = DataLoader(PILDataset(5), batch_size=2, collate_fn=lambda items: [x for x, _ in items])
    prep = {"input_size": 8, "resize": "resize"}
    feats = make_encoder(lambda x: x.mean(dim=(2, 3)), preprocessing=prep).embed(loader)
    assert feats.shape == (5, 3)
    direct = make_encoder(lambda x: x.mean(dim=(2, 3)), preprocessing=prep).embed(PILDataset(5))
    np.testing.assert_allclose(direct, feats, atol=1e-6)
    assert open_images(DataLoader(ds, batch_size=4)).n == 6


def test_folder_recursive_skips_unreadable(tmp_path, rgb):
    for i, ext in enumerate(["png", "jpg", "webp", "bmp", "tiff", "PNG"]):
        sub = tmp_path / f"d{i % 2}" / "deeper"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb[i]).save(sub / f"im{i}.{ext}")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    enc = make_encoder(stats)
    with pytest.warns(UserWarning, match="Skipped 1 unreadable.*broken.jpg"):
        out = enc.embed(tmp_path, return_sources=True)
    assert out.X.shape == (6, 4) and len(out.files) == 6
    assert [p for p, _ in out.skipped] == [str(tmp_path / "broken.jpg")]
    with pytest.raises(ValueError, match="broken.jpg"):
        enc.embed(str(tmp_path), strict=True)
    assert len(ImageFiles(tmp_path)) == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = enc.embed(list(out.files), return_sources=True)     # a list of paths
    assert again.files == out.files and again.skipped == ()
    np.testing.assert_array_equal(again.X, out.X)
    # inputs that are not files: no files, and the plain array without return_sources
    arrays = enc.embed(rgb[:3], return_sources=True)
    assert arrays.files is None and arrays.skipped == () and arrays.X.shape == (3, 4)
    assert isinstance(enc.embed(rgb[:3]), np.ndarray)
    with pytest.raises(FileNotFoundError):
        enc.embed(tmp_path / "missing")


@pytest.mark.filterwarnings("ignore:Skipped")
def test_skimage_photos_folder(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    from pathlib import Path

    root = Path(skimage_data.__file__).parent
    photos = [p for p in root.iterdir() if p.suffix.lower() in (".png", ".jpg", ".tif")]
    assert len(photos) >= 10
    enc = make_encoder(lambda x: x.mean(dim=(2, 3)),
                       preprocessing={"input_size": 32, "resize": "resize_crop"})
    out = enc.embed(root, return_sources=True)
    feats, read = out.X, out.files
    assert feats.shape == (len(read), 3) and len(read) >= 10
    modes = {Image.open(p).mode for p in read}
    assert len(modes) >= 3                             # e.g. RGB, L, RGBA, P


def test_imageset_input():
    from gaussood.deep import ImageSet

    images = np.random.default_rng(4).integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    data = ImageSet(images, np.zeros(5, np.int64), "toy", [], "toy; N=5")
    enc = make_encoder(stats)
    np.testing.assert_array_equal(enc.embed(data), enc.embed(images))


def _embed_in_thread(enc, root, seconds=20):
    """enc.embed(root) in a thread; a FIFO that blocks it is released after ``seconds``
    (a writer opens and closes it), so a regression fails instead of hanging."""
    import os
    import threading

    out = {}

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["feats"] = enc.embed(root)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    blocked = thread.is_alive()
    if blocked:
        for fifo in root.rglob("*.png"):
            if fifo.is_fifo():
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(seconds)
    return blocked, out.get("feats")


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs here")
def test_folder_fifo_is_skipped_not_opened(tmp_path, rgb):
    import os

    Image.fromarray(rgb[0]).save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "pipe.png")
    enc = make_encoder(stats)
    blocked, feats = _embed_in_thread(enc, tmp_path)
    assert not blocked, "reading a folder with a FIFO blocked"
    assert feats.shape == (1, 4)
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable.*pipe\.png.*not a regular "
                                          r"file \(FIFO\)"):
        out = enc.embed(tmp_path, return_sources=True)
    assert out.X.shape == (1, 4) and out.files == (str(tmp_path / "a.png"),)
    assert [p for p, _ in out.skipped] == [str(tmp_path / "pipe.png")]
    with pytest.raises(ValueError, match=r"pipe\.png: not a regular file"):
        enc.embed(tmp_path, strict=True)
    with pytest.raises(ValueError, match=r"None of the 1 image files.*not a regular file "
                                         r"\(FIFO\)"):
        enc.embed([tmp_path / "pipe.png"])            # a list of paths: refused, not blocked


def test_folder_dangling_symlink_is_skipped(tmp_path, rgb):
    from gaussood.deep.embed import extract_embeddings

    Image.fromarray(rgb[0]).save(tmp_path / "a.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")   # a live link is read
    enc = make_encoder(stats)
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable.*gone\.png.*dangling symlink"):
        feats = extract_embeddings(stats, tmp_path, cache_dir=tmp_path.parent / "cache",
                                   progress=False)
    assert feats.shape == (2, 4)
    assert ImageFiles(tmp_path).fingerprint() == ImageFiles(tmp_path).fingerprint()
    with pytest.raises(ValueError, match=r"gone\.png"):
        enc.embed(tmp_path, strict=True)


def test_wide_grayscale_files_keep_their_range(tmp_path):
    mid = np.full((6, 5), 128 * 257, np.uint16)                # 16-bit mid-gray
    Image.fromarray(mid).save(tmp_path / "g16.png")
    ramp = np.linspace(0, 1, 30, dtype=np.float32).reshape(6, 5)
    Image.fromarray(ramp, "F").save(tmp_path / "f.tif")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")
    gray = to_rgb(tmp_path / "g16.png")
    assert gray.dtype == np.uint8 and gray.shape == (6, 5, 3)
    assert np.abs(gray.astype(int) - 128).max() <= 1            # not 98% white
    as_int = to_rgb(Image.fromarray(mid.astype(np.int32), "I"))   # mode "I", 16-bit values
    np.testing.assert_array_equal(as_int, gray)
    flt = to_rgb(tmp_path / "f.tif")
    np.testing.assert_array_equal(flt[..., 0], np.rint(ramp * 255).astype(np.uint8))
    assert flt.max() == 255                                     # not all black
    Image.fromarray(ramp * 1000, "F").save(tmp_path / "big.tif")
    with pytest.raises(ValueError, match=r"big\.tif.*mode F.*\[0, 1\]"):
        to_rgb(tmp_path / "big.tif")
    with pytest.raises(ValueError, match="outside 0..65535"):
        to_rgb(Image.fromarray(np.full((3, 3), 70000, np.int32), "I"))
    enc = make_encoder(stats)
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable.*big\.tif"):
        feats = enc.embed(tmp_path)
    assert feats.shape == (2, 4)


def test_unknown_preprocessing_keys_are_refused():
    from gaussood.deep.preprocess import check_preprocessing

    with pytest.raises(ValueError, match=r"'men', 'stdev'.*input_size.*mean.*std"):
        check_preprocessing({"input_size": 8, "men": [0.5] * 3, "stdev": [0.2] * 3})
    with pytest.raises(ValueError, match="'resize_sise'"):
        make_encoder(lambda x: x.mean(dim=(2, 3)),
                     preprocessing={"input_size": 8, "resize": "resize_crop", "resize_sise": 9})


def test_undecodable_file_names(tmp_path, rgb):
    import os

    root = os.fsencode(tmp_path)
    Image.fromarray(rgb[0]).save(os.path.join(root, b"ok\xff.png"))
    with open(os.path.join(root, b"bad\xfe.png"), "wb") as fh:
        fh.write(b"not a png")
    files = ImageFiles(tmp_path)
    assert len(files) == 2
    assert len(files.fingerprint()) == 64                      # was a UnicodeEncodeError
    enc = make_encoder(stats)
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable.*'[^']*bad\\udcfe\.png'"):
        feats = enc.embed(tmp_path)
    np.testing.assert_allclose(feats, enc.embed(rgb[:1]))
    with pytest.raises(ValueError, match=r"Cannot read image '[^']*bad\\udcfe\.png'"):
        enc.embed(tmp_path, strict=True)


def test_filter_results_name_their_files(tmp_path, rgb):
    """OODFilter.evaluate returns the files of its rows (a folder: the readable ones; a
    list of paths: each one), from embed's return value, not from state read back."""
    from gaussood import GaussianScorer, OODFilter

    for i in range(4):
        Image.fromarray(rgb[i]).save(tmp_path / f"im{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rng = np.random.default_rng(0)
    fit = rng.integers(0, 256, (200, 8, 8, 3), dtype=np.uint8)
    filt = OODFilter(GaussianScorer(), encoder=stats, progress=False).fit(fit)
    with pytest.warns(UserWarning, match="Skipped 1"):
        folder = filt.evaluate(tmp_path)
    assert folder.paths == [str(tmp_path / f"im{i}.png") for i in range(4)]
    listed = filt.evaluate([tmp_path / "im3.png", tmp_path / "im0.png"])
    assert listed.paths == [str(tmp_path / "im3.png"), str(tmp_path / "im0.png")]
    np.testing.assert_array_equal(listed.score, folder.score[[3, 0]])
    assert filt.evaluate(rgb[:2]).paths is None
    assert not hasattr(filt, "_paths")
