"""Tiled inference: apply an image-to-image function to an image of any size with bounded memory.

The image is padded (bottom/right, by reflection; by replication when the image is too small to reflect)
to a multiple of ``multiple_of``, cut into ``tile x tile`` windows that overlap by at least ``overlap``
pixels (the last window along each axis is shifted back to end at the border), and the outputs are blended
with smooth separable weights::

    restored = tiled_apply(model, image, tile=256, overlap=32, multiple_of=8, batch_size=4)

Blending: along each axis a window's weight is 1 in its interior and falls off as a raised cosine,
``sin^2(pi/2 * (i + 0.5) / L)``, over each of its ``L`` pixels of overlap with a neighbour. Sides on the
image border are not ramped, and the weights are never zero.

``margin`` (default 0) makes tiling exact for a model whose outputs depend on a bounded neighbourhood
(a windowed :class:`~mofme.models.Restorer`: ``model.receptive_margin``): on every side that faces
another window, a window's outermost ``margin`` pixels (computed with padding instead of the real
neighbours) get weight exactly 0 and the ramp runs over the ``L - 2 * margin`` pixels between, so
``overlap >= 2 * margin + 1``. Every blended pixel then comes from windows whose edges are more than
``margin`` pixels away. For the windows to see what the whole image sees, the model's own grid (e.g.
its attention windows) must also line up: with ``margin``, ``overlap`` must be a multiple of
``multiple_of``, so that every window starts on a multiple of it (the last one, shifted back to end at
the padded border, does too, since ``tile`` is a multiple). The 1-D weights are divided by their sum
over the windows, so the 2-D weights (outer products) sum to one at every pixel; where only one window
covers a pixel its weight is exactly 1 and the output there is exactly that window's output. Because the
weights are normalised in advance, no per-pixel weight map is accumulated: memory is the padded input,
one ``(1, C', H, W)`` accumulator and ``batch_size`` tiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from mofme.models.restorer import pad_bottom_right

__all__ = ["axis_weights", "axis_windows", "blend_weights", "tile_windows", "tiled_apply"]

Window = tuple[slice, slice]


def _check_tile_overlap(tile: int, overlap: int) -> None:
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must satisfy 0 <= overlap < tile, got overlap={overlap}, tile={tile}")


def axis_windows(size: int, *, tile: int, overlap: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the windows along one axis of length ``size``.

    Windows are ``tile`` long with stride ``tile - overlap``; the last one is shifted back to end at ``size``
    (so its overlap with the previous one may be larger). A ``size <= tile`` gives the single window
    ``(0, size)``.
    """
    _check_tile_overlap(tile, overlap)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if size <= tile:
        return [(0, size)]
    starts = [*range(0, size - tile, tile - overlap), size - tile]
    return [(s, s + tile) for s in starts]


def tile_windows(height: int, width: int, *, tile: int, overlap: int) -> list[Window]:
    """The ``(rows, cols)`` slices of every window of a ``height x width`` image, row-major.

    All windows have the same size, ``min(tile, height) x min(tile, width)``. :func:`tiled_apply` calls this
    on the image padded to a multiple of ``multiple_of``.
    """
    rows = axis_windows(height, tile=tile, overlap=overlap)
    cols = axis_windows(width, tile=tile, overlap=overlap)
    return [(slice(*r), slice(*c)) for r in rows for c in cols]


def _ramp(length: int, dtype: torch.dtype, device: torch.device | None) -> Tensor:
    """Raised-cosine ramp rising from near 0 to near 1 over ``length`` pixels, strictly inside (0, 1)."""
    t = (torch.arange(length, dtype=torch.float64, device=device) + 0.5) / length
    return torch.sin(0.5 * math.pi * t).square().to(dtype)


def _check_margin(overlap: int, margin: int) -> None:
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if margin and overlap < 2 * margin + 1:
        raise ValueError(
            f"overlap={overlap} is too small for margin={margin}: the ramp between the two zeroed margins "
            f"needs overlap >= 2 * margin + 1 = {2 * margin + 1}"
        )


