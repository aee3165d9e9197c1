"""Evaluate a restoration model on (degraded, clean) pairs at full resolution, per weather type.

    report = evaluate(model, read_pair_list("data/test/test1.txt"), y_channel=True, device="cuda")
    print(report.to_markdown())
    report.save("results/test1")               # metrics.json + metrics.md

Protocol (recorded in ``report.conventions``):

* input and target are read at full resolution, never resized; a size mismatch is an error naming the
  pair. Every pair of the source is evaluated (no truncation).
* the input is restored with tiled inference (:func:`mofme.infer.restore.restore_image`: ``tile`` /
  ``overlap`` windows, ``multiple_of`` = the model's patch size; model in eval mode, no gradients; a
  :class:`~mofme.models.Restorer` on the CPU through its inference fast path, :mod:`mofme.infer.fastpath`,
  unless ``fast=False``).
* the restored output, the target and the degraded input are rounded to 8-bit levels
  (:func:`mofme.metrics.quantize`; a no-op for 8-bit files), as saving the output as a PNG would do.
* PSNR / SSIM (:mod:`mofme.metrics`: RGB, or BT.601 Y with ``y_channel``; ``crop_border``) of the restored
  image against the target, and of the degraded input itself (the baseline the gain is measured from).
* aggregation: per weather type (mean over its images), ``mean_over_weather`` = the mean of the per-type
  means (each weather counts once, whatever its number of images), and ``per_image_mean`` = the mean over
  all images. Identical images have PSNR +inf (written as ``"inf"`` in the JSON).

Sources: a list of :class:`~mofme.data.ImagePair` (or ``(input_path, target_path, weather)`` tuples), a
:class:`~mofme.data.PairedImageDataset` (its pairs are read whole, without crops), or in-memory samples:
``(input, target, weather, name)`` tuples with (3, H, W) tensors in [0, 1] (or (H, W, 3) numpy arrays), or
dataset items ``{"input", "target", "weather", "name"}`` such as :class:`~mofme.data.BuiltinWeatherDataset`'s
(weather as a name or an index in ``WEATHER_TYPES``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mofme._types import PathLike
from mofme.data.io import read_image, write_image
from mofme.data.transforms import to_tensor
from mofme.data.weather import WEATHER_TYPES
from mofme.infer.fastpath import inference_model
from mofme.infer.restore import eval_mode, model_patch_size, prepare_model, restore_tensor
from mofme.metrics import psnr, quantize, ssim

__all__ = ["CLEAN", "EvalReport", "GroupMetrics", "ImageMetrics", "evaluate"]

CLEAN = "clean"  # the weather label of weather-free photos (input = target): a do-no-harm check


@dataclass(frozen=True)
class ImageMetrics:
    """Metrics of one image: of the degraded input (``input_*``) and of the restored output, vs the target."""

    name: str
    weather: str
    height: int
    width: int
    input_psnr: float
    input_ssim: float
    psnr: float
    ssim: float
    severity: int = 0  # 1..3 for rendered weather; 0 when unknown or clean


@dataclass(frozen=True)
class GroupMetrics:
    """Mean metrics of a group of images; ``gain`` = restored PSNR - input PSNR (dB) and ``gain_se``
    its standard error (sample standard deviation of the per-image gains / sqrt(n); nan for n < 2)."""

    images: int
    input_psnr: float
    input_ssim: float
    psnr: float
    ssim: float
    gain_se: float = math.nan

    @property
    def gain(self) -> float:
        return self.psnr - self.input_psnr

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gain": self.gain}


_METRICS = ("input_psnr", "input_ssim", "psnr", "ssim")


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _standard_error(values: list[float]) -> float:
    """nan for fewer than 2 values or any infinite one (a clean photo's gain over its identical input)."""
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return math.nan
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def _group(rows: list[ImageMetrics]) -> GroupMetrics:
    means = (_mean([getattr(r, m) for r in rows]) for m in _METRICS)
    return GroupMetrics(len(rows), *means, gain_se=_standard_error([r.psnr - r.input_psnr for r in rows]))


def _weather_order(name: str) -> tuple[int, str]:
    return (WEATHER_TYPES.index(name) if name in WEATHER_TYPES else len(WEATHER_TYPES), name)


_TABLE_HEAD = (
    "| weather | images | input PSNR | input SSIM | restored PSNR | restored SSIM | gain dB (± s.e.) |",
    "|---|---:|---:|---:|---:|---:|---:|",
)


def finite_or_str(value: Any) -> Any:
    """JSON-safe: +-inf and nan become the strings "inf", "-inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite_or_str(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_str(v) for v in value]
    return value


@dataclass
class EvalReport:
    """Per-image metrics plus the conventions they were computed with; aggregates are derived.

    ``meta`` is free-form provenance (checkpoint, data set, command) that callers may fill; it is
    written to ``metrics.json`` and to the header of ``metrics.md``.
    """

    images: list[ImageMetrics]
    conventions: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def per_weather(self) -> dict[str, GroupMetrics]:
        """Mean metrics per weather type, in ``WEATHER_TYPES`` order (other labels after, sorted)."""
        grouped = self._grouped(lambda row: (row.weather, 0))
        return {weather: group for (weather, _), group in grouped.items()}

    @property
    def per_weather_severity(self) -> dict[tuple[str, int], GroupMetrics]:
        """Mean metrics per (weather type, severity), in ``WEATHER_TYPES`` then severity order."""
        return self._grouped(lambda row: (row.weather, row.severity))

    def _grouped(self, key) -> dict[tuple[str, int], GroupMetrics]:
        """Mean metrics per ``key(row)`` = (weather, severity), ordered by weather then severity."""
        groups: dict[tuple[str, int], list[ImageMetrics]] = {}
        for row in self.images:
            groups.setdefault(key(row), []).append(row)
        order = sorted(groups, key=lambda k: (*_weather_order(k[0]), k[1]))
        return {k: _group(groups[k]) for k in order}

    @property
    def mean_over_weather(self) -> GroupMetrics:
        """The mean of the per-weather means (``images``: the number of images they hold); its
        ``gain_se`` combines the per-weather standard errors, sqrt(sum se_w^2) / W. Weather-free
        photos (group :data:`CLEAN`, a do-no-harm check) are left out when there is any weather."""
        per_weather = self.per_weather
        groups = [g for w, g in per_weather.items() if w != CLEAN] or list(per_weather.values())
        means = (_mean([getattr(g, m) for g in groups]) for m in _METRICS)
        se = math.sqrt(sum(g.gain_se**2 for g in groups)) / len(groups) if groups else math.nan
        return GroupMetrics(sum(g.images for g in groups), *means, gain_se=se)

    @property
    def per_image_mean(self) -> GroupMetrics:
        """The mean over all images, whatever their weather (weather-free ones left out, as in
        :attr:`mean_over_weather`)."""
        return _group([row for row in self.images if row.weather != CLEAN] or self.images)

    def to_dict(self) -> dict[str, Any]:
        return {
            "conventions": self.conventions,
            "meta": self.meta,
            "per_weather": {w: g.to_dict() for w, g in self.per_weather.items()},
            "per_weather_severity": {
                f"{w}/s{sev}": g.to_dict() for (w, sev), g in self.per_weather_severity.items()
            },
            "mean_over_weather": self.mean_over_weather.to_dict(),
            "per_image_mean": self.per_image_mean.to_dict(),
            "images": [asdict(row) for row in self.images],
        }

    def to_json(self, *, indent: int = 2) -> str:
        """Strict JSON (infinite PSNRs written as the string ``"inf"``)."""
        return json.dumps(finite_or_str(self.to_dict()), indent=indent, allow_nan=False)

    def to_markdown(self) -> str:
        """A table ``weather | images | input PSNR | input SSIM | restored PSNR | restored SSIM | gain dB``
        with the per-type rows, the mean over weather types and the mean over images, under a line
        stating the conventions."""
        c = self.conventions
        color = "Y (BT.601)" if c.get("y_channel") else "RGB"
        tiling = c.get("tiling", {})
        lines = []
        if self.meta:
            lines += [", ".join(f"{k}: {v}" for k, v in self.meta.items()), ""]
        lines += [
            f"PSNR/SSIM on {color}, crop border {c.get('crop_border', 0)}, 8-bit quantized outputs, "
            f"full resolution (no resizing); tiled inference {tiling.get('tile')}px tiles, "
            f"{tiling.get('overlap')}px overlap.",
            "",
            *_TABLE_HEAD,
        ]

        def row(label: str, g: GroupMetrics) -> str:
            se = f" ± {g.gain_se:.2f}" if math.isfinite(g.gain_se) else ""
            return (
                f"| {label} | {g.images} | {g.input_psnr:.2f} | {g.input_ssim:.4f} | "
                f"{g.psnr:.2f} | {g.ssim:.4f} | {g.gain:+.2f}{se} |"
            )

        lines += [row(w, g) for w, g in self.per_weather.items()]
        lines.append(row("**mean over weather types**", self.mean_over_weather))
        lines.append(row("mean over images", self.per_image_mean))
        severities = self.per_weather_severity
        if len(severities) > len(self.per_weather):
            lines += ["", "Per weather type and severity:", "", *_TABLE_HEAD]
            lines += [row(f"{w} s{sev}" if sev else w, g) for (w, sev), g in severities.items()]
        return "\n".join(lines) + "\n"

    def save(self, directory: PathLike) -> tuple[Path, Path]:
        """Write ``metrics.json`` and ``metrics.md`` into ``directory`` (created); returns both paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        json_path, md_path = directory / "metrics.json", directory / "metrics.md"
        json_path.write_text(self.to_json() + "\n", encoding="utf-8")
        md_path.write_text(self.to_markdown(), encoding="utf-8")
        return json_path, md_path


# ---------------------------------------------------------------------------------------------- sources
def _as_chw(image: Any, what: str, name: str) -> Tensor:
    """(3, H, W) / (1, 3, H, W) tensor or (H, W, 3) numpy array -> float32 (3, H, W) CPU tensor."""
    if isinstance(image, np.ndarray):
        image = to_tensor(image) if image.ndim == 3 else None
    if isinstance(image, Tensor) and image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"{name}: the {what} must be a (3, H, W) image, got {shape}")
    return image.detach().to("cpu", torch.float32)


