"""Write an Allweather-style synthetic dataset from clean photos (the body of ``mofme synth``).

Layout under ``output_dir`` (or ``output_dir/<split>`` when ``split`` is given)::

    input/<weather>/<name>_s<severity>.png    degraded, 8-bit RGB
    gt/<weather>/<name>_s<severity>.png       clean, 8-bit RGB (the exact image that was degraded)
    mask/<weather>/<name>_s<severity>.png     degradation mask, 8-bit grayscale (optional)
    allweather.txt                            every `input/...` path, one per line
    <weather>.txt                             the `input/...` paths of one weather
    synth.json                                the parameters, for provenance

``read_pair_list(dir / "allweather.txt")`` reads it back. Each image is rendered with a seed derived
from (seed, name, weather, severity), so adding photos does not change the others.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .._types import PathLike
from .datasets import ImagePair, read_pair_list
from .families import FAMILIES, render_family
from .io import list_images, read_image, to_8bit_levels, write_image
from .photos import resize_long_side
from .weather import SEVERITIES, WEATHER_TYPES, derive_seed, render_weather

__all__ = ["synthesize_dataset"]

Photos = Sequence[tuple[str, np.ndarray]]


def _named_sources(src_photos: PathLike | Iterable[PathLike] | Photos) -> list[tuple[str, object]]:
    """(name, array-or-path) for every source; folder sources are named by their relative path."""
    if isinstance(src_photos, str | os.PathLike):
        src_photos = [src_photos]
    sources: list[tuple[str, object]] = []
    for item in src_photos:
        if isinstance(item, tuple) and len(item) == 2 and not isinstance(item[1], str | os.PathLike):
            sources.append((str(item[0]), item[1]))
        elif Path(item).is_dir():
            folder = Path(item)
            for path in list_images(folder):
                sources.append(("__".join(path.relative_to(folder).with_suffix("").parts), path))
        else:
            sources.extend((path.stem, path) for path in list_images(item))
    names = [name for name, _ in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"source photos share names {duplicates[:10]}; rename them or pass (name, array)")
    if not sources:
        raise ValueError("no source photos found")
    return sources


def _render_seed(seed: int, name: str, label: str, severity: int) -> int:
    """The render seed of one photo x weather (or family) x severity; weathers keep their index."""
    kind = WEATHER_TYPES.index(label) if label in WEATHER_TYPES else zlib.crc32(label.encode())
    return derive_seed(int(seed), zlib.crc32(name.encode()), kind, int(severity))


def _render(clean: np.ndarray, label: str, severity: int, seed: int):
    """A weather type through the classic renderer, or a renderer family by name."""
    if label in WEATHER_TYPES:
        return render_weather(clean, label, severity=severity, seed=seed)
    return render_family(clean, label, severity=severity, seed=seed)


def synthesize_dataset(
    src_photos: PathLike | Iterable[PathLike] | Photos,
    output_dir: PathLike,
    *,
    weathers: Sequence[str] = WEATHER_TYPES,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    split: str | None = None,
    long_side: int | None = None,
    write_masks: bool = True,
    families: Sequence[str] | None = None,
) -> list[ImagePair]:
    """Render every photo x weather x severity and write the dataset described in the module docstring.

    ``src_photos``: a folder, an image file, an iterable of those, or ``(name, float (H, W, 3) array)``
    pairs (e.g. ``builtin_photos("test")``). ``long_side`` downsizes larger photos first.
    ``families``: render these renderer families (:mod:`mofme.data.families`) instead of the
    classic renderer of ``weathers``; each family is a folder (``input/rain-noise/...``) whose
    name carries its weather. Returns the written pairs, read back and validated through
    ``read_pair_list``.
    """
    bad = [w for w in weathers if w not in WEATHER_TYPES] + [s for s in severities if s not in SEVERITIES]
    bad += [f for f in families or () if f not in FAMILIES]
    if bad or not weathers or not severities or families == []:
        raise ValueError(
            f"invalid weathers/severities/families: {bad or (tuple(weathers), tuple(severities))}"
        )
    labels = list(families) if families is not None else list(weathers)
    root = Path(output_dir) / split if split else Path(output_dir)
    lines: dict[str, list[str]] = {label: [] for label in labels}
    for name, source in _named_sources(src_photos):
        image = read_image(source) if isinstance(source, Path) else np.asarray(source, dtype=np.float32)
        if long_side is not None and max(image.shape[:2]) > long_side:  # shrink only
            image = resize_long_side(image, long_side, to_8bit=False)
        clean = to_8bit_levels(image)  # what gt/ stores
        for label in labels:
            for severity in severities:
                sample = _render(clean, label, severity, _render_seed(seed, name, label, severity))
                relative = f"{label}/{name}_s{severity}.png"
                write_image(root / "input" / relative, sample.degraded)
                write_image(root / "gt" / relative, clean)
                if write_masks:
                    write_image(root / "mask" / relative, sample.mask)
                lines[label].append(f"input/{relative}")
    for label, entries in lines.items():
        (root / f"{label}.txt").write_text("".join(f"{e}\n" for e in entries))
    (root / "allweather.txt").write_text("".join(f"{e}\n" for label in labels for e in lines[label]))
    config = {
        "renderer": "mofme.data.weather.render_weather" if families is None else "mofme.data.families",
        "weathers": list(weathers) if families is None else sorted({FAMILIES[f].weather for f in families}),
        "families": None if families is None else list(families),
        "severities": [int(s) for s in severities],
        "seed": int(seed),
        "long_side": long_side,
        "count": sum(len(v) for v in lines.values()),
    }
    (root / "synth.json").write_text(json.dumps(config, indent=2) + "\n")
    return read_pair_list(root / "allweather.txt", root)
