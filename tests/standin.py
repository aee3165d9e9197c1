"""Stand-ins for the tests: a restorer (identity or a 3x3 box blur, with the Restorer's output type) for
the inference and evaluation tests, and a real photograph."""

import torch
import torch.nn.functional as F
from torch import nn

from mofme.models import RestorerOutput


class StandIn(nn.Module):
    """Identity (or a 3x3 box blur) with the Restorer's output type and a patch size."""

    patch_size = 4

    def __init__(self, *, blur: bool = False) -> None:
        super().__init__()
        self.blur = blur
        self.zero = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        y = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1) if self.blur else x
        return RestorerOutput(y + self.zero, self.zero * 0, [])


def astronaut(side: int) -> torch.Tensor:
    """(1, 3, side, side) a real photograph (scikit-image's astronaut, bundled with it) in [0, 1]."""
    from skimage.data import astronaut as photo

    image = torch.from_numpy(photo()).permute(2, 0, 1)[None].float() / 255.0
    return F.interpolate(image, size=(side, side), mode="area")
