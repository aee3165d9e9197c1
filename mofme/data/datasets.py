"""Readers for the paired (degraded, clean) formats of the field, validated before anything trains.

Every reader returns ``list[ImagePair]`` and checks, up front, that every file exists (optionally that
Pillow can open each header and that input and target sizes agree); problems raise ``DatasetError``
listing the offending pairs by name (the first 20, then a count).

Formats
-------
* **Allweather / TransWeather list** (``read_pair_list``): a text file, one ``input/...`` path per line,
  relative to ``root`` (default: the list file's folder); the target is the same path with its last
  ``input`` folder component replaced by ``gt``. Two-column lines ``<input> <gt>`` are accepted too (use a
  tab between the columns if paths contain spaces). Blank lines and ``#`` comments are skipped.
* **Paired folders** (``paired_folder``): ``root/input/**`` and ``root/gt/**`` with the same relative
  file names (a target with the same stem but another image extension is accepted).
* **Named test sets**, as TransWeather distributes them (``outdoor_rain_test1``, ``raindrop_test_a``,
  ``snow100k_l``). Each looks in ``root`` for, in order:

  1. the list file (``test1.txt``, ``raindroptesta.txt``, ``snowtest100k_L.txt``) whose lines are
     relative to ``root`` (e.g. ``test1/input/im_0001_s80_a04.png``);
  2. ``root/<subset>/input`` + ``root/<subset>/gt`` folders (subset = ``test1`` | ``Test1``; ``test_a`` |
     ``raindrop/test_a``; ``Snow100K-L`` | ``snow100k_L``), and ``root/input`` + ``root/gt``;
  3. the original releases: RainDrop ``test_a/data/N_rain.png`` + ``test_a/gt/N_clean.png``, Snow100K
     ``Snow100K-L/synthetic/*`` + ``Snow100K-L/gt/*``.

  The full set is always read (no truncation); a count different from the published size (750, 58,
  16,801) gives a warning.

Weather labels come from ``weather=`` or are inferred from the path (``infer_weather``); unknown labels
are ``"unknown"`` (``PairedImageDataset`` gives them index -1).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .._types import PathLike
from .io import IMAGE_EXTENSIONS, list_images, read_image
from .transforms import AUGMENT_MODES, augment, pad_to, random_crop_box, to_tensor
from .weather import WEATHER_TYPES

__all__ = [
    "DatasetError",
    "ImagePair",
    "PairedImageDataset",
    "infer_weather",
    "outdoor_rain_test1",
    "paired_folder",
    "raindrop_test_a",
    "read_pair_list",
    "snow100k_l",
    "validate_pairs",
    "weather_index",
]

_MAX_LISTED = 20


class ImagePair(NamedTuple):
    """A degraded ``input`` image, its clean ``target`` and the ``weather`` label (a name or 'unknown')."""

    input: Path
    target: Path
    weather: str


class DatasetError(ValueError):
    """A dataset failed validation; ``problems`` holds one ``'name: reason'`` string per bad pair."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:_MAX_LISTED])
        more = len(self.problems) - _MAX_LISTED
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.problems)} problem(s) in {source}:\n{shown}{tail}")

    def __reduce__(self):
        return (type(self), (self.source, self.problems))


# ---------------------------------------------------------------------------------------------- labels
_WEATHER_PATTERNS = (  # matched on one lower-cased path component; the first hit wins
    ("raindrop", re.compile(r"rain_?drop|^\d+_rain\.\w+$|^test_?a$")),
    ("snow", re.compile(r"snow")),
    ("rain", re.compile(r"rain|^test1$|im_\d+_s\d+_a\d+")),
    ("haze", re.compile(r"haze|hazy|fog|mist")),
)


def infer_weather(path: PathLike) -> str:
    """Guess the weather of an image from its path: 'raindrop', 'snow', 'rain', 'haze' or 'unknown'.

    Folder names are tried from the deepest up, then the file name; within one name the keywords are
    tried in that order (raindrop before rain; rain before fog, since Outdoor-Rain is rain + fog;
    fog/mist count as haze). The Outdoor-Rain ``im_0001_s80_a04`` and RainDrop ``0_rain`` file names and
    the ``test1`` / ``test_a`` folders are recognised.
    """
    parts = [p.lower() for p in Path(path).parts]
    for part in [*reversed(parts[:-1]), *parts[-1:]]:
        for weather, pattern in _WEATHER_PATTERNS:
            if pattern.search(part):
                return weather
    return "unknown"


def weather_index(weather: str) -> int:
    """Index of ``weather`` in ``WEATHER_TYPES``, or -1 for an unknown label."""
    return WEATHER_TYPES.index(weather) if weather in WEATHER_TYPES else -1


def _label(path: Path, weather: str | None) -> str:
    if weather is None:
        return infer_weather(path)
    if weather not in (*WEATHER_TYPES, "unknown"):
        raise ValueError(f"unknown weather '{weather}'; expected one of {WEATHER_TYPES} or 'unknown'")
    return weather


