"""Image inputs: anything that holds images, read as batches of uint8 RGB arrays.

``open_images(X)`` accepts

- numpy arrays or torch tensors, uint8 (0..255) or float ([0, 1]): a batch
  ``(N, H, W, C)`` or ``(N, C, H, W)`` with C in {1, 3, 4}, a grayscale batch
  ``(N, H, W)``, or one image ``(H, W, 3|4)`` / a torch ``(C, H, W)`` tensor;
- one PIL image, or a list/tuple of arrays, tensors, PIL images or file paths, of mixed
  sizes and modes;
- a map-style torch ``Dataset`` (items are images, or tuples whose element
  ``image_index`` is the image) and a ``DataLoader`` or any iterable of such batches;
- a folder (``str`` / ``Path``): its image files, recursively (``IMAGE_EXTENSIONS``);
- a gaussood ``ImageSet`` (its ``images``).

Every image becomes RGB: grayscale is repeated to three channels, the alpha channel of
RGBA is dropped (Pillow's ``convert("RGB")``), palette and other PIL modes are converted by
Pillow. Float images are rounded to 8 bits. Wide grayscale PIL images (16-bit PNGs and
TIFFs) are scaled by their own range: 16-bit (modes "I;16", and "I" with values in
0..65535) divided by 257, float (mode "F") in [0, 1] times 255; other "I" / "F" values
are refused (an error naming the file). An ``ImageSource`` yields batches, each a
uint8 ``(B, H, W, 3)`` array (one size) or a list of uint8 ``(H, W, 3)`` arrays (mixed
sizes); ``n`` is the number of images when known (None for a bare iterable; for a folder,
the number of files, of which unreadable ones give no row: also FIFOs, dangling links and
other entries that are not regular files, which are skipped without being opened).
A list of file paths is read as a folder's files are (unreadable ones skipped and
listed). A folder or list from which no image could be read is refused (``ValueError``).

Decoded sizes are bounded before decoding: a file declaring more than
``MAX_IMAGE_PIXELS`` pixels is unreadable (skipped, or an error with ``strict``), and a
batch of files ends early rather than hold more than ``MAX_BATCH_PIXELS`` decoded pixels
(4 PNGs declaring 9000x9000 took 2.7 GB in one batch; now refused from their headers, no
memory growth; 4 of 8000x8000: 2.3 GB peak before, 2.0 GB in batches of 2).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
# Pixels one image file may declare (read from its header, before decoding): 8192 x 8192,
# 192 MB as uint8 RGB. Larger files are refused (skipped in a folder).
MAX_IMAGE_PIXELS = 8192 * 8192
# Decoded pixels per batch of files: a batch ends early rather than hold more (384 MB as
# uint8 RGB), whatever batch_size says.
MAX_BATCH_PIXELS = 2 * MAX_IMAGE_PIXELS


def _is_tensor(x) -> bool:
    return hasattr(x, "detach") and hasattr(x, "dtype")


def _is_pil(x) -> bool:
    return hasattr(x, "convert") and hasattr(x, "mode") and hasattr(x, "size")


def _channels_first(shape) -> bool:
    """Whether an image of this (A, B, C) shape is CHW: 3 channels first, not last; else
    1 or 4 channels first and none of 1, 3, 4 last."""
    if shape[-1] == 3:
        return False
    return shape[0] == 3 or shape[0] in (1, 4) and shape[-1] not in (1, 4)


def _uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if not np.isfinite([lo, hi]).all():
            bad = int((~np.isfinite(array)).sum())
            raise ValueError(f"float images contain NaN or inf values ({bad} of them).")
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"float images must lie in [0, 1]; got values in [{lo:.3g}, "
                             f"{hi:.3g}] (normalised images? give the ToTensor() output, before "
                             "Normalize; 0..255 values as uint8).")
        return np.rint(np.clip(array, 0, 1) * 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("integer images must lie in 0..255; got values in "
                             f"[{array.min()}, {array.max()}].")
        return array.astype(np.uint8)
    raise ValueError(f"images must be uint8, float in [0, 1] or PIL images; got {array.dtype}.")


def _rgb_channels_last(array: np.ndarray) -> np.ndarray:
    """(..., H, W, C) with C in {1, 3, 4} -> (..., H, W, 3)."""
    c = array.shape[-1]
    if c == 3:
        return array
    if c == 1:
        return np.repeat(array, 3, axis=-1)
    if c == 4:
        return array[..., :3]                      # RGBA -> RGB: alpha dropped, as Pillow
    raise ValueError(f"images must have 1, 3 or 4 channels; got shape {array.shape}.")


def show_path(path) -> str:
    """A path for messages: as it is, or its repr when it holds undecodable bytes or
    unprintable characters."""
    text = os.fsdecode(path)
    return text if text.isprintable() else repr(text)


def _wide_gray(array: np.ndarray, mode: str, what: str) -> np.ndarray:
    """uint8 of a 16-bit ("I;16*", "I") or float ("F") grayscale image, by its own range."""
    array = np.asarray(array, dtype=np.float64)
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if mode == "F":
        if not np.isfinite([lo, hi]).all() or lo < 0 or hi > 1:
            raise ValueError(f"{what}: float (mode F) image with values in [{lo:.3g}, {hi:.3g}]; "
                             "only [0, 1] is read (scale it to [0, 1] or 8 bits first).")
        return np.rint(array * 255).astype(np.uint8)
    if lo < 0 or hi > 65535:
        raise ValueError(f"{what}: integer (mode {mode}) image with values in "
                         f"[{lo:.0f}, {hi:.0f}], outside 0..65535; convert it to 8 bits first.")
    return np.rint(array / 257).astype(np.uint8)


def pil_rgb(image, name=None) -> np.ndarray:
    """uint8 (H, W, 3) of a PIL image; ``name`` (its file) for error messages."""
    mode = image.mode
    if mode == "RGB":
        return np.array(image)
    if mode.startswith("I;16") or mode in ("I", "F"):
        what = show_path(name) if name is not None else "image"
        gray = _wide_gray(np.asarray(image), mode, what)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.array(image.convert("RGB"))


def to_rgb(image) -> np.ndarray:
    """One image (PIL, array or tensor; gray, RGB or RGBA; HWC or CHW) -> uint8 (H, W, 3)."""
    if _is_pil(image):
        return pil_rgb(image)
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if _is_tensor(image):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim == 3 and _channels_first(array.shape):
        array = array.transpose(1, 2, 0)
    if array.ndim != 3:
        raise ValueError(f"an image must be (H, W), (H, W, C) or (C, H, W); got {array.shape}.")
    return np.ascontiguousarray(_rgb_channels_last(_uint8(array)))


def read_image(path) -> np.ndarray:
    """uint8 RGB (H, W, 3) of an image file (Pillow); ``OSError`` for anything that is not
    a regular file (a FIFO would block), without opening it."""
    from PIL import Image

    kind = _not_regular(path)
    if kind:
        raise OSError(f"not a regular file ({kind})")
    with Image.open(path) as img:  # reads the header only
        width, height = img.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(f"{width}x{height} pixels, more than MAX_IMAGE_PIXELS="
                             f"{MAX_IMAGE_PIXELS} (gaussood.deep.images); not decoded")
        img.load()
        return pil_rgb(img, path)


def to_rgb_batch(batch) -> np.ndarray:
    """A 4-D array/tensor (NHWC or NCHW) or a 3-D grayscale batch -> uint8 (N, H, W, 3)."""
    if _is_tensor(batch):
        batch = batch.detach().cpu().numpy()
    array = np.asarray(batch)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise ValueError(f"an image batch must be (N, H, W, C), (N, C, H, W) or (N, H, W); "
                         f"got {array.shape}.")
    if _channels_first(array.shape[1:]):
        array = array.transpose(0, 2, 3, 1)
    return _rgb_channels_last(_uint8(array))


def homogeneous(images: list) -> np.ndarray | list:
    """Stack a list of (H, W, 3) arrays when they share a size, else keep the list."""
    if images and all(im.shape == images[0].shape for im in images):
        return np.stack(images)
    return images


def _walk(root, extensions) -> list[str]:
    """Sorted paths of the files under ``root`` whose names end with ``extensions``.

    As ``os.walk`` (symlinked folders are not entered, unreadable folders are left out),
    but with a stack instead of recursion: Python 3.11's ``os.walk`` hit the recursion
    limit on an image 1,100 folders deep.
    """
    found, stack = [], [os.fspath(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not entry.is_symlink():
                    stack.append(entry.path)
            elif entry.name.lower().endswith(extensions):
                found.append(entry.path)
    return sorted(found)


class ImageFiles:
    """The image files under ``root`` (recursive, sorted), read one by one.

    Unreadable files are skipped and listed in ``skipped`` (path, reason) with a warning
    at the end of a pass, or raise ``ValueError`` with ``strict=True``; so are entries that
    are not regular files (FIFOs, sockets, devices, dangling symlinks), which are never
    opened, and files declaring more than ``MAX_IMAGE_PIXELS`` pixels. ``read`` lists the
    files that were read, in the order of the embeddings. ``ImageFiles.of(paths)``: the
    files of a list instead of a folder (``root`` None).
    """

    def __init__(self, root, *, strict: bool = False, extensions=IMAGE_EXTENSIONS) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"No folder {root}.")
        self.root, self.strict = root, strict
        self.paths = _walk(root, tuple(e.lower() for e in extensions))
        self.skipped: list[tuple[str, str]] = []
        self.read: list[str] = []

    @classmethod
    def of(cls, paths, *, strict: bool = False) -> ImageFiles:
        """The files named in ``paths`` (in that order, whatever their extension)."""
        files = object.__new__(cls)
        files.root, files.strict = None, strict
        files.paths = [os.fspath(p) for p in paths]
        files.skipped, files.read = [], []
        return files

    def where(self) -> str:
        """Where the files are, for messages."""
        return f"under {show_path(self.root)}" if self.root is not None else "in the list given"

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int):
        path = self.paths[index]
        try:
            image = read_image(path)
        except Exception as exc:  # noqa: BLE001 - any decoder failure
            if self.strict:
                raise ValueError(f"Cannot read image {show_path(path)}: {exc}") from exc
            self.skipped.append((path, f"{type(exc).__name__}: {exc}"))
            return None
        self.read.append(path)
        return image

    def fingerprint(self) -> str:
        """Content key for caches: relative paths, sizes and modification times."""
        import hashlib

        digest = hashlib.sha256()
        for path in self.paths:
            try:
                st = os.stat(path)
                stamp = f"{st.st_size}|{st.st_mtime_ns}"
            except OSError:                        # a dangling symlink
                stamp = "missing"
            digest.update(os.fsencode(os.path.relpath(path, self.root)) + f"|{stamp}\n".encode())
        return digest.hexdigest()


def _not_regular(path) -> str:
    """'' for a regular file (or a link to one) or a missing path (left to the reader's own
    error), else what the entry is."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "dangling symlink" if os.path.islink(path) else ""
    if stat.S_ISREG(mode):
        return ""
    for test, kind in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISDIR, "directory"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


