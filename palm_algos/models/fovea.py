"""Fovea localisers: the paper's VGG19 with fused block-4/5 features, and the two plain baselines.

All three return the fovea as (x, y) normalised to [0, 1] by the input width and height, so
one Euclidean loss and one decoding serve them all. VGG19 is torchvision's batch-normalised
variant: the plain one does not train from scratch, and its ImageNet weights exist too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet50_Weights, VGG19_BN_Weights, resnet50, vgg19_bn

from .pretrained import load_backbone


def soft_argmax(heat: torch.Tensor) -> torch.Tensor:
    """Expected (x, y) in [0, 1] under the softmax of a (B, 1, h, w) score map."""
    b, _, h, w = heat.shape
    p = heat.flatten(1).softmax(dim=1).view(b, h, w)
    xs = (torch.arange(w, device=heat.device, dtype=p.dtype) + 0.5) / w
    ys = (torch.arange(h, device=heat.device, dtype=p.dtype) + 0.5) / h
    return torch.stack([(p.sum(1) * xs).sum(1), (p.sum(2) * ys).sum(1)], dim=1)


class FusedVGG19(nn.Module):
    """Block-5 features are upsampled to block 4's resolution (1/8), concatenated with them,
    mixed by convolutions into one score map, and regressed to a position by soft-argmax."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
        self.to_block4 = features[: pools[3]]  # conv1_1 .. conv4_4 (stride 8)
        self.block5 = features[pools[3] : pools[4]]  # pool4, conv5_1 .. conv5_4 (stride 16)
        self.mix = nn.Sequential(
            nn.Conv2d(1024, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.Conv2d(256, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f4 = self.to_block4(x)
        f5 = F.interpolate(self.block5(f4), size=f4.shape[-2:], mode="bilinear", align_corners=False)
        return soft_argmax(self.mix(torch.cat([f4, f5], dim=1)))


class GlobalRegressor(nn.Module):
    """Baseline: backbone features, global average pooling, a linear layer, a sigmoid."""

    def __init__(self, features: nn.Module, channels: int):
        super().__init__()
        self.features = features
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 2), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def vgg19_fused(pretrained: str | None = "imagenet") -> nn.Module:
    return FusedVGG19(load_backbone(vgg19_bn(), pretrained, VGG19_BN_Weights.IMAGENET1K_V1).features)


def vgg19_regressor(pretrained: str | None = "imagenet") -> nn.Module:
    return GlobalRegressor(load_backbone(vgg19_bn(), pretrained, VGG19_BN_Weights.IMAGENET1K_V1).features, 512)


def resnet50_regressor(pretrained: str | None = "imagenet") -> nn.Module:
    backbone = load_backbone(resnet50(), pretrained, ResNet50_Weights.IMAGENET1K_V2)
    return GlobalRegressor(nn.Sequential(*list(backbone.children())[:-2]), 2048)