# ---------------------------------------------------------------------------------------------- validation
def _header_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        size = image.size
        orientation = image.getexif().get(0x0112, 1)
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def validate_pairs(
    pairs: Sequence[ImagePair], *, check_headers: bool = False, source: str = "dataset"
) -> None:
    """Raise ``DatasetError`` unless every input and target exists (and, with ``check_headers``, opens
    with Pillow and has the same width and height as its partner). An empty list is an error too."""
    problems: list[str] = []
    if not pairs:
        problems.append("no image pairs found")
    for pair in pairs:
        missing = [p for p in (pair.input, pair.target) if not p.is_file()]
        if missing:
            problems.extend(f"{pair.input.name}: missing {p}" for p in missing)
            continue
        if check_headers:
            sizes = []
            for p in (pair.input, pair.target):
                try:
                    sizes.append(_header_size(p))
                except Exception as error:
                    problems.append(f"{pair.input.name}: unreadable {p} ({type(error).__name__}: {error})")
            if len(sizes) == 2 and sizes[0] != sizes[1]:
                problems.append(f"{pair.input.name}: input size {sizes[0]} != target size {sizes[1]}")
    if problems:
        raise DatasetError(source, problems)


# ---------------------------------------------------------------------------------------------- readers
def _swap_component(relative: str, old: str, new: str) -> str | None:
    parts = relative.replace("\\", "/").split("/")
    for i in range(len(parts) - 2, -1, -1):  # the last folder component named `old` (never the file name)
        if parts[i] == old:
            return "/".join([*parts[:i], new, *parts[i + 1 :]])
    return None