def _edge_weights(length: int, left: int, right: int, margin: int, device: torch.device | None) -> Tensor:
    """One window's raw 1-D weights (float64, ``length``): 0 over ``margin`` pixels at a side that
    overlaps a neighbour by ``left`` / ``right`` pixels (0: no neighbour), a ramp over the rest of the
    overlap, 1 inside."""
    w = torch.ones(length, dtype=torch.float64, device=device)
    if left > 0:  # zero, then ramp up over the overlap with the previous window
        w[:margin] = 0
        w[margin : left - margin] *= _ramp(left - 2 * margin, torch.float64, device)
    if right > 0:  # ramp down over the overlap with the next window, then zero
        w[length - right + margin : length - margin] *= _ramp(right - 2 * margin, torch.float64, device).flip(
            0
        )
        w[length - margin :] = 0
    return w


def axis_weights(
    size: int,
    *,
    tile: int,
    overlap: int,
    margin: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | None = None,
) -> list[Tensor]:
    """Normalised 1-D blending weights, one per window of :func:`axis_windows` (same order and lengths).

    At every position the weights of the windows covering it sum to one (computed in float64); a
    window's outermost ``margin`` positions on a side facing another window weigh exactly 0
    (``overlap >= 2 * margin + 1``).
    """
    _check_margin(overlap, margin)
    windows = axis_windows(size, tile=tile, overlap=overlap)
    raw = []
    for k, (start, stop) in enumerate(windows):
        left = windows[k - 1][1] - start if k > 0 else 0
        right = stop - windows[k + 1][0] if k < len(windows) - 1 else 0
        raw.append(_edge_weights(stop - start, left, right, margin, device))
    total = torch.zeros(size, dtype=torch.float64, device=device)
    for (start, stop), w in zip(windows, raw, strict=True):
        total[start:stop] += w
    return [(w / total[start:stop]).to(dtype) for (start, stop), w in zip(windows, raw, strict=True)]