def _weather_name(weather: Any) -> str:
    if isinstance(weather, Tensor):
        weather = weather.item()
    if isinstance(weather, int | np.integer):
        return WEATHER_TYPES[int(weather)] if 0 <= int(weather) < len(WEATHER_TYPES) else "unknown"
    return str(weather)


def _samples(source: Any) -> Iterator[tuple[Tensor, Tensor, str, str, Path | None, int]]:
    """Yield ``(input, target, weather, name, target_path, severity)`` one at a time (files read lazily;
    severity 0 where the source gives none)."""
    pairs = getattr(source, "pairs", None)
    items = pairs if isinstance(pairs, list) else source
    for index, item in enumerate(items):
        if isinstance(item, dict):
            name = str(item.get("name", index))
            inp, tgt, weather = item["input"], item["target"], item.get("weather", "unknown")
        elif isinstance(item, tuple | list) and len(item) == 3 and isinstance(item[0], PathLike):
            inp_path, tgt_path, weather = Path(item[0]), Path(item[1]), item[2]
            name = str(inp_path)
            inp, tgt = read_image(inp_path), read_image(tgt_path)
            yield _as_chw(inp, "input", name), _as_chw(tgt, "target", name), str(weather), name, tgt_path, 0
            continue
        elif isinstance(item, tuple | list) and len(item) == 4:
            inp, tgt, weather, name = item
            name = str(name)
        else:
            raise TypeError(
                f"item {index}: expected an ImagePair, (input, target, weather, name) or a dataset item dict, "
                f"got {type(item).__name__}"
            )
        severity = int(item.get("severity", 0)) if isinstance(item, dict) else 0
        yield (
            _as_chw(inp, "input", name),
            _as_chw(tgt, "target", name),
            _weather_name(weather),
            name,
            None,
            severity,
        )


