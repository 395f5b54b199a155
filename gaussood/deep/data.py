"""Image datasets for OOD benchmarks: uint8 arrays plus a line saying what they are.

Files are parsed in torchvision's on-disk layouts (torchvision only downloads); CIFAR-10
comes first from the JPEG archive ``cifar10_jpeg_q75.tar.xz`` (decoded once, cached). Re-encode
OOD sets alike (``jpeg_quality=75``) so that a detector cannot key on JPEG compression.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import struct
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

__all__ = ["ImageSet", "load_dataset", "jpeg_reencode", "data_root", "cache_dir", "DATASETS",
           "parse_classes"]

SPLITS = ("train", "test")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGITS = [str(i) for i in range(10)]
CIFAR10_ARCHIVE = "cifar10_jpeg_q75.tar.xz"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@dataclass(repr=False)
class ImageSet:
    """A set of 32x32 RGB images with labels and a provenance line.

    Attributes
    ----------
    images : ndarray of uint8, shape (N, 32, 32, 3)
        RGB images (height, width, channel).
    labels : ndarray of int64, shape (N,)
        Class ids indexing ``classes`` (original ids, also after a subset); -1 if unlabelled.
    name : str
        Dataset name as given to :func:`load_dataset`.
    classes : list of str
        Names of all classes of the dataset (empty for unlabelled sets).
    source : str
        One line: dataset, split, file(s), class subset, JPEG re-encoding, ending ``; N=<N>``.
    """

    images: np.ndarray
    labels: np.ndarray
    name: str
    classes: list[str] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        self.images = np.ascontiguousarray(self.images)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if (self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[3] != 3
                or self.labels.shape != (len(self.images),)):
            raise ValueError(f"want uint8 images (N, H, W, 3) and labels (N,), got "
                             f"{self.images.dtype} {self.images.shape}, {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"ImageSet(name={self.name!r}, n={len(self)}, source={self.source!r})"

    def subset(self, classes: Iterable[int | str]) -> ImageSet:
        """A new ImageSet with the images of some classes (ids or names). Labels keep their
        original ids; ``source`` names the classes kept and the new ``N``."""
        ids = [_class_id(c, self.classes) for c in classes]
        keep = np.isin(self.labels, ids)
        names = ", ".join(f"{i} {self.classes[i]}" for i in ids)
        return self._derive(self.images[keep], self.labels[keep], f"classes [{names}]")

    def _derive(self, images: np.ndarray, labels: np.ndarray, step: str) -> ImageSet:
        base = re.sub(r"; N=\d+$", "", self.source)
        return ImageSet(images, labels, self.name, list(self.classes),
                        f"{base}; {step}; N={len(images)}")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Data folder: ``root``, else ``$GAUSSOOD_DATA``, else ``~/.cache/gaussood/data``."""
    root = root if root is not None else os.environ.get("GAUSSOOD_DATA")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "gaussood" / "data"


def cache_dir(create: bool = True) -> Path:
    """Writable folder for decoded arrays (the data root may be read-only):
    ``$GAUSSOOD_CACHE``, else ``~/.cache/gaussood/cache``, created unless ``create=False``."""
    env = os.environ.get("GAUSSOOD_CACHE")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "gaussood" / "cache"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def jpeg_reencode(images: np.ndarray, quality: int = 75) -> np.ndarray:
    """Compress every image with Pillow JPEG at ``quality`` (4:2:0) and decode it back.

    Parameters
    ----------
    images : ndarray of uint8, shape (N, H, W, 3)
    quality : int
        JPEG quality, 1 to 100 (75: the settings of the CIFAR-10 JPEG archive).

    Returns
    -------
    ndarray of uint8, same shape as ``images``
    """
    from PIL import Image
    from tqdm.auto import tqdm
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"jpeg quality must be in 1..100, got {quality}")
    out = np.empty_like(images)
    for i in tqdm(range(len(images)), desc=f"JPEG q{quality}", disable=len(images) < 1000):
        buf = io.BytesIO()
        Image.fromarray(images[i]).save(buf, format="JPEG", quality=int(quality),
                                        subsampling="4:2:0")
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out


def _class_id(c: int | str, names: Sequence[str]) -> int:
    if isinstance(c, str) and c in names:
        return list(names).index(c)
    if not isinstance(c, str) and 0 <= int(c) < len(names):
        return int(c)
    raise ValueError(f"unknown class {c!r}; valid: ids 0..{len(names) - 1} or {list(names)}")


