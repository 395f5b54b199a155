"""Encoders for contrastive training: a backbone plus a projection head.

Backbones, by name in ``MODELS`` (name -> builder returning ``(module, feature_dim)``;
adding one is one entry here plus its test):

- ``small``: a 4-stage VGG-style convnet (7 conv layers, widths 32-256, about 1.2 M
  parameters, ~86 MFLOP per 32 px image); 256-d features.
- ``resnet8``: a narrow CIFAR ResNet (3x3 stem, one basic block per stage at widths
  24/64/128, stride 2 between stages; He et al. 2016; ~79 MFLOP); 128-d features.
- ``resnet20``: the CIFAR ResNet-20 of He et al. (three blocks per stage, widths
  16/32/64; ~82 MFLOP); 64-d features.
- ``airbench``: a narrow airbench-style net (Jordan 2024, "94% on CIFAR-10 in 3.29
  seconds"): a 2x2 stem, then three blocks conv-pool-BN-GELU-conv-BN-GELU at widths
  40/80/256 that halve the resolution early; ~89 MFLOP); 256-d features.
- ``resnet18``: the CIFAR variant of ResNet-18 used by SimCLR on CIFAR-10
  (torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool); 512-d features.

Every backbone ends in global average pooling, so it runs at any input size (the
progressive-resolution recipe trains at 16-24 px and embeds at 32 px).
``model_flops(name)`` counts the FLOPs of one forward pass (a multiply-add = 2 FLOP).

``Encoder.forward(x)`` returns ``(h, z)``: the backbone features h (unnormalised,
the layer OOD scoring usually uses) and the projection-head output z (what the
InfoNCE loss sees, also unnormalised).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def cifar_resnet18() -> tuple[nn.Module, int]:
    """torchvision ResNet-18 with the CIFAR stem; returns (backbone, feature dim)."""
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, 512


def small_convnet(width: int = 32) -> tuple[nn.Module, int]:
    """Four conv-BN-ReLU blocks (widths w, 2w, 4w, 8w), pooled to 8w features."""
    layers, c_in = [], 3
    for i, c_out in enumerate((width, 2 * width, 4 * width, 8 * width)):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(inplace=True)]
        if i < 3:
            layers += [nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), 8 * width


class _BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the (projected when the shape changes) input, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def cifar_resnet(widths: tuple[int, ...], blocks: int) -> tuple[nn.Module, int]:
    """CIFAR ResNet: 3x3 stem at ``widths[0]``, ``blocks`` basic blocks per stage."""
    layers = [nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
              nn.ReLU(inplace=True)]
    c_in = widths[0]
    for i, c_out in enumerate(widths):
        for b in range(blocks):
            layers.append(_BasicBlock(c_in, c_out, 2 if (i > 0 and b == 0) else 1))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), widths[-1]


def airbench_net(widths: tuple[int, int, int] = (40, 80, 256)) -> tuple[nn.Module, int]:
    """airbench-style: 2x2 stem (24 channels), then per width conv-pool-BN-GELU-conv-BN-GELU."""
    def conv_bn(c_in, c_out, pool):
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                *([nn.MaxPool2d(2, ceil_mode=True)] if pool else []),
                nn.BatchNorm2d(c_out), nn.GELU()]

    layers, c_in = [nn.Conv2d(3, 24, 2, bias=True), nn.GELU()], 24
    for c_out in widths:
        layers += conv_bn(c_in, c_out, True) + conv_bn(c_out, c_out, False)
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), widths[-1]


MODELS: dict[str, Callable[[], tuple[nn.Module, int]]] = {
    "small": small_convnet,
    "resnet8": lambda: cifar_resnet((24, 64, 128), blocks=1),
    "resnet20": lambda: cifar_resnet((16, 32, 64), blocks=3),
    "airbench": airbench_net,
    "resnet18": cifar_resnet18,
}


class Encoder(nn.Module):
    """Backbone + projection head (Linear-BN-ReLU-Linear, as in SimCLR).

    Parameters
    ----------
    model : str, one of ``MODELS``
    proj_dim : int, default=128
        Output dimension of the head.

    Shapes: input (B, 3, H, W) float (32 x 32 for CIFAR; any size works); ``forward``
    returns h (B, feature_dim) and z (B, proj_dim).
    """

    def __init__(self, model: str = "small", proj_dim: int = 128):
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"model must be one of {tuple(MODELS)}; got {model!r}.")
        self.model_name = model
        self.backbone, self.feature_dim = MODELS[model]()
        self.proj_dim = proj_dim
        self.head = nn.Sequential(
            nn.Linear(self.feature_dim, self.feature_dim, bias=False),
            nn.BatchNorm1d(self.feature_dim), nn.ReLU(inplace=True),
            nn.Linear(self.feature_dim, proj_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(x)
        return h, self.head(h)

    def config(self) -> dict:
        return {"model": self.model_name, "proj_dim": self.proj_dim}


def model_flops(model: str, size: int = 32) -> int:
    """FLOPs of one backbone forward pass on one ``size`` x ``size`` image (torch's counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = MODELS[model]()[0].eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    return int(counter.get_total_flops())
