"""Restore images of any size with a trained model: one tensor (:func:`restore_image`) or files and folders
(:func:`restore_paths`, what ``mofme restore`` runs).

    model = Restorer.from_pretrained("checkpoints/mofme-small")
    result = restore_paths(model, ["photos/", "extra/img.jpg"], "restored/", device="cuda")
    result.written, result.failed            # [Path], [(Path, reason)]

Inference is tiled (:func:`mofme.infer.tiling.tiled_apply`): ``tile x tile`` windows overlapping by
``overlap`` pixels, ``batch_size`` windows per forward pass, blended with raised-cosine weights, so memory is
bounded by the tile size and a 4000x3000 photo restores on a CPU with a few GB. The model runs in eval
mode under ``torch.no_grad`` (its previous train/eval state is restored afterwards); the window side must
be a multiple of the model's patch size (``model.patch_size`` or ``model.config.patch_size``).

A model with a bounded reach (``model.receptive_margin``, e.g. a windowed Restorer) is tiled exactly:
:func:`model_tiling` picks tiles on its window grid with zero-weight margins, so the result equals the
whole-image restoration to float rounding (no seams), and runs images up to :data:`WHOLE_IMAGE_PIXELS`
whole (windowed attention costs memory linear in the image). Global-attention models keep the requested
``tile`` and ``overlap`` (their tiles each see only their own context: seams are possible). On the CPU
a :class:`~mofme.models.Restorer` runs through its inference fast path (:mod:`mofme.infer.fastpath`: a
oneDNN, channels-last copy, same outputs to float32 rounding) unless ``fast=False``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from mofme._types import PathLike
from mofme.data.io import ImageReadError, list_images, read_image, write_image
from mofme.data.transforms import to_tensor
from mofme.infer.fastpath import inference_model
from mofme.infer.tiling import tiled_apply
from mofme.models.restorer import fill_drops, fill_probability

__all__ = [
    "WHOLE_IMAGE_PIXELS",
    "RestoreResult",
    "Tiling",
    "eval_mode",
    "model_device",
    "model_dtype",
    "model_patch_size",
    "model_tiling",
    "plan_outputs",
    "prepare_model",
    "restore_image",
    "restore_paths",
    "restore_tensor",
]

logger = logging.getLogger(__name__)

_WRITABLE = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # what write_image can encode
_SIXTEEN_BIT = (".png", ".tif", ".tiff")  # formats written at 16 bits when the input was 16-bit
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# a model with a receptive margin restores images up to this many (padded) pixels in one piece: about
# 4 GB of activations for the small window preset on a 2048 x 2048 image (its tail runs at 64 channels)
WHOLE_IMAGE_PIXELS = 2048 * 2048


class RestoreResult(NamedTuple):
    """``written``: output paths in input order; ``failed``: ``(input path, reason)`` of skipped files."""

    written: list[Path]
    failed: list[tuple[Path, str]]


# ---------------------------------------------------------------------------------------------- one image
def model_patch_size(model: nn.Module) -> int:
    """The spatial multiple the model needs: ``model.size_multiple``, else ``model.patch_size``, else
    ``model.config.patch_size``, else 1."""
    size = getattr(model, "size_multiple", None) or getattr(model, "patch_size", None)
    if size is None:
        size = getattr(getattr(model, "config", None), "patch_size", None)
    return int(size) if size else 1


class Tiling(NamedTuple):
    """The keyword arguments of :func:`~mofme.infer.tiling.tiled_apply` for one model and image size."""

    tile: int
    overlap: int
    margin: int
    multiple_of: int


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def model_tiling(
    model: nn.Module,
    height: int,
    width: int,
    *,
    tile: int,
    overlap: int,
    whole_pixels: int = WHOLE_IMAGE_PIXELS,
) -> Tiling:
    """How an H x W image is tiled for ``model`` (what :func:`restore_tensor` and the server's tile count
    use). Without a ``model.receptive_margin`` (global attention): ``tile`` and ``overlap`` as asked,
    margin 0. With one, the tiling is exact: the whole image in one piece up to ``whole_pixels``
    (padded; default :data:`WHOLE_IMAGE_PIXELS`); else margin = the receptive margin, overlap =
    ``max(overlap, 2 * margin + multiple)`` and tile = ``max(tile, 4 * overlap)`` (at most ~45% of
    the work repeated), both rounded up to the model's :attr:`size_multiple` so that every tile
    starts on its window grid."""
    multiple = model_patch_size(model)
    margin = getattr(model, "receptive_margin", None)
    if margin is None:
        return Tiling(tile, overlap, 0, multiple)
    padded_h, padded_w = _round_up(height, multiple), _round_up(width, multiple)
    if padded_h * padded_w <= whole_pixels:
        return Tiling(max(padded_h, padded_w), 0, 0, multiple)
    overlap = _round_up(max(overlap, 2 * margin + multiple), multiple)
    return Tiling(max(_round_up(tile, multiple), 4 * overlap), overlap, margin, multiple)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model without any."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every sub-module in eval mode, and give each its own previous mode back on exit."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def prepare_model(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """Resolve ``device`` (None: where the model is) and move the model there."""
    if device is None:
        return model_device(model)
    device = torch.device(device)
    model.to(device)
    return device


def _image_of(output) -> Tensor:
    """The image of a model output: ``RestorerOutput.image``, a plain tensor, or a tuple's first item."""
    if isinstance(output, Tensor):
        return output
    image = getattr(output, "image", None)
    if isinstance(image, Tensor):
        return image
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(f"cannot find the restored image in a model output of type {type(output).__name__}")


