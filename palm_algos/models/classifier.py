"""Pathologic myopia classifier: ImageNet ResNet50 with a two-class head (Xie et al.)."""

from __future__ import annotations

from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from .pretrained import load_backbone


def resnet50_classifier(pretrained: str | None = "imagenet", num_classes: int = 2) -> nn.Module:
    model = load_backbone(resnet50(), pretrained, ResNet50_Weights.IMAGENET1K_V2)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model
