"""Optic disc segmentation: a U-shaped net on a ResNet34 encoder with ASPP and an image pyramid.

Following Xie et al.: the image enters at three scales (full, 1/2, 1/4 of the input size:
512, 256 and 128 px by default), each joining the encoder at the depth of matching
resolution; ASPP widens the context after the last stage; the decoder mirrors the encoder
with deconvolution, concatenation of the lateral (encoder) features, and two convolutions
per block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet34_Weights, resnet34
from torchvision.models.segmentation.deeplabv3 import ASPP

from .blocks import DecoderBlock, conv_bn_relu
from .pretrained import load_backbone


class PyramidASPPUNet(nn.Module):
    def __init__(self, encoder: nn.Module, num_classes: int = 2):
        super().__init__()
        e = encoder
        self.stem = nn.Sequential(e.conv1, e.bn1, e.relu)  # 1/2, 64 ch
        self.pool, self.layer1, self.layer2, self.layer3, self.layer4 = e.maxpool, e.layer1, e.layer2, e.layer3, e.layer4
        self.side_half = conv_bn_relu(3, 64)  # the 1/2-scale image joins the stem output
        self.side_quarter = conv_bn_relu(3, 64)  # the 1/4-scale image joins layer1's input
        self.aspp = ASPP(512, [6, 12, 18], 256)
        self.dec4 = DecoderBlock(256, 256, 256)  # 1/16, lateral layer3
        self.dec3 = DecoderBlock(256, 128, 128)  # 1/8, lateral layer2
        self.dec2 = DecoderBlock(128, 64, 64)  # 1/4, lateral layer1
        self.dec1 = DecoderBlock(64, 64, 32)  # 1/2, lateral stem
        self.dec0 = DecoderBlock(32, 0, 32)  # full resolution
        self.head = nn.Conv2d(32, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)
        quarter = F.interpolate(x, scale_factor=0.25, mode="bilinear", antialias=True, align_corners=False)
        return self.forward_pyramid(x, half, quarter)

    def forward_pyramid(self, full: torch.Tensor, half: torch.Tensor, quarter: torch.Tensor) -> torch.Tensor:
        s1 = self.stem(full) + self.side_half(half)  # 1/2
        s2 = self.layer1(self.pool(s1) + self.side_quarter(quarter))  # 1/4
        s3 = self.layer2(s2)  # 1/8
        s4 = self.layer3(s3)  # 1/16
        bottom = self.aspp(self.layer4(s4))  # 1/32
        d = self.dec4(bottom, s4)
        d = self.dec3(d, s3)
        d = self.dec2(d, s2)
        d = self.dec1(d, s1)
        return self.head(self.dec0(d, None))


def resnet34_aspp_unet(pretrained: str | None = "imagenet") -> nn.Module:
    return PyramidASPPUNet(load_backbone(resnet34(), pretrained, ResNet34_Weights.IMAGENET1K_V1))
