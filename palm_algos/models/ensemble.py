"""Several networks, or one network on several views of its input, used as one network.

Both wrappers return one raw output of the kind their members return, averaged the task's
way (``Task.average``: probabilities for classes, positions for points), so the predictor,
the refining pass and the decoders need no change to use them.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Average = Callable[[torch.Tensor], torch.Tensor]


class Ensemble(nn.Module):
    """Members of one architecture (fold or seed models); saved as one checkpoint whose keys
    are ``members.<i>.<key>``."""

    def __init__(self, members: list[nn.Module], average: Average):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.average = average

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.average(torch.stack([m(x) for m in self.members]))


class FlipTTA(nn.Module):
    """Test-time augmentation: the image and its mirror image in one batch, the mirror's
    output flipped back, the two averaged."""

    def __init__(self, model: nn.Module, average: Average, flip_back: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model, self.average, self.flip_back = model, average, flip_back

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain, mirrored = self.model(torch.cat([x, x.flip(-1)])).chunk(2)
        return self.average(torch.stack([plain, self.flip_back(mirrored)]))