def blend_weights(
    height: int,
    width: int,
    *,
    tile: int,
    overlap: int,
    margin: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> Iterator[tuple[Window, Tensor]]:
    """Yield ``(window, weight)`` for every window of :func:`tile_windows`, ``weight`` of shape ``(h, w)``.

    The weights are separable (outer products of :func:`axis_weights`, ``margin`` as there) and sum to
    one at every pixel of the ``height x width`` image. They are generated lazily, one window at a time.
    """
    row_windows = axis_windows(height, tile=tile, overlap=overlap)
    col_windows = axis_windows(width, tile=tile, overlap=overlap)
    row_weights = axis_weights(height, tile=tile, overlap=overlap, margin=margin, device=device)
    col_weights = axis_weights(width, tile=tile, overlap=overlap, margin=margin, device=device)
    for rows, wy in zip(row_windows, row_weights, strict=True):
        for cols, wx in zip(col_windows, col_weights, strict=True):
            yield (slice(*rows), slice(*cols)), (wy[:, None] * wx[None, :]).to(dtype)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _apply(fn: Callable[[Tensor], Tensor], tiles: Tensor) -> Tensor:
    out = fn(tiles)
    if not isinstance(out, Tensor) or out.ndim != 4 or out.shape[0] != tiles.shape[0]:
        raise ValueError(f"fn must map (B, C, h, w) to (B, C', h, w); got {getattr(out, 'shape', type(out))}")
    if out.shape[-2:] != tiles.shape[-2:]:
        raise ValueError(
            f"fn must keep the spatial size: input tiles {tuple(tiles.shape)}, output {tuple(out.shape)}"
        )
    return out


def _check_tiling(*, tile: int, overlap: int, margin: int, multiple_of: int, batch_size: int) -> None:
    """:func:`tiled_apply`'s settings, each named in the error."""
    if multiple_of < 1:
        raise ValueError(f"multiple_of must be >= 1, got {multiple_of}")
    _check_tile_overlap(tile, overlap)
    if tile % multiple_of:
        raise ValueError(f"tile={tile} must be a multiple of multiple_of={multiple_of}")
    _check_margin(overlap, margin)
    if margin and overlap % multiple_of:
        raise ValueError(
            f"with a margin, overlap={overlap} must be a multiple of multiple_of={multiple_of} "
            "(every tile then starts on the model's grid)"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def tiled_apply(
    fn: Callable[[Tensor], Tensor],
    image: Tensor,
    *,
    tile: int = 256,
    overlap: int = 32,
    margin: int = 0,
    multiple_of: int = 8,
    batch_size: int = 1,
    progress: bool | Callable[[int, int], None] = False,
) -> Tensor:
    """Apply ``fn`` to ``image`` tile by tile and blend the tiles (see the module docstring).

    Args:
        fn: maps ``(B, C, h, w)`` to ``(B, C', h, w)``. It receives tiles on ``image``'s device and dtype, with
            ``h`` and ``w`` multiples of ``multiple_of``; it may move them (e.g. to a GPU) itself.
        image: ``(C, H, W)`` or ``(1, C, H, W)``, any ``H, W >= 1``.
        tile: window side, a multiple of ``multiple_of``.
        overlap: minimum overlap between neighbouring windows, ``0 <= overlap < tile``.
        margin: pixels along a window side facing another window that get weight 0 (module docstring):
            the model's reach from a tile edge, e.g. ``model.receptive_margin``. With a margin,
            ``overlap >= 2 * margin + 1`` and ``overlap`` must be a multiple of ``multiple_of``.
        multiple_of: the image is padded (bottom/right, reflect or replicate) to a multiple of this.
        batch_size: number of tiles passed to ``fn`` per call.
        progress: ``True`` shows a tqdm bar; a callable is called as ``progress(done, total)`` after each batch.

    Returns:
        ``(C', H, W)`` or ``(1, C', H, W)`` (matching ``image``), on ``fn``'s output device and dtype.
        Accumulation is in that dtype, or float32 for lower-precision outputs. If the padded image fits in
        one tile the result is exactly ``fn(padded)[..., :H, :W]``. Runs under :func:`torch.no_grad`.
    """
    _check_tiling(tile=tile, overlap=overlap, margin=margin, multiple_of=multiple_of, batch_size=batch_size)
    squeeze = image.ndim == 3
    if squeeze:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be (C, H, W) or (1, C, H, W), got shape {tuple(image.shape)}")

    height, width = image.shape[-2:]
    padded_h, padded_w = _round_up(height, multiple_of), _round_up(width, multiple_of)
    windows = tile_windows(padded_h, padded_w, tile=tile, overlap=overlap)
    report = _progress_reporter(progress, len(windows))
    with torch.no_grad():
        padded = pad_bottom_right(image, padded_h - image.shape[-2], padded_w - image.shape[-1])
        if len(windows) == 1:
            result = _apply(fn, padded)[..., :height, :width]
            report(1)
            return result[0] if squeeze else result

        blend = dict(tile=tile, overlap=overlap, margin=margin, batch_size=batch_size)
        result = _blend_windows(fn, padded, windows, report=report, **blend)[..., :height, :width]
        result = result.contiguous()  # no copy when unpadded
    return result[0] if squeeze else result


def _blend_windows(
    fn: Callable[[Tensor], Tensor],
    padded: Tensor,
    windows: list[Window],
    *,
    tile: int,
    overlap: int,
    margin: int,
    batch_size: int,
    report: Callable[[int], None],
) -> Tensor:
    """``fn`` over ``windows`` of ``padded`` (1, C, H, W), ``batch_size`` at a time, each output added with
    its :func:`blend_weights` weight -> (1, C', H, W) in ``fn``'s output dtype. Accumulates in that
    dtype, or float32 for lower-precision outputs."""
    acc: Tensor | None = None
    for first in range(0, len(windows), batch_size):
        batch = windows[first : first + batch_size]
        out = _apply(fn, torch.cat([padded[..., rows, cols] for rows, cols in batch]))
        if acc is None:  # allocate where (and in what precision) fn's outputs live
            out_dtype = out.dtype
            acc_dtype = out_dtype if out_dtype in (torch.float32, torch.float64) else torch.float32
            acc = torch.zeros(1, out.shape[1], *padded.shape[-2:], dtype=acc_dtype, device=out.device)
            weights = blend_weights(
                *padded.shape[-2:],
                tile=tile,
                overlap=overlap,
                margin=margin,
                dtype=acc_dtype,
                device=out.device,
            )
        for window, tile_out in zip(batch, out, strict=True):
            (rows, cols), weight = next(weights)
            assert (rows, cols) == window  # blend_weights follows the order of tile_windows
            acc[0, :, rows, cols].addcmul_(tile_out.to(acc_dtype), weight)
        report(first + len(batch))
    assert acc is not None
    return acc.to(out_dtype)  # no copy when already out_dtype


def _progress_reporter(progress: bool | Callable[[int, int], None], total: int) -> Callable[[int], None]:
    """Turn the ``progress`` option into a ``report(done)`` callable."""
    if callable(progress):
        return lambda done: progress(done, total)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="tiles", unit="tile")

        def report(done: int) -> None:
            bar.update(done - bar.n)
            if done >= total:
                bar.close()

        return report
    return lambda done: None
