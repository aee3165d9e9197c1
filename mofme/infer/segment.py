"""Segmentation by tiled inference: a segmenter's logits for an image of any size.

logits = segment_logits(segmenter, image, tile=64, overlap=16)   # (3, H, W) -> (C, H, W)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .restore import model_dtype, model_patch_size, prepare_model
from .tiling import tiled_apply

__all__ = ["logits_of", "segment_logits"]


def logits_of(output: Any) -> Tensor:
    """``output.logits`` (ClassifierOutput / SegmenterOutput) or a plain tensor."""
    logits = output if isinstance(output, Tensor) else getattr(output, "logits", None)
    if not isinstance(logits, Tensor):
        raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}")
    return logits.float()


def segment_logits(
    model: nn.Module,
    image: Tensor,
    *,
    tile: int = 64,
    overlap: int = 16,
    batch_size: int = 16,
    device: torch.device | None = None,
) -> Tensor:
    """Float32 logits (C, H, W) of a (3, H, W) image by tiled inference (``tile x tile`` windows
    overlapping by ``overlap``, padded to a multiple of the model's patch size, raised-cosine blending;
    :func:`~mofme.infer.tiling.tiled_apply`), on ``device`` (None: the model's). No mode switch: call
    it in eval mode under ``torch.no_grad`` (as :func:`mofme.evaluate.recognition.evaluate_segmenter` does)."""
    dtype = model_dtype(model)
    if device is None:
        device = prepare_model(model, None)

    def fn(tiles: Tensor) -> Tensor:
        return logits_of(model(tiles.to(device, dtype)))

    multiple = model_patch_size(model)
    return tiled_apply(fn, image, tile=tile, overlap=overlap, multiple_of=multiple, batch_size=batch_size)