def _output_name(name: str, weather: str, used: set[str]) -> str:
    stem = Path(name).stem or "image"
    candidate, n = f"{weather}/{stem}.png", 1
    while candidate in used:
        candidate, n = f"{weather}/{stem}_{n}.png", n + 1
    used.add(candidate)
    return candidate


def _conventions(*, y_channel: bool, crop_border: int, tile: int, overlap: int, patch: int) -> dict:
    """The metric and inference conventions an :class:`EvalReport` states."""
    return {
        "color": "Y (BT.601, BasicSR/MATLAB rgb2ycbcr)" if y_channel else "RGB",
        "y_channel": y_channel,
        "crop_border": crop_border,
        "quantization": "restored output, target and input rounded to 8-bit levels before the metrics",
        "resize": "none: full-resolution input and target",
        "ssim": "Gaussian 11x11, sigma 1.5, valid window (BasicSR / MATLAB / scikit-image)",
        "tiling": {"tile": tile, "overlap": overlap, "multiple_of": patch, "blend": "raised cosine"},
        "aggregation": "mean_over_weather = mean of per-weather means; per_image_mean = mean over images",
    }


def _check_sizes(inp: torch.Tensor, tgt: torch.Tensor, name: str, target_path: Any) -> None:
    """Input and target (3, H, W) of pair ``name`` have one size (targets are never resized)."""
    if inp.shape != tgt.shape:
        where = f" (target '{target_path}')" if target_path is not None else ""
        raise ValueError(
            f"size mismatch in pair '{name}'{where}: input {inp.shape[1]}x{inp.shape[2]}, "
            f"target {tgt.shape[1]}x{tgt.shape[2]} (HxW); targets are never resized"
        )


