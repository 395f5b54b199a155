"""Encoders for contrastive training: a backbone plus a projection head.

Two backbones:
- ``resnet18``: the CIFAR variant of ResNet-18 (He et al. 2016) used by SimCLR on
  CIFAR-10: torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool;
  512-d features.
- ``small``: a 4-block convnet (about 1.2 M parameters) that trains at a usable
  speed on two CPU cores; 256-d features.

``Encoder.forward(x)`` returns ``(h, z)``: the backbone features h (unnormalised,
the layer OOD scoring usually uses) and the projection-head output z (what the
InfoNCE loss sees, also unnormalised).
"""

from __future__ import annotations

import torch
from torch import nn

MODELS = ("small", "resnet18")


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


class Encoder(nn.Module):
    """Backbone + projection head (Linear-BN-ReLU-Linear, as in SimCLR).

    Parameters
    ----------
    model : {"small", "resnet18"}
    proj_dim : int, default=128
        Output dimension of the head.

    Shapes: input (B, 3, 32, 32) float; ``forward`` returns h (B, feature_dim)
    and z (B, proj_dim).
    """

    def __init__(self, model: str = "small", proj_dim: int = 128):
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}; got {model!r}.")
        self.model_name = model
        self.backbone, self.feature_dim = cifar_resnet18() if model == "resnet18" else small_convnet()
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