def _fills_drops(model: nn.Module) -> bool:
    """Whether ``model`` fills lens drops after its tiles are stitched (a windowed ``drop_fill``
    Restorer: its fill reaches across the image, everything before it is local)."""
    return (
        getattr(model, "drop_head", None) is not None and getattr(model, "receptive_margin", None) is not None
    )


def _calibrates(model: nn.Module) -> bool:
    """Whether ``model`` scales its stitched correction by one whole-image strength
    (:class:`~mofme.models.CalibratedRestorer`: tiles run with ``calibrate=False``)."""
    return callable(getattr(model, "calibrate", None))


def _whole_image_context(model: nn.Module, image: Tensor, device: torch.device, dtype: torch.dtype):
    """The descriptor (1, width) of the whole (3, H, W) ``image`` for a model with a global context
    (``Restorer.image_context``), which every tile then shares; else None."""
    image_context = getattr(model, "image_context", None)
    if image_context is None:
        return None
    with torch.no_grad():
        return image_context(image[None].to(device=device, dtype=dtype))


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 for a model without any)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _model_fn(model: nn.Module, device: torch.device, image: Tensor):
    """``(B, 3, h, w)`` tiles of (3, H, W) ``image`` on any device -> restored float32 tiles on
    ``device``; for a model that fills drops after stitching, (B, 4, h, w): the unfilled image and
    how strongly to fill each pixel (:func:`~mofme.models.restorer.fill_probability`). A model with a
    global context gets the whole image's with every tile."""
    dtype = model_dtype(model)
    unfilled, calibrated = _fills_drops(model), _calibrates(model)
    context = _whole_image_context(model, image, device, dtype)

    def fn(tiles: Tensor) -> Tensor:  # contiguous: a fast-path model's images are channels-last
        tiles = tiles.to(device=device, dtype=dtype)
        options = {} if context is None else {"context": context.expand(len(tiles), -1)}
        if calibrated:
            options["calibrate"] = False
        if unfilled:
            out = model(tiles, fill=False, **options)
            return torch.cat([out.image, fill_probability(out)], dim=1).float().contiguous()
        return _image_of(model(tiles, **options)).float().contiguous()

    return fn


def restore_tensor(
    model: nn.Module,
    image: Tensor,
    *,
    device: torch.device,
    tile: int,
    overlap: int,
    batch_size: int,
    whole_pixels: int = WHOLE_IMAGE_PIXELS,
) -> Tensor:
    """The tiled restoration of a (3, H, W) image, already in eval mode; float32 (3, H, W) on ``device``.
    ``tile`` and ``overlap`` as asked, or the exact tiling of a model with a receptive margin
    (:func:`model_tiling`). A :class:`~mofme.models.CalibratedRestorer` runs its base tile by tile and
    scales the stitched correction once (``model.calibrate``)."""
    plan = model_tiling(model, *image.shape[-2:], tile=tile, overlap=overlap, whole_pixels=whole_pixels)
    restored = tiled_apply(_model_fn(model, device, image), image, **plan._asdict(), batch_size=batch_size)
    if _fills_drops(model):  # the fill once, over the stitched image: seamless at any size
        restored = fill_drops(restored[None, :3], restored[None, 3:])[0]
    if _calibrates(model):  # one strength for the whole image, from the stitched proposal
        with torch.no_grad():
            restored = model.calibrate(image[None].to(device=device, dtype=restored.dtype), restored[None])[0]
    return restored