def _score(
    restored: torch.Tensor,
    inp: torch.Tensor,
    tgt: torch.Tensor,
    *,
    name: str,
    weather: str,
    severity: Any,
    y_channel: bool,
    crop_border: int,
) -> ImageMetrics:
    """PSNR and SSIM of the input ``inp`` and the 8-bit ``restored`` output (1, 3, H, W) against the
    target ``tgt`` (3, H, W) of pair ``name``; inputs and targets rounded to 8-bit levels, the metrics
    computed on ``restored``'s device."""
    device = restored.device
    target = quantize(tgt.to(device))[None]
    degraded = quantize(inp.to(device))[None]
    opts = dict(y_channel=y_channel, crop_border=crop_border)
    try:
        both = torch.cat([degraded, restored])
        targets = target.expand_as(both)
        p, s = psnr(both, targets, **opts).tolist(), ssim(both, targets, **opts).tolist()
    except ValueError as error:
        raise ValueError(f"pair '{name}': {error}") from error
    return ImageMetrics(name, weather, inp.shape[1], inp.shape[2], p[0], s[0], p[1], s[1], severity)


def _score_pairs(
    runner: nn.Module,
    pairs_or_dataset: Iterable[Any],
    *,
    device: torch.device,
    tiling: dict[str, int],
    save_images: PathLike | None,
    y_channel: bool,
    crop_border: int,
) -> Iterator[ImageMetrics]:
    """Restore every pair (tiled: ``tiling``'s tile, overlap, batch_size) and yield its metrics
    (:func:`evaluate`); the 8-bit outputs are written under ``save_images`` when given."""
    used: set[str] = set()
    for inp, tgt, weather, name, tgt_path, severity in _samples(pairs_or_dataset):
        _check_sizes(inp, tgt, name, tgt_path)
        restored = quantize(restore_tensor(runner, inp, device=device, **tiling))[None]
        yield _score(
            restored,
            inp,
            tgt,
            name=name,
            weather=weather,
            severity=severity,
            y_channel=y_channel,
            crop_border=crop_border,
        )
        if save_images is not None:
            out = Path(save_images) / _output_name(name, weather, used)
            write_image(out, restored[0].permute(1, 2, 0).cpu().numpy())


def evaluate(
    model: nn.Module,
    pairs_or_dataset: Iterable[Any],
    *,
    y_channel: bool = False,
    crop_border: int = 0,
    tile: int = 256,
    overlap: int = 32,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    save_images: PathLike | None = None,
    progress: bool = True,
    fast: bool = True,
) -> EvalReport:
    """Evaluate ``model`` on every pair of ``pairs_or_dataset`` (see the module docstring for the protocol
    and the accepted sources).

    Args:
        model: ``model(x)``, x (B, 3, h, w) in [0, 1] -> :class:`~mofme.models.RestorerOutput` (or a tensor).
        y_channel, crop_border: metric conventions (:func:`mofme.metrics.psnr`).
        tile, overlap, batch_size: tiled inference; ``tile`` must be a multiple of the model's patch size.
        device: where the model runs (None: where it is; otherwise the model is moved there). The metrics
            are computed there too, in float64.
        save_images: if given, the 8-bit restored outputs are written there as ``<weather>/<stem>.png``.
        progress: show a tqdm bar over the images.
        fast: a Restorer on the CPU runs through its inference fast path (:mod:`mofme.infer.fastpath`,
            same outputs to float32 rounding); False: the plain modules.

    Raises:
        ValueError: input and target differ in size (naming the pair), or the source is empty.
        ImageReadError: a file cannot be read (naming it).
    """
    from tqdm.auto import tqdm

    run_on = prepare_model(model, device)
    patch = model_patch_size(model)
    metric_conventions = dict(y_channel=y_channel, crop_border=crop_border)
    conventions = _conventions(**metric_conventions, tile=tile, overlap=overlap, patch=patch)
    rows: list[ImageMetrics] = []
    start = time.perf_counter()
    total = len(pairs_or_dataset) if hasattr(pairs_or_dataset, "__len__") else None
    with eval_mode(model), tqdm(total=total, desc="eval", unit="img", disable=not progress) as bar:
        runner = inference_model(model, device=run_on, fast=fast)
        scored = _score_pairs(
            runner,
            pairs_or_dataset,
            device=run_on,
            tiling=dict(tile=tile, overlap=overlap, batch_size=batch_size),
            save_images=save_images,
            **metric_conventions,
        )
        for row in scored:
            rows.append(row)
            bar.update(1)
            bar.set_postfix(psnr=f"{_mean([r.psnr for r in rows]):.2f}", refresh=False)
    if not rows:
        raise ValueError("nothing to evaluate: the source holds no pairs")
    seconds = time.perf_counter() - start
    meta = {"seconds": round(seconds, 3), "device": str(run_on)}
    return EvalReport(rows, conventions, meta)