def _missing(what: str, searched: Sequence[Path], extra: str = "") -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found; searched: {', '.join(map(str, searched))}. "
                             f"To get it, pass "
                             f"download=True on a machine with network access{extra}.")


def _decode_jpeg_tree(members: Iterable[tuple[str, bytes]]) -> dict:
    """Decode ``(path, bytes)`` pairs ``cifar10-jpeg/<split>/<class>/NNNN.jpg`` and put
    each split in the official order: class by class, file name order within a class."""
    from PIL import Image
    found: dict[str, list] = {s: [] for s in SPLITS}
    for rel, data in members:
        parts = rel.split("/")
        if len(parts) != 4 or not parts[3].lower().endswith((".jpg", ".jpeg")):
            continue
        if parts[1] not in found or parts[2] not in CIFAR10_CLASSES:
            raise ValueError(f"unexpected member {rel!r}: want cifar10-jpeg/{{train,test}}/"
                             f"<one of {CIFAR10_CLASSES}>/NNNN.jpg")
        try:
            img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        except Exception as exc:  # Pillow raises several kinds for a broken file
            raise ValueError(f"member {rel!r} is not a readable JPEG: {exc}") from None
        if img.shape != (32, 32, 3):
            raise ValueError(f"member {rel!r} is {img.shape[1]}x{img.shape[0]} pixels; every "
                             "CIFAR-10 image must be 32x32")
        found[parts[1]].append((CIFAR10_CLASSES.index(parts[2]), parts[3], img))
    arrays = {}
    for split, items in found.items():
        items.sort(key=lambda t: t[:2])
        imgs = np.stack([t[2] for t in items]) if items else np.zeros((0, 32, 32, 3), np.uint8)
        arrays[split] = (imgs, np.array([t[0] for t in items], dtype=np.int64))
    return arrays


# Largest archive member read: a 32x32 JPEG is about 1 KB. A crafted 175 KB .tar.xz
# holding a 1.2 GB member of zeros took load_dataset to 2.9 GB when members were read whole.
MAX_MEMBER_BYTES = 1 << 20