def restore_image(
    model: nn.Module,
    image: Tensor,
    *,
    tile: int = 256,
    overlap: int = 32,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    fast: bool = True,
    whole_pixels: int = WHOLE_IMAGE_PIXELS,
) -> Tensor:
    """Restore one image with bounded memory.

    Args:
        model: ``model(x)`` with ``x`` (B, 3, h, w) in [0, 1] returns a :class:`~mofme.models.RestorerOutput`
            (or a tensor) whose image has the same shape.
        image: (3, H, W) float in [0, 1], any H, W >= 1, on any device (tiles are moved one batch at a time).
        tile, overlap, batch_size: see :func:`~mofme.infer.tiling.tiled_apply`; ``tile`` must be a
            multiple of the model's patch size. A model with a receptive margin (windowed attention) is
            tiled exactly instead, ``tile`` and ``overlap`` being minimums (:func:`model_tiling`), or
            run whole up to ``whole_pixels`` (0: always tiled).
        device: where the model runs; None keeps the model where it is, otherwise the model is moved there.
        fast: run a Restorer on the CPU through its inference fast path
            (:func:`~mofme.infer.fastpath.inference_model`); False: the plain modules.

    Returns:
        float32 (3, H, W) on the CPU, not clamped or quantized (a Restorer's output lies in (0, 1)).
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
    run_on = prepare_model(model, device)
    with eval_mode(model):
        runner = inference_model(model, device=run_on, fast=fast)
        options = {"tile": tile, "overlap": overlap, "batch_size": batch_size, "whole_pixels": whole_pixels}
        out = restore_tensor(runner, image, device=run_on, **options)
    return out.cpu()


# ---------------------------------------------------------------------------------------------- files
def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def _output_path(destination: Path) -> Path:
    """Same name; an extension ``write_image`` cannot encode (e.g. .gif) becomes .png."""
    return destination if destination.suffix.lower() in _WRITABLE else destination.with_suffix(".png")


def plan_outputs(
    inputs: Iterable[PathLike] | PathLike, output_dir: Path, *, name: Callable[[Path], Path] = _output_path
) -> list[tuple[Path, Path]]:
    """``(input, output)`` for every image; folders keep their relative sub-paths under ``output_dir``,
    the output being ``name(output_dir / relative path)`` (default: the same name, .png if unwritable).

    Raises ``FileNotFoundError`` for a missing input and ``ValueError`` when an output would overwrite an
    input or two inputs would be written to the same output.
    """
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    out_root = output_dir.resolve()
    jobs: list[tuple[Path, Path]] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            root = item.resolve()
            for source in list_images(item):
                if out_root != root and _is_within(source.resolve(), out_root):
                    continue  # earlier results in an output folder nested inside the input folder
                jobs.append((source, name(output_dir / source.relative_to(item))))
        elif item.is_file():
            jobs.append((item, name(output_dir / item.name)))
        else:
            raise FileNotFoundError(f"no such file or folder: '{item}'")

    sources = {source.resolve(): source for source, _ in jobs}
    for _, destination in jobs:
        if destination.resolve() in sources:
            raise ValueError(
                f"output folder '{output_dir}' would overwrite the input "
                f"'{sources[destination.resolve()]}'; choose another output folder"
            )
    seen: dict[Path, Path] = {}
    clashes = []
    for source, destination in jobs:
        key = destination.resolve()
        if key in seen:
            clashes.append(f"'{seen[key]}' and '{source}' -> '{destination}'")
        seen[key] = source
    if clashes:
        raise ValueError(f"several inputs map to the same output: {'; '.join(clashes[:5])}")
    return jobs


def _is_16_bit(path: Path) -> bool:
    """Whether an image file stores more than 8 bits per sample (16-bit PNG / TIFF, 32-bit TIFF)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(32)
        if header[:8] == _PNG_SIGNATURE and header[12:16] == b"IHDR":
            return header[24] == 16
        if header[:4] in (b"II*\x00", b"MM\x00*"):
            with contextlib.suppress(ImportError):
                import tifffile

                with tifffile.TiffFile(path) as tif:
                    return int(tif.pages[0].bitspersample) > 8
        from PIL import Image

        with Image.open(path) as image:
            return image.mode.startswith("I;16") or image.mode in ("I", "F")
    except Exception:  # unreadable header: the read itself reports the problem
        return False


