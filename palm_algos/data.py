"""From case records to model inputs: the one place where images become tensors.

Training and prediction share ``prepare_image`` (reduced-size decode, square resize), so a
model sees the same pixels in both. Training images are decoded once and kept in memory at
input size: an epoch then costs only augmentation and the network.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm import tqdm

from .cases import Case
from .imageio import read_image
from .tasks import IMAGENET_MEAN, IMAGENET_STD, Task


def square_resize(rgb: np.ndarray, input_size: int) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (3, S, S) uint8 tensor; non-square images are squashed, so
    a position scales by S/W and S/H independently and maps back exactly."""
    image = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)
    return v2.functional.resize(image, [input_size, input_size], antialias=True)


def prepare_image(path, input_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Read (JPEGs at reduced size) and square-resize; returns the uint8 tensor and original (w, h)."""
    rgb, size = read_image(path, min_side=input_size)
    return square_resize(rgb, input_size), size


def normalise(image: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 or [0, 1] float (…, 3, H, W) -> normalised float."""
    if image.dtype == torch.uint8:
        image = image.float() / 255
    return v2.functional.normalize(image, list(mean), list(std))


class CaseDataset(Dataset):
    """Cases of one task, decoded once, augmented on the fly when ``train`` is set."""

    def __init__(self, task: Task, cases: list[Case], input_size: int, train: bool, progress: bool = True):
        self.task, self.input_size = task, input_size
        self.images, self.targets = [], []
        for case in tqdm(cases, desc=f"loading {len(cases)} images", disable=not progress, leave=False):
            image, _ = prepare_image(case.image, input_size)
            self.images.append(tv_tensors.Image(image))
            self.targets.append(task.target(case, input_size))
        steps = task.augmentation() if train else [v2.ToDtype(torch.float32, scale=True)]
        self.transform = v2.Compose(steps)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.transform(self.images[index], self.targets[index])
        return normalise(image.as_subclass(torch.Tensor)), self.task.to_tensor(target)
