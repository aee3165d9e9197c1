"""Weather masks of your own photos: a degradation segmenter (classes ``DEGRADATION_CLASSES``, trained on
``data.type: degradation``) run tiled on image files of any size; what ``mofme masks`` runs.

    model = load_model("runs/degradation_vit/best")
    result = weather_masks(model, ["photos/", "extra/img.jpg"], "masks/")
    result.fractions["photos/a.jpg"]        # {"clean": 0.91, "rain": 0.06, ...}: shares of the pixels

Per photo ``<name>`` (folders keep their sub-paths) it writes ``<name>_mask.png``, a paletted PNG whose
pixel values are the class indices and whose palette is ``MASK_COLOURS`` (viewers show the colours,
``np.asarray(Image.open(path))`` gives the classes), and ``<name>_overlay.png``, the photo with each
non-clean pixel blended ``OVERLAY_ALPHA`` towards its class colour (clean pixels unchanged); then one
``masks.json``: the classes, the palette, the tiling, and per photo (keyed by its path as found) the
outputs, its size and the fraction of its pixels of each class (they sum to 1).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from mofme._types import PathLike
from mofme.atomic import atomic_file, write_text_atomic
from mofme.data.builtin_tasks import DEGRADATION_CLASSES
from mofme.data.io import ImageReadError, read_image, write_image
from mofme.data.transforms import to_tensor
from mofme.infer.restore import eval_mode, plan_outputs, prepare_model
from mofme.infer.segment import segment_logits

__all__ = ["MASK_COLOURS", "OVERLAY_ALPHA", "MaskResult", "weather_masks"]

MASK_COLOURS: dict[str, tuple[int, int, int]] = {  # 8-bit RGB per class of DEGRADATION_CLASSES
    "clean": (0, 0, 0),
    "rain": (0, 114, 178),  # blue
    "snow": (255, 255, 255),  # white
    "haze": (230, 159, 0),  # orange
    "raindrop": (204, 121, 167),  # purple
}
OVERLAY_ALPHA = 0.5  # weight of the class colour in the overlay (clean pixels keep the photo)
_PALETTE = np.array([MASK_COLOURS[name] for name in DEGRADATION_CLASSES], dtype=np.uint8)  # (C, 3)


class MaskResult(NamedTuple):
    """``fractions``: per photo path (str), the share of its pixels of each class; ``failed``:
    ``(path, reason)`` of the files that could not be read; ``report``: the written ``masks.json``."""

    fractions: dict[str, dict[str, float]]
    failed: list[tuple[Path, str]]
    report: Path


def _check_segmenter(model: nn.Module) -> None:
    from mofme.models.recognition import ViTSegmenter

    classes = len(DEGRADATION_CLASSES)
    if not isinstance(model, ViTSegmenter):
        raise ValueError(
            f"weather masks need a degradation segmenter (a ViTSegmenter with {classes} classes), "
            f"got a {type(model).__name__}"
        )
    if model.config.num_classes != classes:
        raise ValueError(
            f"the segmenter predicts {model.config.num_classes} classes, not the {classes} of "
            f"{DEGRADATION_CLASSES}: weather masks need one trained on data.type: degradation"
        )


def _mask_name(destination: Path) -> Path:
    return destination.with_name(f"{destination.stem}_mask.png")


def _write_outputs(photo: np.ndarray, labels: np.ndarray, mask_path: Path) -> Path:
    """Write the paletted mask of (H, W) ``labels`` and their overlay on the (H, W, 3) ``photo``;
    returns the overlay's path."""
    mask = Image.frombytes("P", labels.shape[::-1], labels.astype(np.uint8).tobytes())
    mask.putpalette(_PALETTE.flatten().tolist())
    with atomic_file(mask_path) as tmp:
        mask.save(tmp, format="PNG")
    alpha = np.where(labels > 0, np.float32(OVERLAY_ALPHA), np.float32(0))[..., None]  # float32 throughout
    overlay = photo * (1 - alpha) + _PALETTE[labels].astype(np.float32) / 255 * alpha
    return write_image(
        mask_path.with_name(mask_path.name.removesuffix("_mask.png") + "_overlay.png"), overlay
    )


def _labels(model: nn.Module, photo: np.ndarray, **tiling: Any) -> np.ndarray:
    """(H, W) int64 argmax classes of a (H, W, 3) photo, tiled (:func:`segment_logits`)."""
    with torch.no_grad():
        return segment_logits(model, to_tensor(photo), **tiling).argmax(0).cpu().numpy()


def weather_masks(
    model: nn.Module,
    inputs: Iterable[PathLike] | PathLike,
    output_dir: PathLike,
    *,
    tile: int = 64,
    overlap: int = 16,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> MaskResult:
    """Masks, overlays and ``masks.json`` (module docstring) of the images in ``inputs`` (files and
    folders, as :func:`~mofme.infer.restore.restore_paths` finds and reads them) into ``output_dir``.

    ``model``: a :class:`~mofme.models.ViTSegmenter` with the ``DEGRADATION_CLASSES`` (ValueError
    otherwise, before anything is read). ``tile`` / ``overlap`` / ``batch_size``: its tiled inference
    (``tile`` a multiple of its patch size). A file that cannot be read is reported in ``failed`` and
    skipped; ``FileNotFoundError`` / ``ValueError`` for a missing input or clashing outputs.
    """
    from tqdm.auto import tqdm

    _check_segmenter(model)
    output_dir = Path(output_dir)
    jobs = plan_outputs(inputs, output_dir, name=_mask_name)
    run_on = prepare_model(model, device)
    tiling = {"tile": tile, "overlap": overlap, "batch_size": batch_size, "device": run_on}
    photos: dict[str, dict[str, Any]] = {}
    failed: list[tuple[Path, str]] = []
    with eval_mode(model), tqdm(jobs, desc="masks", unit="img", disable=not progress) as bar:
        for source, mask_path in bar:
            bar.set_postfix_str(source.name, refresh=False)
            try:
                photo = read_image(source)
            except ImageReadError as error:
                failed.append((source, error.reason))
                continue
            labels = _labels(model, photo, **tiling)
            overlay_path = _write_outputs(photo, labels, mask_path)
            shares = np.bincount(labels.ravel(), minlength=len(DEGRADATION_CLASSES)) / labels.size
            photos[str(source)] = {
                "mask": mask_path.relative_to(output_dir).as_posix(),
                "overlay": overlay_path.relative_to(output_dir).as_posix(),
                "height": int(labels.shape[0]),
                "width": int(labels.shape[1]),
                "fractions": dict(zip(DEGRADATION_CLASSES, shares.tolist(), strict=True)),
            }
    report = {
        "classes": list(DEGRADATION_CLASSES),
        "palette": {name: list(colour) for name, colour in MASK_COLOURS.items()},
        "tiling": {"tile": tile, "overlap": overlap},
        "photos": photos,
        "failed": {str(path): reason for path, reason in failed},
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output_dir / "masks.json", json.dumps(report, indent=2) + "\n")
    fractions = {path: entry["fractions"] for path, entry in photos.items()}
    return MaskResult(fractions, failed, output_dir / "masks.json")