class _PickImages:
    """DataLoader collate: the images of a list of items (picklable for workers)."""

    def __init__(self, image_index: int) -> None:
        self.image_index = image_index

    def __call__(self, items):
        return [item[self.image_index] if isinstance(item, (tuple, list)) else item
                for item in items]


class ImageSource:
    """Batches of uint8 RGB images from any input of ``open_images``."""

    def __init__(self, batches, n: int | None, *, files: ImageFiles | None = None) -> None:
        self._batches, self.n, self.files = batches, n, files

    def __len__(self) -> int:
        if self.n is None:
            raise TypeError("this image source has no known length")
        return self.n

    def __iter__(self):
        files = self.files
        start, read = (len(files.skipped), len(files.read)) if files is not None else (0, 0)
        yield from self._batches()
        if files is None:
            return
        new = files.skipped[start:]
        if len(files.read) == read:  # the CLI refuses this too: 0 rows is no answer
            if not files.paths:
                raise ValueError(f"No image files ({' '.join(IMAGE_EXTENSIONS)}) "
                                 f"{files.where()}.")
            first = f" (first: {show_path(new[0][0])}: {new[0][1]})" if new else ""
            raise ValueError(f"None of the {len(files.paths)} image files {files.where()} "
                             f"could be read{first}.")
        if new:
            warn_skipped(new, stacklevel=3)