def read_pair_list(
    list_file: PathLike,
    root: PathLike | None = None,
    *,
    weather: str | None = None,
    input_dir: str = "input",
    target_dir: str = "gt",
    check_headers: bool = False,
) -> list[ImagePair]:
    """Read an Allweather/TransWeather list file (see the module docstring) into validated pairs.

    ``root`` defaults to the list file's folder; ``weather`` labels every pair (default: inferred).
    """
    list_file = Path(list_file)
    root = Path(root) if root is not None else list_file.parent
    if not list_file.is_file():
        raise DatasetError(str(list_file), [f"{list_file.name}: list file not found"])
    pairs: list[ImagePair] = []
    problems: list[str] = []
    for number, raw in enumerate(list_file.read_text(encoding="utf-8-sig").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "\t" in line:  # tab-separated: 1 or 2 columns, paths may contain spaces
            columns = [c.strip() for c in line.split("\t") if c.strip()]
        else:  # 2 whitespace-separated columns, or else the whole line is one path
            columns = line.split()
            columns = columns if len(columns) == 2 else [line]
        if len(columns) == 2:
            source, target = columns
        elif len(columns) == 1:
            source = columns[0]
            target = _swap_component(source, input_dir, target_dir)
            if target is None:
                problems.append(f"line {number} '{source}': no '{input_dir}' folder to map to '{target_dir}'")
                continue
        else:
            problems.append(f"line {number}: expected 1 or 2 tab-separated columns, got {len(columns)}")
            continue
        source, target = (c.replace("\\", "/").removeprefix("./") for c in (source, target))
        pairs.append(ImagePair(root / source, root / target, _label(Path(source), weather)))
    if problems:
        raise DatasetError(str(list_file), problems)
    validate_pairs(pairs, check_headers=check_headers, source=str(list_file))
    return pairs


def paired_folder(
    root: PathLike,
    *,
    input_dir: str = "input",
    target_dir: str = "gt",
    weather: str | None = None,
    target_name: Callable[[str], str] | None = None,
    recursive: bool = True,
    check_headers: bool = False,
) -> list[ImagePair]:
    """Pair ``root/input_dir/**`` with ``root/target_dir/**`` by relative file name (or ``target_name(name)``
    when given, e.g. RainDrop's ``0_rain.png -> 0_clean.png``); sorted, validated."""
    root = Path(root)
    inputs_root, targets_root = root / input_dir, root / target_dir
    missing_dirs = [str(d) for d in (inputs_root, targets_root) if not d.is_dir()]
    if missing_dirs:
        raise DatasetError(str(root), [f"folder not found: {d}" for d in missing_dirs])
    pairs = []
    for source in list_images(inputs_root, recursive=recursive):
        relative = source.relative_to(inputs_root)
        name = target_name(relative.name) if target_name else relative.name
        target = targets_root / relative.parent / name
        if not target.is_file():  # same stem, another image extension (input .jpg, gt .png ...)
            extensions = (*IMAGE_EXTENSIONS, *(e.upper() for e in IMAGE_EXTENSIONS))
            target = next((t for t in (target.with_suffix(e) for e in extensions) if t.is_file()), target)
        pairs.append(ImagePair(source, target, _label(Path(root.name) / relative, weather)))
    validate_pairs(pairs, check_headers=check_headers, source=str(root))
    return pairs


# ---------------------------------------------------------------------------------------------- test sets
def _named_test_set(
    root: PathLike,
    *,
    list_name: str,
    subsets: Sequence[str],
    originals: Sequence[tuple[str, str, str, Callable[[str], str] | None]],
    weather: str,
    expected: int,
    title: str,
    check_headers: bool,
) -> list[ImagePair]:
    root = Path(root)
    searched: list[str] = []
    pairs = None
    if (root / list_name).is_file():
        pairs = read_pair_list(root / list_name, root, weather=weather, check_headers=check_headers)
    else:
        searched.append(str(root / list_name))
        layouts = [(s, "input", "gt", None) for s in (*subsets, ".")] + list(originals)
        for subset, input_dir, target_dir, rename in layouts:
            base = root / subset
            if (base / input_dir).is_dir() and (base / target_dir).is_dir():
                pairs = paired_folder(
                    base,
                    input_dir=input_dir,
                    target_dir=target_dir,
                    weather=weather,
                    target_name=rename,
                    check_headers=check_headers,
                )
                break
            searched.append(f"{base / input_dir} + {base / target_dir}")
    if pairs is None:
        raise DatasetError(f"{title} at {root}", ["no known layout found; looked for:", *searched])
    if len(pairs) != expected:
        warnings.warn(
            f"{title}: found {len(pairs)} pairs, the published test set has {expected}", stacklevel=3
        )
    return pairs


def outdoor_rain_test1(root: PathLike, *, check_headers: bool = False) -> list[ImagePair]:
    """Outdoor-Rain Test1 (rain streaks + fog, 750 pairs), labelled 'rain'; layouts in the module docstring."""
    return _named_test_set(
        root,
        list_name="test1.txt",
        subsets=("test1", "Test1"),
        originals=(),
        weather="rain",
        expected=750,
        title="Outdoor-Rain Test1",
        check_headers=check_headers,
    )


def _raindrop_clean_name(name: str) -> str:
    return re.sub(r"_rain(\.\w+)$", r"_clean\1", name)


def raindrop_test_a(root: PathLike, *, check_headers: bool = False) -> list[ImagePair]:
    """RainDrop test_a (58 pairs), labelled 'raindrop'; also reads the original ``data/``+``gt/`` release."""
    return _named_test_set(
        root,
        list_name="raindroptesta.txt",
        subsets=("test_a", "raindrop/test_a", "RainDrop/test_a"),
        originals=tuple((s, "data", "gt", _raindrop_clean_name) for s in ("test_a", "raindrop/test_a", ".")),
        weather="raindrop",
        expected=58,
        title="RainDrop test_a",
        check_headers=check_headers,
    )


def snow100k_l(root: PathLike, *, check_headers: bool = False) -> list[ImagePair]:
    """Snow100K-L test set (16,801 pairs), labelled 'snow'; also reads the original ``synthetic/``+``gt/``."""
    return _named_test_set(
        root,
        list_name="snowtest100k_L.txt",
        subsets=("Snow100K-L", "snow100k_L", "snow100k-L"),
        originals=tuple((s, "synthetic", "gt", None) for s in ("Snow100K-L", "test/Snow100K-L", ".")),
        weather="snow",
        expected=16801,
        title="Snow100K-L",
        check_headers=check_headers,
    )


# ---------------------------------------------------------------------------------------------- torch dataset
def as_crop_size(crop_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if crop_size is None:
        return None
    size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"crop_size must be a positive int or (h, w), got {crop_size!r}")
    return (int(size[0]), int(size[1]))


class PairedImageDataset(Dataset):
    """A torch dataset over ``ImagePair``s.

    Item: ``{"input": (3, h, w) float32 in [0, 1], "target": same, "weather": int (index in WEATHER_TYPES,
    -1 unknown), "name": input file name}``. With ``crop_size`` (int or (h, w)) input and target get the
    same random crop (images smaller than the crop are mirror-padded first); ``augment=True`` applies one
    of the 8 flip/rotation modes to both. The randomness of item ``i`` depends only on (seed, epoch, i);
    call ``set_epoch`` once per epoch, before iterating (with ``persistent_workers=True`` the workers keep
    their own copy and would not see it). Without ``crop_size`` items are whole images (batch size 1).
    """

    def __init__(
        self,
        pairs: Iterable[ImagePair],
        *,
        crop_size: int | tuple[int, int] | None = None,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.pairs = list(pairs)
        self.crop_size = as_crop_size(crop_size)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops/augmentations of ``epoch`` (call before iterating, in every worker)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        source, target = read_image(pair.input), read_image(pair.target)
        if source.shape != target.shape:
            raise DatasetError(
                "PairedImageDataset",
                [f"{pair.input.name}: input shape {source.shape} != target shape {target.shape}"],
            )
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.crop_size is not None:
            source, target = pad_to(source, self.crop_size), pad_to(target, self.crop_size)
            y, x = random_crop_box(rng, source.shape[:2], self.crop_size)
            h, w = self.crop_size
            source, target = source[y : y + h, x : x + w], target[y : y + h, x : x + w]
        if self.augment:
            mode = int(rng.integers(AUGMENT_MODES))
            source, target = augment(source, mode), augment(target, mode)
        return {
            "input": to_tensor(source),
            "target": to_tensor(target),
            "weather": weather_index(pair.weather),
            "name": pair.input.name,
        }
