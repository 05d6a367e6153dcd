"""Fovea localisers: the paper's VGG19 with fused block-4/5 features, the two plain baselines,
and (beyond the paper) a U-Net that finds the fovea together with the optic disc.

All return the fovea as (x, y) normalised to [0, 1] by the input width and height, so one
Euclidean loss and one decoding serve them all; the joint model appends the disc centre as a
second (x, y). VGG19 is torchvision's batch-normalised variant: the plain one does not train
from scratch, and its ImageNet weights exist too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet34_Weights, ResNet50_Weights, VGG19_BN_Weights, resnet34, resnet50, vgg19_bn
from torchvision.models.segmentation.deeplabv3 import ASPP

from ..anatomy import squashed_cone
from .blocks import DecoderBlock
from .pretrained import load_backbone


def soft_argmax(heat: torch.Tensor) -> torch.Tensor:
    """Expected (x, y) in [0, 1] under the softmax of a (B, 1, h, w) score map."""
    return _expected(heat.flatten(1).softmax(dim=1).view(heat.shape[0], *heat.shape[2:]))


def _cells(h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (x, y) of a (h, w) map's cell centres in [0, 1]."""
    return ((torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) / w,
            (torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) / h)


def _expected(p: torch.Tensor) -> torch.Tensor:
    """Expected (x, y) under (B, h, w) probabilities."""
    xs, ys = _cells(*p.shape[1:], p)
    return torch.stack([(p.sum(1) * xs).sum(1), (p.sum(2) * ys).sum(1)], dim=1)


CONE_MASS = 0.05  # below this share of the fovea map inside the cone, the map is read as it is


def fovea_in_cone(heat: torch.Tensor, disc: torch.Tensor) -> torch.Tensor:
    """Expected (x, y) under a (B, 1, h, w) fovea map's softmax, over its cells inside the cone
    the anatomy allows beside ``disc`` ((B, 2) in [0, 1]): on either side of it, within
    ``anatomy.squashed_cone`` below the horizontal.

    Soft-argmax reads a map with two peaks halfway between them; on a darker camera or a
    disc-centred frame the second peak is a lesion or the vessel arcade above or below the
    fovea (docs/RESULTS.md). Where the cone holds under CONE_MASS of the map, the map
    disagrees with the anatomy altogether: it is read as it is (and ``tasks.anatomical`` turns
    it)."""
    b, _, h, w = heat.shape
    p = heat.flatten(1).softmax(dim=1).view(b, h, w)
    xs, ys = _cells(h, w, p)
    dx = (xs.view(1, 1, w) - disc[:, :1, None].to(p.dtype)).abs()
    dy = ys.view(1, h, 1) - disc[:, 1:, None].to(p.dtype)
    lowest, highest = squashed_cone()
    angle = torch.rad2deg(torch.atan2(dy, dx))
    inside = p * ((angle >= lowest) & (angle <= highest))
    mass = inside.sum((1, 2), keepdim=True)
    return _expected(torch.where(mass >= CONE_MASS, inside / mass.clamp_min(1e-12), p))


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


class DiscFoveaHeatmaps(nn.Module):
    """Two heat maps at 1/4 of the input, fovea and optic disc centre, each read out by
    soft-argmax (the fovea's, once trained, inside the anatomy's cone beside the disc:
    ``fovea_in_cone``): (B, 4) = fovea (x, y), disc (x, y).

    The anatomy is what makes the fovea findable from few images: the disc is the brightest,
    most distinct structure, and the fovea lies about 2.5 disc diameters temporal to it. The
    encoder (ResNet34) and ASPP see the whole image, so learning the disc alongside teaches the
    fovea map where to look; the decoder brings the maps back to stride 4 for precision.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        e = encoder
        self.stem = nn.Sequential(e.conv1, e.bn1, e.relu, e.maxpool)  # 1/4, 64 ch
        self.layer1, self.layer2, self.layer3, self.layer4 = e.layer1, e.layer2, e.layer3, e.layer4
        self.aspp = ASPP(512, [2, 4, 6], 256)  # at 1/32 of a 256 px input the map is 8 x 8
        self.dec4 = DecoderBlock(256, 256, 128)  # 1/16, lateral layer3
        self.dec3 = DecoderBlock(128, 128, 64)  # 1/8, lateral layer2
        self.dec2 = DecoderBlock(64, 64, 64)  # 1/4, lateral layer1
        self.head = nn.Conv2d(64, 2, 1)

    def heatmaps(self, x: torch.Tensor) -> torch.Tensor:
        s2 = self.layer1(self.stem(x))
        s3 = self.layer2(s2)
        s4 = self.layer3(s3)
        d = self.dec4(self.aspp(self.layer4(s4)), s4)
        return self.head(self.dec2(self.dec3(d, s3), s2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Trained on the whole maps' soft-argmax; read (eval mode) with the fovea inside the
        anatomy's cone beside the disc found (``fovea_in_cone``)."""
        heat = self.heatmaps(x)
        disc = soft_argmax(heat[:, 1:])
        fovea = soft_argmax(heat[:, :1]) if self.training else fovea_in_cone(heat[:, :1], disc)
        return torch.cat([fovea, disc], dim=1)


def disc_fovea_heatmaps(pretrained: str | None = "imagenet") -> nn.Module:
    return DiscFoveaHeatmaps(load_backbone(resnet34(), pretrained, ResNet34_Weights.IMAGENET1K_V1))


def vgg19_fused(pretrained: str | None = "imagenet") -> nn.Module:
    return FusedVGG19(load_backbone(vgg19_bn(), pretrained, VGG19_BN_Weights.IMAGENET1K_V1).features)


def vgg19_regressor(pretrained: str | None = "imagenet") -> nn.Module:
    return GlobalRegressor(load_backbone(vgg19_bn(), pretrained, VGG19_BN_Weights.IMAGENET1K_V1).features, 512)


def resnet50_regressor(pretrained: str | None = "imagenet") -> nn.Module:
    backbone = load_backbone(resnet50(), pretrained, ResNet50_Weights.IMAGENET1K_V2)
    return GlobalRegressor(nn.Sequential(*list(backbone.children())[:-2]), 2048)
