"""SimCLR augmentations on batches of image tensors, on the device.

The whole batch is augmented at once: the random resized crop and the flip are one
affine map per image (``affine_grid`` + ``grid_sample``), colour jitter and grayscale
are elementwise tensor operations with per-image factors. No PIL, no Python loop over
the images, and every random number comes from one ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# ITU-R 601-2 luma with torchvision's rounding of 0.299 (rgb_to_grayscale uses 0.2989).
LUMA = (0.2989, 0.587, 0.114)
_N_TRIES = 10  # candidate boxes per image, as torchvision's RandomResizedCrop


def _to_float(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 in [0, 255] or float in [0, 1] -> float in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    return images


def _normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma of (B, 3, H, W) images, shape (B, 1, H, W)."""
    r, g, b = x.unbind(dim=1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def _sample_boxes(n: int, height: int, width: int, scale: Sequence[float],
                  ratio: Sequence[float], generator: torch.Generator | None,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """Crop boxes ``(top, left, h, w)``, each a float tensor (n,) of whole pixels.

    torchvision's ``RandomResizedCrop.get_params``, vectorised: ten candidates per
    image (area fraction uniform in ``scale``, log aspect ratio uniform in
    ``log(ratio)``, sides rounded), the first that fits is kept, else the centre crop
    clipped to ``ratio``; the offset is uniform over the valid whole-pixel positions.
    """
    u = torch.rand(2, n, _N_TRIES, generator=generator, device=device, dtype=torch.float64)
    target = height * width * (scale[0] + (scale[1] - scale[0]) * u[0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[1])
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # first valid candidate
    found = valid.any(dim=1)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    w = torch.where(found, w.gather(1, first).squeeze(1), float(fw))
    h = torch.where(found, h.gather(1, first).squeeze(1), float(fh))
    pos = torch.rand(2, n, generator=generator, device=device, dtype=torch.float64)
    top = torch.minimum(torch.floor(pos[0] * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(pos[1] * (width - w + 1)), width - w)
    top = torch.where(found, top, float((height - fh) // 2))
    left = torch.where(found, left, float((width - fw) // 2))
    return top, left, h, w


def _box_theta(top: torch.Tensor, left: torch.Tensor, h: torch.Tensor, w: torch.Tensor,
               flip: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``affine_grid`` matrices (n, 2, 3) that map the output onto each box.

    With ``align_corners=False`` pixel edge x (0 .. width) sits at 2 x / width - 1, so
    the box [left, left + w) has centre (2 left + w) / width - 1 and half-width
    w / width; a horizontal flip negates the x scale.
    """
    theta = torch.zeros(top.shape[0], 2, 3, dtype=torch.float64, device=top.device)
    theta[:, 0, 0] = torch.where(flip, -w / width, w / width)
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    return theta


def _shift_hue(x: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of (B, 3, H, W) images by ``hue`` (B,) turns (torchvision's formula)."""
    r, g, _ = x.unbind(dim=1)
    minc, maxc = torch.aminmax(x, dim=1)
    eqc, crange, ones = maxc == minc, maxc - minc, torch.ones_like(maxc)
    s = crange / torch.where(eqc, ones, maxc)
    rc, gc, bc = ((maxc.unsqueeze(1) - x) / torch.where(eqc, ones, crange).unsqueeze(1)).unbind(1)
    not_r, is_g = maxc != r, maxc == g
    hsum = (bc - gc) * ~not_r + (2.0 + rc - bc) * (is_g & not_r) + (4.0 + gc - rc) * (not_r & ~is_g)
    hh = torch.fmod(hsum * (1.0 / 6.0) + 1.0, 1.0)
    hh = torch.remainder(hh + hue.to(x.dtype).view(-1, 1, 1), 1.0)
    i = torch.floor(hh * 6)
    f, i, v = hh * 6 - i, torch.remainder(i.long(), 6), maxc
    p = ((1.0 - s) * v).clamp(0.0, 1.0)
    q = ((1.0 - s * f) * v).clamp(0.0, 1.0)
    t = ((1.0 - s + s * f) * v).clamp(0.0, 1.0)
    vpqt = torch.stack((v, p, q, t), dim=1)
    select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]],
                          device=x.device)[:, i].movedim(0, 1)
    return vpqt.gather(1, select)


def _jitter(images: torch.Tensor, brightness: torch.Tensor | None = None,
            contrast: torch.Tensor | None = None, saturation: torch.Tensor | None = None,
            hue: torch.Tensor | None = None) -> torch.Tensor:
    """Colour jitter with explicit per-image factors, each (B,) or None (skipped).

    In the fixed order brightness, contrast, saturation, hue, each clamped to [0, 1]:
    x * b; c x + (1 - c) mean(luma(x)); s x + (1 - s) luma(x); hue rotated by h turns.
    Each step equals torchvision's ``adjust_*`` on float tensors with the same factor.
    """
    x = images
    b, c, s = (None if f is None else f.to(x.device, x.dtype).view(-1, 1, 1, 1)
               for f in (brightness, contrast, saturation))
    if b is not None:
        x = (x * b).clamp(0.0, 1.0)
    if c is not None:
        x = (c * x + (1 - c) * _gray(x).mean(dim=(1, 2, 3), keepdim=True)).clamp(0.0, 1.0)
    if s is not None:
        x = (s * x + (1 - s) * _gray(x)).clamp(0.0, 1.0)
    if hue is not None:
        x = _shift_hue(x, hue.to(x.device))
    return x


class SimCLRAugment(torch.nn.Module):
    """The SimCLR view transform on a batch of images, on their device.

    Chen et al., "A Simple Framework for Contrastive Learning of Visual
    Representations" (ICML 2020): random resized crop, horizontal flip, colour
    jitter (brightness, contrast, saturation, hue) with probability ``jitter_p``,
    grayscale with probability ``gray_p``, then ``(x - mean) / std``.
    https://arxiv.org/abs/2002.05709

    Parameters
    ----------
    size : int, default=32
        Output side in pixels.
    crop_scale, crop_ratio : (float, float)
        Area fraction and aspect-ratio range of the crop, as ``RandomResizedCrop``.
    flip_p : float, default=0.5
    jitter : (float, float, float, float), default=(0.4, 0.4, 0.4, 0.1)
        Brightness, contrast and saturation factors are uniform in
        [max(0, 1 - j), 1 + j]; the hue shift is uniform in [-j, j] (j <= 0.5).
    jitter_p, gray_p : float
        Probabilities of colour jitter and of grayscale.
    mean, std : 3 floats, default CIFAR-10 statistics
    normalize : bool, default=True
        Apply ``(x - mean) / std``; with False the output lies in [0, 1].

    Notes
    -----
    Differences from torchvision: the four jitter steps run in a fixed order
    (torchvision draws a random order per image); the crop is resampled bilinearly
    without antialiasing (``grid_sample``, border padding), so large downscales alias.
    Crop boxes follow ``RandomResizedCrop.get_params`` (ten tries, then centre crop).

    Examples
    --------
    >>> import torch
    >>> images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    >>> augment = SimCLRAugment()
    >>> v1, v2 = two_views(augment, images, torch.Generator().manual_seed(0))
    >>> v1.shape, v1.dtype
    (torch.Size([4, 3, 32, 32]), torch.float32)
    """

    def __init__(self, size: int = 32, crop_scale: Sequence[float] = (0.08, 1.0),
                 crop_ratio: Sequence[float] = (3 / 4, 4 / 3), flip_p: float = 0.5,
                 jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1), jitter_p: float = 0.8,
                 gray_p: float = 0.2, mean: Sequence[float] = CIFAR10_MEAN,
                 std: Sequence[float] = CIFAR10_STD, normalize: bool = True) -> None:
        super().__init__()
        if int(size) != size or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        if len(crop_scale) != 2 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must be (lo, hi) with 0 < lo <= hi <= 1, got {crop_scale!r}")
        if len(crop_ratio) != 2 or not 0 < crop_ratio[0] <= crop_ratio[1]:
            raise ValueError(f"crop_ratio must be (lo, hi) with 0 < lo <= hi, got {crop_ratio!r}")
        for name, p in (("flip_p", flip_p), ("jitter_p", jitter_p), ("gray_p", gray_p)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
            raise ValueError(f"jitter must be 4 non-negative strengths with hue <= 0.5, got {jitter!r}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError("mean and std must have 3 entries each, std positive")
        self.size, self.crop_scale, self.crop_ratio = int(size), tuple(crop_scale), tuple(crop_ratio)
        self.flip_p, self.jitter, self.jitter_p = flip_p, tuple(jitter), jitter_p
        self.gray_p, self.mean, self.std, self.normalize = gray_p, tuple(mean), tuple(std), normalize

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment (B, 3, H, W) uint8 or [0, 1] float images -> float (B, 3, size, size).

        ``generator`` must live on the images' device; the same seed gives the same views.
        """
        x = _to_float(images)
        if generator is not None and generator.device.type != x.device.type:
            raise ValueError(f"generator is on {generator.device}, images on {x.device}")
        (n, _, height, width), dev = x.shape, x.device
        top, left, h, w = _sample_boxes(n, height, width, self.crop_scale, self.crop_ratio, generator, dev)
        u = torch.rand(n, 7, generator=generator, device=dev)  # flip, jitter?, b, c, s, h, gray?
        theta = _box_theta(top, left, h, w, u[:, 0] < self.flip_p, height, width).to(x.dtype)
        grid = F.affine_grid(theta, [n, 3, self.size, self.size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.jitter_p > 0 and any(self.jitter):
            factors = []
            for k, j in enumerate(self.jitter[:3]):
                lo = max(0.0, 1.0 - j)
                factors.append(lo + (1.0 + j - lo) * u[:, 2 + k] if j > 0 else None)
            hj = self.jitter[3]
            factors.append((2 * u[:, 5] - 1) * hj if hj > 0 else None)
            jittered = _jitter(x, *factors)
            x = torch.where((u[:, 1] < self.jitter_p).view(-1, 1, 1, 1), jittered, x)
        if self.gray_p > 0:
            x = torch.where((u[:, 6] < self.gray_p).view(-1, 1, 1, 1), _gray(x).expand_as(x), x)
        return _normalize(x, self.mean, self.std) if self.normalize else x


def two_views(augment: torch.nn.Module, images: torch.Tensor,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent draws of one view transform: the positive pair of SimCLR."""
    return augment(images, generator), augment(images, generator)


def eval_transform(images: torch.Tensor, mean: Sequence[float] = CIFAR10_MEAN,
                   std: Sequence[float] = CIFAR10_STD) -> torch.Tensor:
    """No augmentation: (B, 3, H, W) uint8 or [0, 1] float -> normalised float images."""
    return _normalize(_to_float(images), mean, std)
