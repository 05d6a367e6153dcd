"""From case records to model inputs: the one place where images become tensors.

Training and prediction share the reduced-size decode (``read_image``'s ``min_side``) and
``square_resize``, so a model sees the same pixels in both. Training images are decoded once
and kept in memory at input size: an epoch then costs only augmentation and the network.

A model trained with ``zoom`` > 1 is used twice per image: on the whole image, then on the
input-size window of the ``zoom`` times larger image around what the first pass found (the
refining pass). It learns both views from one stored copy at ``zoom`` x input size.

What the network sees of a photograph is its ``Frame`` (``fov``): the field of view scaled to
the input, or the whole image squashed, as the checkpoint's ``geometry`` says; with
``colour`` "standardise" or "local", the FOV's colours (or its local contrast) are standardised
(``fov.standardise``, ``fov.local_contrast``) after the training's photometric augmentation,
so the model learns that the standardising undoes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm import tqdm

from .cases import Case
from .fov import Frame, crop, frame_for, show_colours
from .imageio import read_image
from .tasks import IMAGENET_MEAN, IMAGENET_STD, Task


def square_resize(rgb: np.ndarray, input_size: int) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (3, S, S) uint8 tensor; non-square images are squashed, so
    a position scales by S/W and S/H independently and maps back exactly."""
    image = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)
    return v2.functional.resize(image, [input_size, input_size], antialias=True)


def prepare_image(path, input_size: int, geometry: str = "squash") -> tuple[torch.Tensor, Frame]:
    """Read (JPEGs at reduced size), cut to the ``geometry``'s frame and resize; returns the
    (3, S, S) uint8 tensor and the frame (which holds the original (w, h))."""
    image, _, frame = model_views(read_image(path, min_side=input_size), input_size, 1, geometry)
    return image, frame


def model_views(photo: tuple[Any, tuple[int, int]], input_size: int, zoom: int, geometry: str = "squash",
                colour: str = "none") -> tuple[torch.Tensor, torch.Tensor | None, Frame]:
    """What the network sees of one decoded image ``photo`` = (RGB, original (w, h)): the
    (3, S, S) uint8 first-pass input, with ``zoom`` > 1 the (3, zoom S, zoom S) image the
    refining pass takes its window from (else None), and the frame both show."""
    rgb, size = photo
    frame = frame_for(rgb, size, geometry)
    big = square_resize(crop(rgb, frame), input_size * zoom)
    if colour != "none":
        big = colour_tensor(big, colour)
    if zoom == 1:
        return big, None, frame
    return v2.functional.resize(big, [input_size, input_size], antialias=True), big, frame


def colour_tensor(image: torch.Tensor, colour: str) -> torch.Tensor:
    """``fov.show_colours`` on a (3, H, W) uint8 tensor."""
    return torch.from_numpy(show_colours(image.permute(1, 2, 0).numpy(), colour)).permute(2, 0, 1).contiguous()


class ShowColours(v2.Transform):
    """``colour_tensor`` as a training transform (images only; masks and points pass)."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, colour: str):
        super().__init__()
        self.colour = colour

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return tv_tensors.wrap(colour_tensor(inpt.as_subclass(torch.Tensor), self.colour), like=inpt)


def normalise(image: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 or [0, 1] float (…, 3, H, W) -> normalised float."""
    if image.dtype == torch.uint8:
        image = image.float() / 255
    return v2.functional.normalize(image, list(mean), list(std))


def view_box(centre: tuple[float, float], big: int, size: int) -> tuple[int, int]:
    """(left, top) of the ``size`` window of a ``big`` square image centred on ``centre``
    ((x, y) in [0, 1] of the image), shifted to lie inside the image."""
    return tuple(min(max(round(c * big - size / 2), 0), big - size) for c in centre)


class ZoomView(v2.Transform):
    """From a stored image ``zoom`` times the input size to one input-size view: with
    probability ``p`` the window around the target (the fovea, the disc's centre), shifted by
    up to ``jitter`` x size as a first pass might miss it; otherwise the whole image, resized.
    Key points keep the pixel-index convention of ``FoveaTask.target``."""

    def __init__(self, size: int, p: float = 0.5, jitter: float = 0.25):
        super().__init__()
        self.size, self.p, self.jitter = size, p, jitter

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        big = next(x for x in flat_inputs if isinstance(x, tv_tensors.Image)).shape[-1]
        centre = _target_centre(flat_inputs, big)
        if centre is None or not torch.rand(()) < self.p:
            return {"box": None, "big": big}
        shift = (torch.rand(2) * 2 - 1) * self.jitter * self.size / big
        return {"box": view_box((centre + shift).tolist(), big, self.size), "big": big}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        box, size = params["box"], self.size
        if isinstance(inpt, tv_tensors.KeyPoints):
            points = inpt.as_subclass(torch.Tensor)
            points = (points + 0.5) * size / params["big"] - 0.5 if box is None else points - torch.tensor(box, dtype=points.dtype)
            return tv_tensors.wrap(points, like=inpt, canvas_size=(size, size))
        if box is None:
            return v2.functional.resize(inpt, [size, size], antialias=True)
        return v2.functional.crop(inpt, box[1], box[0], size, size)


def _target_centre(flat_inputs: list[Any], big: int) -> torch.Tensor | None:
    """The target's centre as (x, y) in [0, 1]: the first key point, or a mask's centroid; None
    when absent or unknown."""
    for x in flat_inputs:
        if isinstance(x, tv_tensors.KeyPoints):
            point = x.as_subclass(torch.Tensor).reshape(-1, 2)[0]
            return (point + 0.5) / big if point.isfinite().all() else None
        if isinstance(x, tv_tensors.Mask):
            rows, cols = torch.nonzero(x.as_subclass(torch.Tensor) == 1, as_tuple=True)
            return torch.stack([cols.float().mean(), rows.float().mean()]).add(0.5).div(big) if len(rows) else None
    return None


class CaseDataset(Dataset):
    """Cases of one task, decoded once, augmented on the fly when ``train`` is set (with the
    task's ``augment`` style)."""

    def __init__(self, task: Task, cases: list[Case], input_size: int, train: bool, progress: bool = True,
                 zoom: int = 1, geometry: str = "squash", colour: str = "none", augment: str = "standard"):
        self.task, self.input_size = task, input_size
        self.images, self.targets = [], []
        stored = input_size * zoom
        for case in tqdm(cases, desc=f"loading {len(cases)} images", disable=not progress, leave=False):
            image, frame = prepare_image(case.image, stored, geometry)
            self.images.append(tv_tensors.Image(image))
            self.targets.append(task.target(case, stored, frame))
        steps = task.photometric(augment) if train else []
        steps += [ShowColours(colour)] if colour != "none" else []
        if zoom > 1:  # validation sees the first pass only
            steps += [ZoomView(input_size, p=0.5 if train else 0.0)]
        steps += task.augmentation(augment) if train else [v2.ToDtype(torch.float32, scale=True)]
        self.transform = v2.Compose(steps)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.transform(self.images[index], self.targets[index])
        return normalise(image.as_subclass(torch.Tensor)), self.task.to_tensor(target)