def warn_skipped(skipped: list, stacklevel: int = 2) -> None:
    """The warning for unreadable files skipped: ``skipped`` is [(path, reason), ...]."""
    shown = "; ".join(f"{show_path(p)} ({why})" for p, why in skipped[:10])
    more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    warnings.warn(f"Skipped {len(skipped)} unreadable image file(s): {shown}{more} "
                  "(strict=True raises instead).", stacklevel=stacklevel + 1)


def _file_batches(files: ImageFiles, batch_size: int):
    """Batches of at most ``batch_size`` decoded files and at most MAX_BATCH_PIXELS
    pixels (a larger image goes alone)."""
    def batches():
        images, pixels = [], 0
        for i in range(len(files)):
            image = files.load(i)
            if image is None:
                continue
            size = image.shape[0] * image.shape[1]
            if images and pixels + size > MAX_BATCH_PIXELS:
                yield homogeneous(images)
                images, pixels = [], 0
            images.append(image)
            pixels += size
            if len(images) == batch_size:
                yield homogeneous(images)
                images, pixels = [], 0
        if images:
            yield homogeneous(images)
    return batches


def _chunks(seq, batch_size):
    for start in range(0, len(seq), batch_size):
        yield seq[start:start + batch_size]


def open_images(X, *, batch_size: int = 256, image_index: int = 0, strict: bool = False,
                num_workers: int = 0) -> ImageSource:
    """An ``ImageSource`` over X (see the module docstring for what X can be)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    if isinstance(X, ImageSource):
        return X
    if isinstance(getattr(X, "images", None), np.ndarray):    # a gaussood ImageSet
        X = X.images
    if isinstance(X, (str, os.PathLike)) and Path(X).is_dir():
        X = ImageFiles(X, strict=strict)
    if isinstance(X, (list, tuple)) and X and all(isinstance(x, (str, os.PathLike))
                                                  for x in X):
        X = ImageFiles.of(X, strict=strict)   # skipped and listed as a folder's files
    if isinstance(X, ImageFiles):
        return ImageSource(_file_batches(X, batch_size), len(X), files=X)
    if isinstance(X, (str, os.PathLike)):
        if not Path(X).is_file():
            raise FileNotFoundError(f"No image file or folder at {X}.")
        X = ImageFiles.of([X], strict=True)
        return ImageSource(_file_batches(X, batch_size), 1, files=X)
    if _is_pil(X):
        X = [X]
    if _is_tensor(X) or isinstance(X, np.ndarray):
        single = (X.ndim == 3 and (X.shape[-1] in (3, 4) or _is_tensor(X) and X.shape[0]
                                   in (1, 3, 4) and X.shape[-1] not in (1, 3, 4))) or X.ndim == 2
        if single:
            X = [X]
        else:
            array = X

            def batches():
                for start in range(0, len(array), batch_size):
                    yield to_rgb_batch(array[start:start + batch_size])
            return ImageSource(batches, len(array))
    if isinstance(X, (list, tuple)):
        items = X

        def batches():
            for chunk in _chunks(items, batch_size):
                yield homogeneous([to_rgb(im) for im in chunk])
        return ImageSource(batches, len(items))
    return _torch_source(X, batch_size, image_index, num_workers)


def _torch_source(X, batch_size, image_index, num_workers) -> ImageSource:
    from torch.utils.data import DataLoader, IterableDataset

    if hasattr(X, "__getitem__") and hasattr(X, "__len__") and not isinstance(X, DataLoader) \
            and not isinstance(X, IterableDataset):
        loader = DataLoader(X, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=_PickImages(image_index))
        n = len(X)

        def batches():
            for images in loader:
                yield homogeneous([to_rgb(im) for im in images])
        return ImageSource(batches, n)
    if not isinstance(X, Iterable):
        raise TypeError(f"Cannot read images from a {type(X).__name__}: give arrays, PIL "
                        "images, a list, a folder, a torch Dataset or DataLoader.")
    dataset = getattr(X, "dataset", None)
    n = len(dataset) if isinstance(X, DataLoader) and hasattr(dataset, "__len__") else None

    def batches():
        for batch in X:
            yield batch_images(batch, image_index)
    return ImageSource(batches, n)


def batch_images(batch, image_index: int = 0):
    """The images of one DataLoader batch (a tensor, a tuple/list whose element
    ``image_index`` holds the images, or a list of PIL images) as uint8 RGB."""
    if isinstance(batch, (tuple, list)) and not (batch and all(_is_pil(b) for b in batch)):
        batch = batch[image_index]
    if isinstance(batch, (tuple, list)):
        return homogeneous([to_rgb(im) for im in batch])
    return to_rgb_batch(batch)
