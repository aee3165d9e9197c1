"""Inference: restore photos (``restore``: whole or tiled, files or tensors), seam-free tiling
(``tiling``), the CPU fast path (``fastpath``), segmentation by tiles (``segment``) and the weather
masks of a photo (``masks``).

    from mofme.infer import restore_image
    restored = restore_image(model, image)      # (3, H, W) in [0, 1], any size

Imports only the library (``nn``, ``models``, ``data``).
"""

from .restore import restore_image, restore_tensor

__all__ = ["restore_image", "restore_tensor"]
