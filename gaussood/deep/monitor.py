"""An OOD monitor that never sees an OOD dataset: held-out ID images against proxies
made from ID images only.

Proxies (each built from the held-out ID images themselves, one per image, seeded):

- ``noise``: Gaussian noise with the per-channel mean and standard deviation of the ID
  images, clipped to 0..255;
- ``permuted``: each image's pixels in a random order (the same colours, no structure);
- ``jigsaw``: each image cut into a 4 x 4 grid of patches, the patches shuffled (local
  structure kept, global layout broken);
- ``rotated``: each image turned by 90, 180 or 270 degrees (only meaningful when the
  encoder was not trained on rotations; ``rotated=False`` leaves it out).

Scorer: ``GaussianScorer`` (Ledoit-Wolf, one Gaussian) fitted on the L2-normalised
backbone features of a bank of training images (the space the shipped encoders score
in by default, see DESIGN.md); AUROC of held-out ID against each proxy from
``gaussood.metrics.auroc`` (ID positive, ranks, float64). An untrained network is not
guaranteed to separate any of these; the number is for watching a run, not a benchmark.
"""

from __future__ import annotations

import warnings

import numpy as np

PROXIES = ("noise", "permuted", "jigsaw", "rotated")


def _check(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3); got {images.dtype} {images.shape}")
    return images


def noise_like(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise images with the per-channel mean and std of ``images``."""
    images = _check(images).astype(np.float64)
    mean, std = images.mean(axis=(0, 1, 2)), images.std(axis=(0, 1, 2))
    noise = rng.normal(mean, std, size=images.shape)
    return np.clip(np.rint(noise), 0, 255).astype(np.uint8)


def permute_pixels(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image with its pixels (RGB triples) in its own random order."""
    images = _check(images)
    n, h, w, _ = images.shape
    order = np.argsort(rng.random((n, h * w)), axis=1)
    flat = images.reshape(n, h * w, 3)
    return np.take_along_axis(flat, order[:, :, None], axis=1).reshape(images.shape)


def jigsaw(images: np.ndarray, rng: np.random.Generator, grid: int = 4) -> np.ndarray:
    """Each image cut into ``grid x grid`` equal patches, shuffled (a border that does not
    divide evenly stays in place). A shuffle may leave some patches where they were."""
    images = _check(images)
    n, h, w, c = images.shape
    ph, pw = h // grid, w // grid
    if ph < 1 or pw < 1:
        raise ValueError(f"a {grid}x{grid} jigsaw needs images of at least {grid} px")
    out = images.copy()
    core = images[:, :ph * grid, :pw * grid]
    patches = core.reshape(n, grid, ph, grid, pw, c).transpose(0, 1, 3, 2, 4, 5) \
        .reshape(n, grid * grid, ph, pw, c)
    order = np.argsort(rng.random((n, grid * grid)), axis=1)
    patches = np.take_along_axis(patches, order[:, :, None, None, None], axis=1)
    out[:, :ph * grid, :pw * grid] = patches.reshape(n, grid, grid, ph, pw, c) \
        .transpose(0, 1, 3, 2, 4, 5).reshape(n, ph * grid, pw * grid, c)
    return out


def rotate_images(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image turned by 1, 2 or 3 quarter turns (counter-clockwise, ``np.rot90``)."""
    images = _check(images)
    turns = rng.integers(1, 4, size=len(images))
    if images.shape[1] != images.shape[2] and (turns % 2).any():
        raise ValueError("rotated proxies need square images")
    return np.stack([np.rot90(im, k) for im, k in zip(images, turns)]) if len(images) \
        else images.copy()


def ood_proxies(images: np.ndarray, seed: int = 0, rotated: bool = True) -> dict:
    """The proxy sets of the module docstring, each of ``len(images)`` uint8 images, made
    from ``images`` alone (seeded: the same sets every call)."""
    images = _check(images)
    makers = {"noise": noise_like, "permuted": permute_pixels, "jigsaw": jigsaw,
              "rotated": rotate_images}
    return {name: make(images, np.random.default_rng([seed, i]))
            for i, (name, make) in enumerate(makers.items()) if rotated or name != "rotated"}


def proxy_auroc(embed, bank: np.ndarray, held: np.ndarray, proxies: dict) -> dict:
    """AUROC (ID positive) of held-out ID images against each proxy set, and their mean.

    ``embed(images) -> (N, D)`` features; a ``GaussianScorer`` is fitted on the
    L2-normalised features of ``bank``; ``score_samples`` (-Mahalanobis^2) scores.
    """
    from ..gaussian import GaussianScorer
    from ..metrics import auroc

    def normed(x):
        f = np.asarray(embed(x), dtype=np.float64)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    with warnings.catch_warnings():  # only scores are used: the chi2 law check is moot here
        warnings.filterwarnings("ignore", message="calibration='chi2' assumes Gaussian rows")
        scorer = GaussianScorer(calibration="chi2").fit(normed(bank))
    s_in = scorer.score_samples(normed(held))
    out = {name: float(auroc(s_in, scorer.score_samples(normed(x))))
           for name, x in proxies.items()}
    out["mean"] = float(np.mean(list(out.values())))
    return out


__all__ = ["PROXIES", "ood_proxies", "proxy_auroc", "noise_like", "permute_pixels", "jigsaw",
           "rotate_images"]
