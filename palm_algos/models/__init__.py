"""Model builders, one per architecture name, as `--arch` selects them."""

from .classifier import resnet50_classifier
from .disc import resnet34_aspp_unet
from .fovea import disc_fovea_heatmaps, resnet50_regressor, vgg19_fused, vgg19_regressor

__all__ = ["disc_fovea_heatmaps", "resnet50_classifier", "resnet34_aspp_unet", "resnet50_regressor", "vgg19_fused", "vgg19_regressor"]