def restore_paths(
    model: nn.Module,
    inputs: Iterable[PathLike] | PathLike,
    output_dir: PathLike,
    *,
    tile: int = 256,
    overlap: int = 32,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    progress: bool = True,
    fast: bool = True,
) -> RestoreResult:
    """Restore image files and folders into ``output_dir``.

    * ``inputs``: files and folders; folders are expanded recursively with
      :func:`~mofme.data.io.list_images` (image extensions only, hidden files skipped) and the outputs keep
      the relative sub-paths; files given directly are written as ``output_dir / name``.
    * Every image is read with :func:`~mofme.data.io.read_image` (PNG / JPEG / BMP / TIFF / WebP,
      grayscale and 16-bit, alpha composited on white, EXIF orientation applied), restored at full
      resolution with tiled inference (see the module docstring) and written RGB at its (upright) input
      size, with the same file name and extension (an extension that cannot be written becomes .png).
      16-bit PNG / TIFF inputs are written 16-bit, everything else 8-bit (JPEG at quality 95).
    * A file that cannot be read (or written) is logged as a warning, reported in ``failed`` with the
      reason, and skipped; the others are still written.
    * Raises ``FileNotFoundError`` for an input that does not exist, and ``ValueError`` before anything is
      written when an output would overwrite an input (e.g. ``output_dir`` is the input folder) or two
      inputs map to the same output. Results already in an output folder nested inside an input folder are
      not restored again.
    * ``fast``: a Restorer on the CPU runs through its inference fast path (:mod:`mofme.infer.fastpath`);
      False runs the plain modules (``mofme restore --no-fast``).
    """
    output_dir = Path(output_dir)
    jobs = plan_outputs(inputs, output_dir)
    if not jobs:
        logger.warning("no images found in %s", inputs)
    run_on = prepare_model(model, device)
    written: list[Path] = []
    failed: list[tuple[Path, str]] = []
    from tqdm.auto import tqdm

    with eval_mode(model), tqdm(jobs, desc="restore", unit="img", disable=not progress) as bar:
        runner = inference_model(model, device=run_on, fast=fast)
        for source, destination in bar:
            bar.set_postfix_str(source.name, refresh=False)
            reason = _restore_file(
                runner, source, destination, device=run_on, tile=tile, overlap=overlap, batch_size=batch_size
            )
            if reason is None:
                written.append(destination)
            else:
                failed.append((source, reason))
    return RestoreResult(written, failed)


def _restore_file(
    runner: nn.Module,
    source: Path,
    destination: Path,
    *,
    device: torch.device,
    tile: int,
    overlap: int,
    batch_size: int,
) -> str | None:
    """Restore one file into ``destination`` (:func:`restore_paths`); None when written, else the reason
    it was skipped (logged as a warning)."""
    try:
        image = read_image(source)
    except ImageReadError as error:
        logger.warning("skipping %s", error)
        return error.reason
    tensor = to_tensor(image)
    del image
    restored = restore_tensor(
        runner, tensor, device=device, tile=tile, overlap=overlap, batch_size=batch_size
    )
    array = restored.cpu().permute(1, 2, 0).numpy()
    del restored, tensor
    bits = 16 if destination.suffix.lower() in _SIXTEEN_BIT and _is_16_bit(source) else 8
    try:
        write_image(destination, array, bit_depth=bits)
    except (OSError, ValueError) as error:
        reason = f"cannot write '{destination}': {error}"
        logger.warning("skipping %s: %s", source, reason)
        return reason
    return None
