"""What an encoder expects of an image: size, resize policy, value range, mean/std.

A preprocessing is one of

- a dict (the format of gaussood encoder files, ``checkpoint.cifar10_preprocessing``):
  ``input_size`` [H, W] or None (native size), ``resize`` (policy below),
  ``resize_size`` (shorter side before the crop, ``"resize_crop"`` only), ``channels``
  ("RGB" or "BGR"), ``value_range`` ([0, 1] or [0, 255]), ``mean`` and ``std`` (in
  value-range units; None: no normalisation);
- a callable (e.g. a ``torchvision.transforms.v2`` pipeline) applied to each uint8
  ``(3, H, W)`` tensor (to the whole batch when all images share a size); it must return
  float tensors of one shape;
- ``"raw"`` (callables only): the callable receives the uint8 ``(B, H, W, 3)`` numpy batch
  as it is, at native size.

Resize policies (dict form):

- ``"resize_crop"``: shorter side to ``resize_size``, then the centre ``input_size`` crop
  (torchvision's ImageNet evaluation: 256 then 224);
- ``"resize"``: straight to ``input_size`` (aspect ratio not kept);
- ``"none"`` (gaussood's encoders, trained at one size): images of ``input_size`` go in as
  they are; images of another size are brought to it as by ``"resize_crop"`` with
  ``resize_size = input_size``, with a warning once per encoder, because such an encoder
  has only seen images of its own size. With ``input_size`` None, images go in at native
  size (one size per batch).

Resizing is bilinear with antialiasing, on uint8 tensors.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

RESIZE_POLICIES = ("none", "resize", "resize_crop")
PREPROCESSING_KEYS = ("input_size", "resize", "resize_size", "channels", "value_range", "mean",
                      "std")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_preprocessing(input_size: int = 224, resize_size: int = 256,
                           mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict:
    """torchvision's ImageNet evaluation preprocessing (shorter side 256, centre 224)."""
    return {"input_size": [int(input_size), int(input_size)], "resize": "resize_crop",
            "resize_size": int(resize_size), "channels": "RGB", "value_range": [0.0, 1.0],
            "mean": [float(m) for m in mean], "std": [float(s) for s in std]}


def torchvision_preprocessing(name: str) -> dict:
    """The evaluation preprocessing of torchvision's first pretrained weights for ``name``
    (crop and resize sizes, mean/std), read from torchvision's metadata; nothing is
    downloaded. ImageNet's 256/224 default when torchvision lists no weights."""
    try:
        from torchvision.models import get_model_weights

        weights = list(get_model_weights(name))
        kw = dict(getattr(weights[0].transforms, "keywords", {}))
    except Exception:  # noqa: BLE001 - no weights listed for this builder
        kw = {}
    crop = kw.get("crop_size", 224)
    crop = crop[0] if isinstance(crop, (list, tuple)) else crop
    resize = kw.get("resize_size", 256)
    resize = resize[0] if isinstance(resize, (list, tuple)) else resize
    return imagenet_preprocessing(crop, resize, kw.get("mean", IMAGENET_MEAN),
                                  kw.get("std", IMAGENET_STD))


def check_preprocessing(prep, *, allow_raw: bool = False):
    """Validated copy of a preprocessing (dict, callable, or "raw")."""
    if isinstance(prep, str):
        if prep == "raw" and allow_raw:
            return prep
        also = ' or "raw"' if allow_raw else ""
        raise ValueError(f"preprocessing must be a dict or a transform{also}; got {prep!r}.")
    if callable(prep):
        return prep
    if not isinstance(prep, dict):
        raise TypeError(f"preprocessing must be a dict or a transform; got {type(prep).__name__}.")
    unknown = [k for k in prep if k not in PREPROCESSING_KEYS]
    if unknown:
        raise ValueError(f"unknown preprocessing key(s) {', '.join(map(repr, unknown))}; the "
                         f"keys are {', '.join(PREPROCESSING_KEYS)}.")
    p = {"input_size": None, "resize": "none", "channels": "RGB", "value_range": [0.0, 1.0],
         "mean": None, "std": None, **prep}
    if p["input_size"] is not None:
        size = p["input_size"]
        size = [size, size] if isinstance(size, int) else list(size)
        if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
            raise ValueError(f"input_size must be [H, W] of positive ints; got {size!r}.")
        p["input_size"] = [int(s) for s in size]
    if p["resize"] not in RESIZE_POLICIES:
        raise ValueError(f"resize must be one of {RESIZE_POLICIES}; got {p['resize']!r}.")
    if p["resize"] != "none" and p["input_size"] is None:
        raise ValueError(f"resize={p['resize']!r} needs an input_size.")
    if p["resize"] == "resize_crop":
        p["resize_size"] = int(p.get("resize_size") or min(p["input_size"]))
    if p["channels"] not in ("RGB", "BGR"):
        raise ValueError(f"channels must be 'RGB' or 'BGR'; got {p['channels']!r}.")
    if list(p["value_range"]) not in ([0, 1], [0, 255]):
        raise ValueError(f"value_range must be [0, 1] or [0, 255]; got {p['value_range']!r}.")
    p["value_range"] = [float(v) for v in p["value_range"]]
    for key in ("mean", "std"):
        if p[key] is not None:
            p[key] = [float(v) for v in p[key]]
            if len(p[key]) != 3:
                raise ValueError(f"{key} must have 3 values (R, G, B); got {p[key]!r}.")
    if (p["mean"] is None) != (p["std"] is None):
        raise ValueError("give both mean and std, or neither.")
    return p


