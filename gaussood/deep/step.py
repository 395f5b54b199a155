"""One optimiser step of a training run (views, rotations, loss, update), and its timing."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from . import distributed
from .augment import SimCLRAugment, two_views
from .rotation import draw_rotations, other_rotations, rotate


def parse_resolution(spec: str) -> list[tuple[int, float]]:
    """``"16:0.75,32"`` -> ``[(16, 0.75), (32, 1.0)]``: crop side and the fraction of
    the run at which its phase ends. The last phase has no fraction (it takes the rest)."""
    phases, end = [], 0.0
    parts = str(spec).split(",")
    try:
        for i, part in enumerate(parts):
            size, _, frac = part.partition(":")
            last = i == len(parts) - 1
            if last == bool(frac):
                raise ValueError
            end = 1.0 if last else end + float(frac)
            if int(size) < 4 or not (0 < end <= 1) or (not last and end >= 1):
                raise ValueError
            phases.append((int(size), end))
    except ValueError:
        raise ValueError(f"resolution must look like '32' or '16:0.75,32' (side:fraction, "
                         f"sides >= 4, fractions summing below 1); got {spec!r}") from None
    return phases


class _Step:
    """One optimiser step of the configured objective, views drawn from ``gen``.

    With ``config.rotation != "none"`` every image's views are turned by one rotation
    drawn from ``gen`` (see ``rotation.py``); ``rotation_head`` (a module, for
    ``"predict"``) is trained on the backbone features of the views by ``optimizer``.
    """

    def __init__(self, config, model, optimizer, scheduler, criterion, labels, device,
                 wrapped=None, rotation_head=None):

        self.config, self.model, self.optimizer, self.scheduler = config, model, optimizer, scheduler
        self.criterion, self.labels, self.device = criterion, labels, device
        self.rotation_head = rotation_head
        wrapped = model if wrapped is None else wrapped  # DDP around model, multi-process
        self.forward = torch.compile(wrapped) if config.compile else wrapped
        scale = (config.crop_min_scale, 1.0)
        self.augments = {size: SimCLRAugment(size=size, crop_scale=scale)
                         for size, _ in parse_resolution(config.resolution)}
        self.small = {size: SimCLRAugment(size=max(4, size // 2),
                                          crop_scale=(0.05, config.small_crop_scale))
                      for size in self.augments}

    def _embed(self, views, features: bool = False):
        if self.config.channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.device.type == "cuda"):
            h, z = self.forward(views)
        return (h.float(), z.float()) if features else z.float()

    def __call__(self, batch, index, size, gen) -> torch.Tensor:
        rotation = getattr(self.config, "rotation", "none")
        n = batch.shape[0]
        views = list(two_views(self.augments[size], batch, gen))
        r = None
        if rotation != "none":
            r = draw_rotations(n, gen, batch.device)
            views = [rotate(v, r) for v in views]
            m = int(round(getattr(self.config, "rotation_negatives", 0.0) * n))
            if m:  # a third view of the first m images at another rotation: negatives only
                views.append(rotate(self.augments[size](batch[:m], gen),
                                    other_rotations(r[:m], gen)))
        h, z = self._embed(torch.cat(views), features=True)
        z1, z2, extra = z[:n], z[n:2 * n], z[2 * n:]
        if self.labels is not None and self.config.objective == "supcon":
            y = self.labels[index]
            if r is not None:  # (class, rotation) pairs are the classes (CSI's SupCLR + shift)
                y = y * 4 + r
            loss = self.criterion(z1, z2, y)
        elif self.labels is not None:
            loss = self.criterion(torch.cat([z1, z2]), self.labels[index].repeat(2))
        elif self.config.small_crops:
            m = self.config.small_crops
            small = [self.small[size](batch, gen) for _ in range(m)]
            if r is not None:  # the same (image, rotation): positives of both global views
                small = [rotate(s, r) for s in small]
            pairs = [(z1, z2)] + [(zg, zs) for zs in self._embed(torch.cat(small)).chunk(m)
                                  for zg in (z1, z2)]
            kw = {"negatives": extra} if extra.shape[0] else {}
            loss = sum(self.criterion(a, b, **kw) for a, b in pairs) / len(pairs)
        else:
            loss = self.criterion(z1, z2, negatives=extra) if extra.shape[0] else \
                self.criterion(z1, z2)
        if self.rotation_head is not None:
            logits = self.rotation_head(h[:2 * n])
            loss = loss + self.config.rotation_weight * torch.nn.functional.cross_entropy(
                logits, r.repeat(2))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()


def _seconds_per_step(step: _Step, images, sizes, batch_size, device, repeats: int = 3) -> dict:
    """Median seconds of one step at each crop side, timed on a copy of the model."""
    trial = copy.copy(step)
    trial.model = copy.deepcopy(step.model)
    trial.forward = distributed.wrap_model(trial.model, device)  # DDP when multi-process
    params = list(trial.model.parameters())
    if step.rotation_head is not None:
        trial.rotation_head = copy.deepcopy(step.rotation_head)
        params += list(trial.rotation_head.parameters())
    trial.optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    trial.scheduler = torch.optim.lr_scheduler.LambdaLR(trial.optimizer, lambda s: 1.0)
    gen = torch.Generator(device=device).manual_seed(12345)
    index = torch.arange(batch_size, device=device) % images.shape[0]
    batch = images[index]
    out = {}
    for size in sizes:
        times = []
        for r in range(repeats + 1):  # the first call warms caches and is not counted
            t0 = time.perf_counter()
            trial(batch, index, size, gen)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r:
                times.append(time.perf_counter() - t0)
        out[size] = float(np.median(times))
    return out
