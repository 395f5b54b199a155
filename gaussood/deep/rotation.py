"""Rotations in the contrastive objective (CSI-style shifted instances), CPU-sized.

Tack, Mo, Jeong & Shin, "CSI: Novelty Detection via Contrastive Learning on
Distributionally Shifted Instances" (NeurIPS 2020) train on the 4 rotations of every
image: views of the same (image, rotation) are positives, every other rotation of the
same image is a negative, and a linear head predicts the rotation. That is a 4x batch.
Here (``TrainConfig.rotation``):

- ``"negatives"``: each image of a batch gets one rotation r in {0, 90, 180, 270}
  degrees, drawn from the run's generator; both of its views are rotated by r, so the
  positives are the two views of (image, r), and the other images of the batch, at their
  own rotations, are the negatives, as ever. Cost: one ``rot90`` per view, no 4x batch.
  With ``rotation_negatives = f > 0`` the first ``round(f * B)`` images of the (random)
  batch also get a third view at another rotation r' != r, embedded and put into every
  anchor's denominator only (``InfoNCELoss(..., negatives=...)``): explicit shifted
  negatives at ``f`` extra views per image.
- ``"predict"``: the same, plus a 4-way linear head on the backbone features h that
  predicts r with cross-entropy, weighted ``rotation_weight`` beside InfoNCE. The head is
  trained and checkpointed with the run but is not part of the encoder file.

With ``objective="supcon"`` the classes of SupCon become (class, rotation) pairs, label
``4 y + r`` (CSI's supervised variant): the positives of a view are the views of the
same class at the same rotation, and the same class at another rotation is a negative.
``rotation_negatives`` applies to InfoNCE only.

At score time ``rotation_views(x)`` gives the 4 rotated copies of a batch, whose
features an ``ImageEncoder(views="rot4")`` averages.
"""

from __future__ import annotations

import torch

ROTATIONS = ("none", "negatives", "predict")
N_ROTATIONS = 4


def draw_rotations(n: int, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """n rotations (quarter turns, int64 in 0..3), uniform, from ``generator``."""
    return torch.randint(0, N_ROTATIONS, (n,), generator=generator, device=device)


def other_rotations(r: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """For each rotation r, one of the three others, uniform: (r + 1 + U{0,1,2}) mod 4."""
    shift = torch.randint(1, N_ROTATIONS, r.shape, generator=generator, device=r.device)
    return (r + shift) % N_ROTATIONS


def rotate(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Image i of (B, C, H, W) turned by ``r[i]`` quarter turns (``torch.rot90`` over the
    last two dimensions, counter-clockwise); exact (a permutation of pixels)."""
    if x.ndim != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    if r.shape != (x.shape[0],):
        raise ValueError(f"r must have shape ({x.shape[0]},), got {tuple(r.shape)}")
    if x.shape[-1] != x.shape[-2] and bool((r % 2 == 1).any()):
        raise ValueError(f"quarter turns need square images, got {tuple(x.shape[-2:])}")
    out = x.clone()
    for k in range(1, N_ROTATIONS):
        rows = (r % N_ROTATIONS == k).nonzero().squeeze(1)
        if rows.numel():
            out[rows] = torch.rot90(x[rows], k, dims=(2, 3))
    return out


def rotation_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 4 rotations of a batch (B, C, H, W): 0, 90, 180 and 270 degrees."""
    return [x] + [torch.rot90(x, k, dims=(-2, -1)) for k in range(1, N_ROTATIONS)]


def rotation_head(feature_dim: int) -> torch.nn.Linear:
    """The 4-way linear rotation classifier of ``rotation="predict"``."""
    return torch.nn.Linear(feature_dim, N_ROTATIONS)


def check_rotation_config(config, world: int = 1) -> None:
    """Validate the rotation fields of a TrainConfig (``world``: processes)."""
    if config.rotation not in ROTATIONS:
        raise ValueError(f"rotation must be one of {ROTATIONS}; got {config.rotation!r}.")
    if not 0 <= config.rotation_negatives <= 1:
        raise ValueError("rotation_negatives must be a fraction of the batch in [0, 1]; got "
                         f"{config.rotation_negatives!r}.")
    if not config.rotation_weight >= 0:
        raise ValueError(f"rotation_weight must be >= 0; got {config.rotation_weight!r}.")
    if config.rotation == "none":
        if config.rotation_negatives:
            raise ValueError("rotation_negatives needs rotation='negatives' or 'predict'.")
        return
    if config.objective not in ("infonce", "supcon"):
        raise ValueError("rotation applies to objective='infonce' or 'supcon' only.")
    if config.objective == "supcon" and config.rotation_negatives:
        raise ValueError("rotation_negatives applies to objective='infonce' only (under "
                         "'supcon' the other rotations of a class are negatives already).")
    if world > 1 and (config.rotation == "predict" or config.rotation_negatives):
        raise ValueError("rotation='predict' and rotation_negatives > 0 run in one process "
                         "only (the gathered loss has no extra negatives and the rotation "
                         "head is not synchronised); rotation='negatives' works with nproc > 1.")


__all__ = ["ROTATIONS", "draw_rotations", "other_rotations", "rotate", "rotation_views",
           "rotation_head", "check_rotation_config"]
