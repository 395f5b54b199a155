"""Embedding extraction: images in, float32 numpy embeddings out (cached on disk).

Both functions take any encoder spec of ``gaussood.deep.make_encoder`` (a gaussood encoder
file or ``Encoder``, a torch module, ``torchvision:<name>``, a TorchScript file, an import
spec, a callable, or an ``ImageEncoder``) and any image input of
``gaussood.deep.open_images``.
"""

from __future__ import annotations

import hashlib
import json
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
    if isinstance(dataset, ImageFiles):
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
    rows = len(dataset) if in_memory else len(images)
    if target.is_file():
        cached = _read_cache(target, rows, exact=in_memory)
        if cached is not None:
            return np.array(cached) if in_memory else cached
    encoder.embed(images, out=target, **kw)
    return np.load(target, mmap_mode=None if in_memory else "r")


def _read_cache(target: Path, rows: int, *, exact: bool):
    """The cached embeddings (a memmap), or None (with a warning) when the file is
    unreadable or has the wrong shape: it is then computed again."""
    import warnings

    try:
        cached = np.load(target, mmap_mode="r")
        ok = (cached.ndim == 2 and cached.dtype == np.float32
              and (cached.shape[0] == rows if exact else cached.shape[0] <= rows))
    except (OSError, ValueError) as exc:
        cached, ok = None, False
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    else:
        why = f"shape {cached.shape} {cached.dtype}, expected {rows} rows of float32"
    if ok:
        return cached
    warnings.warn(f"Embedding cache {target} is broken ({why}); computing it again.",
                  stacklevel=3)
    return None