def _iter_tar(path: Path) -> Iterator[tuple[str, bytes]]:
    """Stream the members of a .tar.xz (no extraction), with a progress bar in bytes.

    A member larger than ``MAX_MEMBER_BYTES`` is refused before it is read, and a
    truncated or corrupted archive gives a ``ValueError`` naming ``path``.
    """
    import lzma

    from tqdm.auto import tqdm
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|xz") as tf, \
                tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                     desc=f"decoding {path.name}") as bar:
            for member in tf:
                if member.isfile():
                    if member.size > MAX_MEMBER_BYTES:
                        raise ValueError(
                            f"{path}: member {member.name!r} is {member.size} bytes; a CIFAR-10 "
                            f"JPEG is about 1 KB (members over {MAX_MEMBER_BYTES} bytes are "
                            "refused before reading): not a gaussood CIFAR-10 archive.")
                    yield member.name.removeprefix("./"), tf.extractfile(member).read()
                bar.update(raw.tell() - bar.n)
    except (tarfile.TarError, lzma.LZMAError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable .tar.xz archive (truncated or "
                         f"corrupted): {type(exc).__name__}: {exc}") from None


def _load_cifar10_jpeg(src: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode the JPEG archive (or extracted folder) ``src``, or read it back from the cache
    (keyed by name, path, size and mtime). Both splits are decoded and cached in one pass."""
    st = src.stat()
    stamp = f"{st.st_size}-{st.st_mtime_ns}"
    files = None
    if src.is_dir():  # a folder's own mtime misses edits inside it: stamp every image
        files = sorted(src.glob("*/*/*.jp*g"))
        digest = hashlib.sha1()
        for f in files:
            fst = f.stat()
            digest.update(f"{f.relative_to(src).as_posix()}\0{fst.st_size}\0"
                          f"{fst.st_mtime_ns}\n".encode())
        stamp = f"{len(files)}-{digest.hexdigest()[:16]}"
    key = f"{src.name}-{hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:8]}-{stamp}"
    cached = {s: [cache_dir(create=False) / f"cifar10-jpeg-{key}-{s}-{a}.npy"
                  for a in ("images", "labels")] for s in SPLITS}
    if all(p.exists() for p in cached[split]):
        try:
            imgs, labels = (np.load(p, allow_pickle=False) for p in cached[split])
            if (imgs.dtype == np.uint8 and imgs.ndim == 4 and imgs.shape[1:] == (32, 32, 3)
                    and labels.shape == (len(imgs),)):
                return imgs, labels.astype(np.int64)
        except (ValueError, OSError, EOFError):
            pass
        warnings.warn(f"the decoded CIFAR-10 cache {cached[split][0]} is unreadable or of "
                      "the wrong shape; decoding the images again", UserWarning, stacklevel=3)
    if files is not None:
        from tqdm.auto import tqdm
        arrays = _decode_jpeg_tree(
            (f"cifar10-jpeg/{f.relative_to(src).as_posix()}", f.read_bytes())
            for f in tqdm(files, desc=f"decoding {src}"))
    else:
        arrays = _decode_jpeg_tree(_iter_tar(src))
    for s, pair in arrays.items():
        for path, arr in zip(cached[s], pair):
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            try:
                cache_dir()
                with open(tmp, "wb") as fh:
                    np.save(fh, arr)
                os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
            except OSError as err:  # read-only cache: still return the arrays
                warnings.warn(f"could not cache decoded CIFAR-10 in {path}: {err}")
    return arrays[split]


# The only globals a CIFAR pickle may name: numpy's array and scalar reconstruction
# (protocols 2 to 5, numpy 1 and 2 module names) and latin-1 bytes. Lists, dicts,
# strings and numbers need no global. Anything else (os.system, eval, ...) is refused
# before it can run.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and builtin containers only (CIFAR's torchvision files)."""

    def find_class(self, module, name):
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        if module.startswith("numpy") and name.startswith("dtype[") or (
                module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)  # numpy 2's dtype classes
        raise pickle.UnpicklingError(
            f"refused to unpickle {module}.{name}: a CIFAR file holds only arrays, lists "
            "and dicts, so this file is not one (or was tampered with)")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            d = _ArrayUnpickler(fh, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"{path} is not a readable CIFAR pickle (truncated or corrupted): "
                         f"{type(exc).__name__}: {exc}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path} is not a CIFAR batch: it holds a {type(d).__name__}, "
                         "not a dict")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _load_cifar_pickles(root: Path, split: str, download: bool, hundred: bool):
    """CIFAR-10 batches or CIFAR-100 (fine labels) in torchvision's pickled layout."""
    title = "CIFAR-100" if hundred else "CIFAR-10"
    base = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    names = ([split, "meta"] if hundred else ["test_batch"] if split == "test"
             else [f"data_batch_{i}" for i in range(1, 6)])
    if download and not all((base / f).exists() for f in names):
        import torchvision  # only to download
        tv_class = getattr(torchvision.datasets, title.replace("-", ""))
        tv_class(str(root), train=split == "train", download=True)
    if missing := [base / f for f in names if not (base / f).exists()]:
        if hundred:
            raise _missing(title, missing)
        raise _missing(title, [root / CIFAR10_ARCHIVE, root / "cifar10-jpeg", *missing],
                       f", or put {CIFAR10_ARCHIVE} in {root}")
    batches = [_unpickle(base / f) for f in names]
    key = "fine_labels" if hundred else "labels"
    for f, b in zip(names, batches):
        want = ("fine_label_names",) if hundred and f == "meta" else ("data", key)
        if missing_keys := [k for k in want if k not in b]:
            raise ValueError(f"{base / f} is not a {title} file: no {missing_keys} entry "
                             f"(it has {sorted(map(str, b))[:6]})")
    if hundred:
        classes = [c.decode() if isinstance(c, bytes) else str(c)
                   for c in batches.pop()["fine_label_names"]]
    parts, label_parts = [], []
    for f, b in zip(names, batches):
        data, lab = np.asarray(b["data"]), np.asarray(b[key])
        if data.ndim != 2 or data.shape[1] != 3072 or lab.shape != (data.shape[0],):
            raise ValueError(f"{base / f}: want data of shape (N, 3072) and N labels; got "
                             f"{data.shape} and {lab.shape}")
        parts.append(data.astype(np.uint8).reshape(-1, 3, 32, 32))
        label_parts.append(lab.astype(np.int64))
    imgs = np.concatenate(parts).transpose(0, 2, 3, 1)
    labels = np.concatenate(label_parts)
    note = (f"{title} {split} split{', fine labels' if hundred else ''}, torchvision "
            f"pickle ({base}/{{{','.join(names)}}})")
    return imgs, labels, classes if hundred else CIFAR10_CLASSES, note


def _load_svhn(root: Path, split: str, download: bool):
    path = root / f"{split}_32x32.mat"
    if download and not path.exists():
        import torchvision  # only to download
        torchvision.datasets.SVHN(str(root), split=split, download=True)
    if not path.exists():
        raise _missing("SVHN", [path])
    from scipy.io import loadmat
    mat = loadmat(str(path))
    imgs = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 0, 1, 2))
    labels = np.asarray(mat["y"], dtype=np.int64).ravel()
    labels[labels == 10] = 0  # SVHN stores digit 0 as 10; torchvision maps it to 0
    return imgs, labels, DIGITS, f"SVHN {split} split, cropped digits ({path}, label 10 -> 0)"


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an idx file (gzip or raw): magic 2051 for images (N, rows, cols), 2049 labels."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as fh:
        data = fh.read()
    got = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
    if got != magic:
        raise ValueError(f"{path}: bad idx magic number {got}, expected {magic} "
                         f"({'images' if magic == 2051 else 'labels'})")
    ndim = 3 if magic == 2051 else 1
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: idx header says {shape} but holds {arr.size} bytes")
    return arr.reshape(shape)


