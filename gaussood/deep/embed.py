"""Embedding extraction: images in, float32 numpy embeddings out (cached on disk)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._atomic import atomic_path
from .augment import eval_transform
from .checkpoint import file_sha256, load_encoder
from .models import Encoder

LAYERS = ("backbone", "head")


def pick_device(device=None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def embed_images(model: Encoder, images: np.ndarray, *, layer: str = "backbone",
                 batch_size: int = 512, device=None, progress: bool = False) -> np.ndarray:
    """Embeddings of uint8 images (N, 32, 32, 3) as float32 (N, D), unnormalised.

    ``layer="backbone"`` gives the features h, ``"head"`` the projection z.
    """
    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {LAYERS}; got {layer!r}.")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 of shape (N, H, W, 3); got {images.dtype} "
                         f"{images.shape}.")
    device = pick_device(device)
    was_training = model.training
    model.eval().to(device)
    out = None
    try:
        starts = range(0, images.shape[0], batch_size)
        for start in tqdm(starts, desc=f"embed ({layer})", disable=not progress, leave=False):
            batch = torch.from_numpy(images[start:start + batch_size]).to(device)
            batch = eval_transform(batch.permute(0, 3, 1, 2))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                h, z = model(batch)
            feats = (h if layer == "backbone" else z).float().cpu().numpy()
            if out is None:
                out = np.empty((images.shape[0], feats.shape[1]), dtype=np.float32)
            out[start:start + feats.shape[0]] = feats
    finally:
        model.train(was_training)
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def dataset_fingerprint(dataset) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(dataset.images).data)
    digest.update(np.ascontiguousarray(dataset.labels).data)
    digest.update(f"{dataset.name}|{dataset.source}".encode())
    return digest.hexdigest()


def extract_embeddings(checkpoint, dataset, *, layer: str = "backbone", batch_size: int = 512,
                       device=None, cache_dir=None, progress: bool = True) -> np.ndarray:
    """Embed an ``ImageSet`` with the encoder in ``checkpoint``; cached on disk.

    The cache key is the checkpoint file's SHA-256, the dataset's content
    fingerprint and the layer, so a retrained encoder or a changed dataset
    never reuses stale embeddings. ``cache_dir=False`` disables the cache.
    """
    from .data import cache_dir as default_cache

    key = hashlib.sha256(
        f"{file_sha256(checkpoint)}|{dataset_fingerprint(dataset)}|{layer}".encode()).hexdigest()
    folder = None if cache_dir is False else Path(cache_dir or default_cache()) / "embeddings"
    target = None if folder is None else folder / f"{dataset.name}-{layer}-{key[:24]}.npy"
    if target is not None and target.is_file():
        return np.load(target)
    model = load_encoder(checkpoint, device=pick_device(device))
    feats = embed_images(model, dataset.images, layer=layer, batch_size=batch_size,
                         device=device, progress=progress)
    if target is not None:
        with atomic_path(target, suffix=".npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, feats)
    return feats
