"""A whole-image descriptor for a restorer: the evidence that spans the image (haze density, airlight
colour, overall contrast), which a network attending in windows or run tile by tile cannot see.

    context = ImageContext()
    descriptor = context(image)   # image (N, 3, H, W) in [0, 1] -> (N, width), any H, W

The image is area-resized to at most ``size`` pixels on its long side (aspect kept), scaled to
[-1, 1], passed through ``len(widths)`` stride-2 3x3 convolutions + ReLU and averaged over the grid.
The descriptor of a whole photo is computed once and shared by every tile of a tiled restore
(``Restorer.image_context``), so tiles agree on whatever global correction it drives.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ImageContext", "WholeImageContext", "resolve_context", "zero_linear"]


class ImageContext(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, ``widths[-1]``): conv features of a <= ``size``-px thumbnail,
    mean-pooled (module docstring)."""

    def __init__(self, *, widths: tuple[int, ...] = (16, 32, 64), size: int = 128) -> None:
        super().__init__()
        if not widths or min(widths) < 1 or size < 2 ** len(widths):
            raise ValueError(f"need positive widths and size >= 2^len(widths), got {widths}, {size}")
        self.size = size
        self.width = widths[-1]
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(widths[i - 1] if i else 3, width, 3, stride=2, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers)

    def thumbnail(self, image: Tensor) -> Tensor:
        """``image`` area-resized so its long side is at most ``size`` (unchanged if already smaller)."""
        height, width = image.shape[-2:]
        scale = self.size / max(height, width)
        if scale >= 1.0:
            return image
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        return F.interpolate(image, size=size, mode="area")

    def forward(self, image: Tensor) -> Tensor:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(image.shape)}")
        return self.features(self.thumbnail(image) * 2 - 1).mean(dim=(-2, -1))


def resolve_context(
    context_module: ImageContext | None, image: Tensor, context: Tensor | None
) -> Tensor | None:
    """The descriptor (N, width) a model uses for ``image`` (N, 3, H, W): ``context`` as given (the
    whole image's, for a tile), else ``context_module(image)``; checked, in the image's dtype. None for
    a model without a context module (which refuses a ``context``)."""
    if context_module is None:
        if context is not None:
            raise ValueError("context= given to a model without global_context")
        return None
    if context is None:
        context = context_module(image)
    if context.shape != (image.shape[0], context_module.width):
        raise ValueError(
            f"context must be (N={image.shape[0]}, {context_module.width}), got {tuple(context.shape)}"
        )
    return context.to(image.dtype)


def zero_linear(in_features: int, out_features: int) -> nn.Linear:
    """A linear map that starts at zero (a new input that changes nothing until trained)."""
    linear = nn.Linear(in_features, out_features)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class WholeImageContext:
    """Mixin of a restorer with an optional ``self.context`` (:class:`ImageContext` or None): what
    tiled inference asks for (``model.image_context(image)``) before passing it to every tile."""

    context: ImageContext | None

    def image_context(self, image: Tensor) -> Tensor | None:
        """The whole-image descriptor (N, width) of ``image`` (N, 3, H, W) (``global_context``
        models; else None): what a tiled restore computes once and passes to every tile."""
        return None if self.context is None else self.context(image)