def _gray_to_rgb32(gray: np.ndarray) -> np.ndarray:
    from PIL import Image
    out = np.empty((len(gray), 32, 32), np.uint8)
    for i, g in enumerate(gray):
        out[i] = np.asarray(Image.fromarray(g).resize((32, 32), Image.BILINEAR))
    return np.repeat(out[..., None], 3, axis=3)


def _load_idx_set(root: Path, split: str, download: bool, fashion: bool):
    title, folder, names = (("Fashion-MNIST", "FashionMNIST", FASHION_CLASSES) if fashion
                            else ("MNIST", "MNIST", DIGITS))
    prefix = "train" if split == "train" else "t10k"
    stems = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    dirs = [root / folder / "raw"] + ([DEBIAN_FASHION] if fashion else [])

    def find() -> list[Path] | None:
        for d in dirs:
            hits = [next((d / (s + e) for e in ("", ".gz") if (d / (s + e)).exists()), None)
                    for s in stems]
            if all(hits):
                return hits
        return None

    if (files := find()) is None and download:
        import torchvision  # only to download
        getattr(torchvision.datasets, folder)(str(root), train=split == "train", download=True)
        files = find()
    if files is None:
        extra = ", or apt-get install dataset-fashion-mnist" if fashion else ""
        raise _missing(title, [d / (s + "[.gz]") for d in dirs for s in stems], extra)
    gray, labels = _read_idx(files[0], 2051), _read_idx(files[1], 2049)
    note = (f"{title} {split} split ({files[0]}, {files[1].name}), 28x28 gray resized to "
            f"32x32 with Pillow bilinear and replicated to 3 channels")
    return _gray_to_rgb32(gray), labels.astype(np.int64), names, note


def _noise(name: str, size: int, seed: int) -> tuple[np.ndarray, str]:
    rng, shape = np.random.default_rng(seed), (size, 32, 32, 3)
    if name == "uniform-noise":
        return (rng.integers(0, 256, size=shape, dtype=np.uint8),
                f"uniform-noise: i.i.d. integers 0..255 per pixel and channel, seed {seed}")
    z = rng.standard_normal(size=shape, dtype=np.float32) * 64.0 + 127.5
    return (np.clip(np.rint(z), 0, 255).astype(np.uint8),
            f"gaussian-noise: i.i.d. N(127.5, 64^2) per pixel and channel, rounded and "
            f"clipped to 0..255, seed {seed}")


@dataclass
class Loaded:
    """What a dataset builder returns: the images and what :func:`load_dataset` needs to know.

    ``sized``: the builder already drew ``n`` images (noise sets); ``jpeg_quality``:
    the images are already JPEG at this quality (so re-encoding at it is a no-op).
    """

    images: np.ndarray
    labels: np.ndarray
    names: Sequence[str]
    note: str
    sized: bool = False
    jpeg_quality: int | None = None


def _cifar10(root: Path, split: str, download: bool, n, seed) -> Loaded:
    src = next((p for p in (root / CIFAR10_ARCHIVE, root / "cifar10-jpeg") if p.exists()), None)
    if src is None:
        return Loaded(*_load_cifar_pickles(root, split, download, False))
    imgs, labels = _load_cifar10_jpeg(src, split)
    if not len(imgs):  # a 0 x 0 array went on to embed and score nothing, exit 0
        raise ValueError(f"{src} holds no {split} images (want members "
                         f"cifar10-jpeg/{split}/<class>/NNNN.jpg).")
    return Loaded(imgs, labels, CIFAR10_CLASSES,
                  f"CIFAR-10 JPEG q75 archive ({src}, cifar10-jpeg/{split}/<class>/NNNN.jpg, "
                  f"decoded with Pillow), {split} split", jpeg_quality=75)