def describe(prep):
    """A JSON-able description (for an encoder's identity)."""
    if isinstance(prep, (dict, str)):
        return prep
    return {"transform": repr(prep)}


def _resize(x: torch.Tensor, p: dict) -> torch.Tensor:
    """uint8 (C, H, W) or (B, C, H, W) to ``input_size`` by the dict's policy."""
    from torchvision.transforms.v2 import functional as F

    size = p["input_size"]
    if p["resize"] == "resize":
        return F.resize(x, size, antialias=True)
    shorter = p.get("resize_size") or min(size)
    return F.center_crop(F.resize(x, shorter, antialias=True), size)


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array if array.flags.writeable else array.copy())


class Preprocessor:
    """Turns a batch of uint8 RGB images into the float tensor an encoder takes."""

    def __init__(self, prep) -> None:
        self.prep = prep
        self.warned = False

    def __call__(self, batch, device) -> torch.Tensor:
        images = [batch] if isinstance(batch, np.ndarray) else batch
        if isinstance(self.prep, dict):
            return self._dict(images, device)
        if isinstance(batch, np.ndarray):
            out = [self.prep(_tensor(batch).permute(0, 3, 1, 2))]
        else:
            out = [self.prep(_tensor(im).permute(2, 0, 1)) for im in batch]
            if len({tuple(o.shape) for o in out}) > 1:
                raise ValueError("the preprocessing transform returned tensors of different "
                                 f"shapes ({sorted({tuple(o.shape) for o in out})}): give it a "
                                 "resize and crop to one size.")
            out = [torch.stack(out)]
        x = out[0]
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError("the preprocessing transform must return float tensors (add "
                            "v2.ToDtype(torch.float32, scale=True)); got "
                            f"{getattr(x, 'dtype', type(x).__name__)}.")
        return x.to(device)

    def _dict(self, images, device) -> torch.Tensor:
        p = self.prep
        size = p["input_size"]
        tensors = [_tensor(im).to(device).permute(0, 3, 1, 2) if im.ndim == 4
                   else _tensor(im).to(device).permute(2, 0, 1)[None] for im in images]
        shapes = {tuple(t.shape[-2:]) for t in tensors}
        if size is None:
            if len(shapes) > 1:
                raise ValueError("images of different sizes need a preprocessing with an "
                                 f"input_size (got sizes {sorted(shapes)[:5]}).")
        elif shapes != {tuple(size)} or p["resize"] != "none":
            if p["resize"] == "none" and not self.warned:
                self.warned = True
                warnings.warn(f"This encoder takes {size[0]}x{size[1]} images; images of "
                              f"{', '.join(f'{h}x{w}' for h, w in sorted(shapes)[:3])} were "
                              "resized (shorter side, centre crop) to its input size.",
                              stacklevel=4)
            tensors = [t if tuple(t.shape[-2:]) == tuple(size) and p["resize"] == "none"
                       else _resize(t, p) for t in tensors]
        x = torch.cat(tensors).float()
        if p["channels"] == "BGR":
            x = x.flip(1)
        if p["value_range"][1] == 1.0:
            x = x.div_(255.0)
        if p["mean"] is not None:
            m = torch.tensor(p["mean"], device=x.device).view(1, 3, 1, 1)
            s = torch.tensor(p["std"], device=x.device).view(1, 3, 1, 1)
            x = (x - m) / s
        return x


def training_images(images, size: int, *, batch_size: int = 256, strict: bool = False
                    ) -> np.ndarray:
    """Any image input of ``open_images`` as uint8 ``(N, size, size, 3)``: images of
    another size are brought to ``size`` as an encoder with ``resize="none"`` brings them
    at embedding time (shorter side to ``size``, centre crop; bilinear, antialiased), so
    that training and embedding see the same pixels."""
    from .images import open_images

    prep = {"input_size": [int(size), int(size)], "resize": "resize_crop",
            "resize_size": int(size)}
    out = []
    for batch in open_images(images, batch_size=batch_size, strict=strict):
        for im in ([batch] if isinstance(batch, np.ndarray) else [b[None] for b in batch]):
            if im.shape[1:3] != (size, size):
                im = _resize(_tensor(im).permute(0, 3, 1, 2), prep).permute(0, 2, 3, 1).numpy()
            out.append(np.ascontiguousarray(im, dtype=np.uint8))
    if not out:
        raise ValueError("no readable images to train on.")
    return np.concatenate(out)
