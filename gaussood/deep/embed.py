"""Embedding extraction: images in, float32 numpy embeddings out (cached on disk).

Both functions take any encoder spec of ``gaussood.deep.make_encoder`` (a gaussood encoder
file or ``Encoder``, a torch module, ``torchvision:<name>``, a TorchScript file, an import
spec, a callable, or an ``ImageEncoder``) and any image input of
``gaussood.deep.open_images``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..provenance import data_fingerprint
from .encoders import GAUSSOOD_LAYERS as LAYERS  # noqa: F401 - re-exported
from .encoders import make_encoder, pick_device  # noqa: F401 - pick_device re-exported


def embed_images(model, images, *, layer: str | None = None, batch_size: int | None = None,
                 device=None, progress: bool = False, preprocessing=None, out=None,
                 strict: bool = False, views: str | None = None) -> np.ndarray:
    """float32 ``(N, D)`` embeddings (unnormalised) of ``images`` by ``model``.

    ``views="flip"``: the mean features of each image and its mirror (test-time
    augmentation); ``views="rot4"``: the mean features of the 4 quarter turns of each image (a rotation
    ensemble, for encoders trained with ``TrainConfig.rotation``).

    For a gaussood encoder ``layer="backbone"`` (default) gives the features h, ``"head"``
    the projection z; for other modules see ``make_encoder``. ``out``: a ``.npy`` path
    written row by row (bounded memory); a read-only memmap of it is returned. Several
    layers (a list): a dict of arrays by layer, from one forward pass (``out``: a dict
    of paths).
    """
    encoder = make_encoder(model, layer=layer, preprocessing=preprocessing, device=device,
                           views=views)
    if device is not None:
        encoder.device = device
    return encoder.embed(images, batch_size=batch_size, progress=progress, out=out,
                         strict=strict, desc=f"embed ({encoder.layer})")


def _cache_entry(dataset, strict):
    """(images, name, fingerprint or None) of an ImageSet, a folder or another input."""
    from .data import ImageSet
    from .images import ImageFiles

    if isinstance(dataset, ImageSet):
        return dataset.images, dataset.name, json.dumps(data_fingerprint(dataset),
                                                        sort_keys=True)
    if isinstance(dataset, (str, Path)) and Path(dataset).is_dir():
        dataset = ImageFiles(dataset, strict=strict)
    if isinstance(dataset, ImageFiles) and dataset.root is not None:  # not ImageFiles.of
        return dataset, dataset.root.name or "folder", dataset.fingerprint() + f"|{strict}"
    return dataset, None, None


def extract_embeddings(checkpoint, dataset, *, layer: str | None = None,
                       batch_size: int | None = None, device=None, cache_dir=None,
                       progress: bool = True, preprocessing=None, out=None,
                       strict: bool = False, views: str | None = None) -> np.ndarray:
    """Embed ``dataset`` (an ``ImageSet``, a folder, or any image input) with an encoder.

    ImageSets and folders are cached on disk: the key is the encoder's ``identity()``
    (weights SHA-256, layer, preprocessing) and the data's fingerprint
    (``gaussood.provenance.data_fingerprint`` of an ImageSet: content, shape and name;
    paths, sizes and times of a folder's files), so a retrained encoder or
    changed data never reuse stale embeddings. ``views``: as ``embed_images`` (in the key). ``cache_dir=False`` disables the cache.
    Folders are embedded straight into the cache file and come back as a read-only
    memmap, so memory does not grow with the number of images; ``out`` (a ``.npy`` path)
    does the same for any input, without the cache.
    """
    from .data import cache_dir as default_cache
    from .data import ImageSet

    encoder = make_encoder(checkpoint, layer=layer, preprocessing=preprocessing, device=device,
                           views=views)
    if len(encoder.layers) > 1:
        raise ValueError(f"extract_embeddings caches one layer; got {list(encoder.layers)}: "
                         "call it once per layer, or use make_encoder(...).embed for all "
                         "of them in one pass.")
    if device is not None:
        encoder.device = device
    images, name, fingerprint = _cache_entry(dataset, strict)
    kw = {"batch_size": batch_size, "progress": progress, "strict": strict,
          "desc": f"embed {name or ''} ({encoder.layer})"}
    if out is not None or fingerprint is None or cache_dir is False:
        return encoder.embed(images, out=out, **kw)
    key = hashlib.sha256((json.dumps(encoder.identity(), sort_keys=True) + "|"
                          + fingerprint).encode()).hexdigest()
    safe_layer = "".join(c if c.isalnum() else "-" for c in encoder.layer)
    target = Path(cache_dir or default_cache()) / "embeddings" / \
        f"{name}-{safe_layer}-{key[:24]}.npy"
    in_memory = isinstance(dataset, ImageSet)
    if target.is_file():
        cached = _read_cache(target, len(images), images if not in_memory else None)
        if cached is not None:
            return np.array(cached) if in_memory else cached
    encoder.embed(images, out=target, **kw)
    skipped = [] if in_memory else [list(item) for item in images.skipped]
    _write_cache_record(target, np.load(target, mmap_mode="r").shape, skipped)
    return np.load(target, mmap_mode=None if in_memory else "r")


def _record_path(target: Path) -> Path:
    return target.with_suffix(".json")


def _write_cache_record(target: Path, shape, skipped: list) -> None:
    """``<cache>.json``: the shape written and a folder's skipped files (path, reason)."""
    from .._atomic import atomic_path

    record = {"shape": [int(n) for n in shape],
              "skipped": [[os.fsencode(p).decode("latin-1"), why] for p, why in skipped]}
    with atomic_path(_record_path(target)) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh)


def _read_cache(target: Path, n_inputs: int, files=None):
    """The cached embeddings (a memmap), or None (with a warning) when the file or its
    record is unreadable, or they disagree: another shape than recorded, recorded rows
    plus skipped files not the ``n_inputs`` images, non-finite values. It is then
    computed again. ``files`` (an ``ImageFiles``): the skipped files are warned about
    again and listed in ``files.skipped`` / ``files.read``, as an embedding pass does."""
    import warnings

    from .images import warn_skipped

    why = None
    try:
        with open(_record_path(target), encoding="utf-8") as fh:
            record = json.load(fh)
        shape = tuple(record["shape"])
        skipped = [(os.fsdecode(p.encode("latin-1")), str(w)) for p, w in record["skipped"]]
        cached = np.load(target, mmap_mode="r")
    except FileNotFoundError:
        why = "no record of what was written (an older gaussood, or an interrupted write)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    else:
        if (cached.ndim != 2 or cached.dtype != np.float32 or cached.shape != shape
                or shape[0] < 1 or shape[1] < 1 or shape[0] + len(skipped) != n_inputs):
            why = (f"shape {cached.shape} {cached.dtype}; recorded {shape} with "
                   f"{len(skipped)} skipped files, for {n_inputs} images")
        elif not all(np.isfinite(cached[i:i + 65536]).all()
                     for i in range(0, shape[0], 65536)):
            why = "non-finite values"
    if why is None:
        if files is not None:
            gone = {p for p, _ in skipped}
            files.skipped.extend(skipped)
            files.read.extend(p for p in files.paths if p not in gone)
            if skipped:
                warn_skipped(skipped, stacklevel=4)
        return cached
    warnings.warn(f"Embedding cache {target} is broken ({why}); computing it again.",
                  stacklevel=3)
    return None