def _noise_set(name: str):
    def build(root, split, download, n, seed) -> Loaded:
        size = 10000 if n is None else int(n)
        imgs, note = _noise(name, size, seed)
        return Loaded(imgs, np.full(len(imgs), -1, np.int64), [], note, sized=True)
    return build


# name -> builder(root, split, download, n, seed) -> Loaded. Adding a dataset: one
# builder and one entry here (plus its test, on small files in the real format).
DATASETS = {
    "cifar10": _cifar10,
    "cifar100": lambda root, split, download, n, seed: Loaded(
        *_load_cifar_pickles(root, split, download, True)),
    "svhn": lambda root, split, download, n, seed: Loaded(*_load_svhn(root, split, download)),
    "mnist": lambda root, split, download, n, seed: Loaded(
        *_load_idx_set(root, split, download, False)),
    "fashion-mnist": lambda root, split, download, n, seed: Loaded(
        *_load_idx_set(root, split, download, True)),
    "uniform-noise": _noise_set("uniform-noise"),
    "gaussian-noise": _noise_set("gaussian-noise"),
}


def parse_classes(text: str | None) -> list[int | str] | None:
    """A class subset as written on a command line, for ``load_dataset(classes=...)``.

    ``"0-5"`` -> [0, 1, 2, 3, 4, 5]; ``"0,1,7"`` -> [0, 1, 7]; ``"cat,dog"`` ->
    ["cat", "dog"] (names are checked by ``load_dataset``); None stays None.
    Raises ``ValueError`` for an empty range (``"5-1"``) or no class at all.
    """
    if text is None:
        return None
    out: list[int | str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if (match := re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)) is not None:
            lo, hi = int(match[1]), int(match[2])
            if hi < lo:
                raise ValueError(f"empty class range {part!r}")
            out.extend(range(lo, hi + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            out.append(part)
    if not out:
        raise ValueError(f"{text!r} names no class")
    return out


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None, *,
                 download: bool = False, jpeg_quality: int | None = None,
                 classes: Sequence[int | str] | None = None, n: int | None = None,
                 seed: int = 0) -> ImageSet:
    """Load an image dataset as uint8 arrays.

    Parameters
    ----------
    name : str
        One of ``DATASETS``: cifar10, cifar100, svhn, mnist, fashion-mnist, uniform-noise,
        gaussian-noise.
    split : {"train", "test"}
        Ignored by the noise sets.
    root : path, optional
        Data folder, see :func:`data_root`.
    download : bool
        Fetch missing files with torchvision (needs network access).
    jpeg_quality : int, optional
        Re-encode every image with :func:`jpeg_reencode` at this quality (applied last);
        75 is a no-op for CIFAR-10 read from the q75 archive.
    classes : sequence of int or str, optional
        Keep only these classes (ids or names); labels keep their original ids.
    n : int, optional
        Keep the first ``n`` images (after ``classes``) of a permutation seeded by ``seed``,
        in that order. Noise sets: the number of images (default 10000).
    seed : int
        Seed of that permutation, and of the noise.

    Returns
    -------
    ImageSet

    Raises
    ------
    ValueError
        Unknown name, split or class; ``n`` larger than the set; a malformed file.
    FileNotFoundError
        Files missing; the message lists the paths searched and how to get them.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    base = data_root(root)
    got = DATASETS[name](base, split, download, n, seed)
    if classes is not None and not got.names:
        raise ValueError(f"{name} is unlabelled; classes= does not apply")
    reencode, note = jpeg_quality is not None, got.note
    if got.jpeg_quality is not None and jpeg_quality == got.jpeg_quality:  # never compress twice
        reencode = False
        note += f"; jpeg_quality={jpeg_quality} is a no-op (already JPEG q{jpeg_quality})"
    if got.sized:
        n = None
    out = ImageSet(got.images, got.labels, name, list(got.names), f"{note}; N={len(got.images)}")
    if classes is not None:
        out = out.subset(classes)
    if n is not None:
        if n > len(out):
            raise ValueError(f"n={n} but {name} {split} has only {len(out)} images")
        idx = np.random.default_rng(seed).permutation(len(out))[:n]
        out = out._derive(out.images[idx], out.labels[idx],
                          f"first {n} of a permutation with seed {seed}")
    if reencode:
        out = out._derive(jpeg_reencode(out.images, jpeg_quality), out.labels,
                          f"JPEG re-encoded with Pillow at quality {jpeg_quality} (4:2:0) "
                          "and decoded back")
    return out
