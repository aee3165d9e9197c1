"""Training configuration: YAML files validated by pydantic, with ``key.sub=value`` overrides.

    config = load_config("configs/demo_cpu.yaml", ["optim.lr=1e-3", "model.num_experts=8"])

Every section names its components explicitly (``model.ffn``, ``data.type``, ``loss.*``) and
the metric conventions (``eval.y_channel``, ``eval.crop_border``) are part of the recipe.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from mofme._hints import closest_name
from mofme.models.registry import RESTORER_PRESETS, create_model, list_models, model_config

__all__ = ["Config", "ConfigError", "load_config", "parse_overrides", "read_recipe"]


Count = Annotated[int, Field(ge=1)]  # epochs, periods, sizes: at least one
Rate = Annotated[float, Field(gt=0.0)]  # learning rates, weights that must be positive
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]  # Adam betas, label smoothing: [0, 1)
LongSide = Annotated[int, Field(ge=8)]  # a photo's long side in pixels


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Section):
    """The model: a registered ``name`` (:func:`mofme.models.list_models`: ``restorer_small``,
    ``restorer_unet``, ``segmenter_small``, ...) and any field of its config dataclass, given flat
    (:class:`~mofme.models.RestorerConfig`: ``ffn``, ``num_experts``, ``top_k``, ``router``,
    ``modulation``, ``residual``, ``depth``, ...), checked once against the entry's config
    (:func:`mofme.models.model_config`: unknown fields and names missing from the FFN and router
    registries are errors) and built by :func:`mofme.models.create_model`. Fields not given keep the
    entry's values, the only defaults. Read for one release, with a FutureWarning: ``preset: X``
    (now ``name: restorer_X``; it replaces a restorer ``name``, as ``model.preset=tiny`` on the command
    line did, and is ignored beside a recognizer's) and an ``overrides:`` mapping (now the fields)."""

    model_config = ConfigDict(extra="allow")
    name: str = "restorer_small"

    @model_validator(mode="before")
    @classmethod
    def _deprecated_spellings(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("overrides"), dict):
            _deprecated("model.overrides: {...}", "the fields themselves, in model:")
            fields = data.pop("overrides")
            data = {**data, **fields}
        if "preset" in data:
            preset = data.pop("preset")
            _deprecated(f"model.preset: {preset}", f"model.name: restorer_{preset}")
            if data.get("name") is None or str(data["name"]).startswith("restorer_"):
                if f"restorer_{preset}" not in list_models("restorer_*"):
                    raise ValueError(f"unknown preset {preset!r}; choose from {sorted(RESTORER_PRESETS)}")
                data["name"] = f"restorer_{preset}"
        if "name" in data and data["name"] is None:  # as saved before: the default model
            del data["name"]
        return data

    @model_validator(mode="after")
    def _resolves(self) -> ModelConfig:
        self.resolved()  # raises ValueError naming the field
        return self

    @property
    def fields(self) -> dict[str, Any]:
        """The fields given (everything but ``name``)."""
        return dict(self.model_extra or {})

    def resolved(self) -> Any:
        """The config dataclass with the given fields: every setting of the model."""
        return model_config(self.name, **self.fields)

    def build(self, **fields: Any) -> Any:
        """The model this section describes (:func:`mofme.models.create_model`); ``fields`` fill in
        settings the section leaves out."""
        try:
            return create_model(self.name, **{**fields, **self.fields})
        except TypeError as error:  # an unknown keyword of a model built outside its config class
            raise ValueError(f"model {self.name!r}: {error}") from error


def _deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; write {new}",
        FutureWarning,
        stacklevel=4,
    )


class FolderSource(_Section):
    """A folder of clean photos (searched recursively) and its share of the training items."""

    path: str
    weight: float = Field(1.0, gt=0.0)


TASK_DATA: dict[str, tuple[str, ...]] = {
    "restoration": ("builtin", "folder", "allweather", "paired"),
    "classification": ("scenes", "imagefolder"),
    "segmentation": ("degradation", "cityscapes", "acdc"),
    "drop_detection": ("builtin", "folder"),
}
TASK_MODELS = {
    "restoration": "restorer_",
    "classification": "classifier_",
    "segmentation": "segmenter_",
    "drop_detection": "drop_detector",
}


class DataConfig(_Section):
    """``type``: restoration: builtin | folder | allweather | paired; classification: scenes (the
    built-in scene task) | imagefolder (``train`` / ``val`` folders of class sub-folders);
    segmentation: degradation (the built-in weather-mask task) | cityscapes | acdc (``root`` the
    dataset's folder; trained on random ``crop_size`` crops of split ``train``, validated on the whole
    images of ``val``, 19 classes, 255 ignored)."""

    type: Literal[
        "builtin",
        "folder",
        "allweather",
        "paired",
        "scenes",
        "imagefolder",
        "degradation",
        "cityscapes",
        "acdc",
    ] = "builtin"
    folders: list[FolderSource] = Field(
        default_factory=list, description="folder only: clean photo folders, weather rendered on the fly"
    )
    builtin_weight: float = Field(
        0.0, ge=0.0, description="folder only: weight of the built-in training photos in the mix (0: none)"
    )
    long_sides: list[LongSide] = Field(
        default_factory=lambda: [256],
        description="folder only: long sides the photos are used at; the weather scales with them",
    )
    train: str | None = Field(None, description="allweather: list file; paired: folder with input/ and gt/")
    val: str | None = Field(None, description="validation list/folder; default: val_fraction of train")
    root: str | None = Field(
        None,
        description="allweather: folder the list paths are relative to; cityscapes, acdc: the dataset's folder",
    )
    variant: Literal["clean", "foggy", "rain"] = Field(
        "clean", description="cityscapes only: leftImg8bit, Foggy Cityscapes or Rain Cityscapes images"
    )
    beta: float | None = Field(
        None,
        gt=0.0,
        description="cityscapes foggy only: one fog density (0.005, 0.01 or 0.02); default: all three",
    )
    conditions: list[str] | None = Field(
        None, description="acdc only: conditions read (fog, night, rain, snow); default: all four"
    )
    val_fraction: float = Field(0.02, gt=0.0, lt=1.0)
    crop_size: Count = 64
    batch_size: Count = 8
    num_workers: int = Field(0, ge=0)
    samples_per_epoch: Count = 512  # builtin, folder, scenes, degradation
    weathers: list[str] | None = None  # builtin, folder, scenes, degradation; default: all
    train_long_side: LongSide | None = (
        256  # builtin only: long side of the training photos (weather scales with it)
    )
    train_zoom: list[Rate] = Field(
        default_factory=lambda: [1.0],
        description="builtin only: content scales (x train_long_side) the training crops come from",
    )
    color_jitter: bool = False  # builtin and folder: random colour variants of the clean content
    families: list[str] | None = Field(
        None,
        description="folder only: the renderer families trained on (mofme.data.families; every weather "
        "needs one); default: the classic renderer",
    )
    camera_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="folder only: share of crops through camera effects (JPEG, noise, ...)",
    )
    val_families: list[str] | None = Field(
        None,
        description="folder only: validate (and select checkpoints) on these families, held out of training, "
        "rendered on the photos of val_folders; default: the classic renderer on the built-in val photo",
    )
    val_folders: list[str] = Field(default_factory=list, description="folder only: validation photo folders")
    val_long_side: int = Field(256, ge=16, description="folder only: long side of the validation photos")
    val_seed: int | None = Field(
        None,
        description="folder only: seed of the val_families renders; None: train.seed. Set it to compare "
        "runs of different training seeds on the same renders",
    )
    clean_folder: str | None = Field(
        None,
        description="folder only: weather-free photos scored at every validation (output vs input: "
        "the do-no-harm check)",
    )
    clean_long_side: int = Field(512, ge=16, description="folder only: long side of the clean photos")

    @model_validator(mode="after")
    def _held_out(self) -> DataConfig:
        trained = set(self.families or ())
        overlap = sorted(trained & set(self.val_families or ()))
        if overlap:
            raise ValueError(
                f"data.val_families {overlap} are also in data.families: held-out means never trained"
            )
        if self.val_families and not self.val_folders:
            raise ValueError("data.val_families needs data.val_folders: the photos they are rendered on")
        return self

    clean_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of weather-free crops (scenes, degradation: 1 = none has weather)",
    )


class OptimConfig(_Section):
    lr: Rate = 4e-4
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)
    weight_decay: float = Field(0.01, ge=0.0)
    decay_all: bool = Field(
        False, description="decay every parameter (true: as the 0.1 weights were trained); else matrices only"
    )
    warmup_epochs: float = Field(3.0, ge=0.0)
    min_lr: float = Field(1e-6, ge=0.0)
    grad_clip: Rate | None = 1.0


class RestorationLoss(_Section):
    """``task: restoration``: smooth L1 (+ perceptual), and the weights of the optional terms."""

    task: Literal["restoration"] = Field("restoration", exclude=True)  # the discriminator (Config.task)
    pixel: Literal["smooth_l1", "psnr"] = Field(
        "smooth_l1",
        description="the pixel term: smooth L1 over all pixels, or psnr: minus each image's PSNR "
        "(capped at psnr_cap), averaged over the images: every image weighs the same in dB",
    )
    psnr_cap: float = Field(50.0, gt=0.0, description="loss.pixel psnr: no gain counts above this (dB)")
    smooth_l1_beta: Rate = 1.0
    perceptual_weight: float = Field(0.0, ge=0.0)
    vgg_weights: str | None = None
    extra: dict[str, Annotated[float, Field(ge=0.0)]] = Field(
        default_factory=dict,
        description="weights of registered extra terms (mofme.train.hooks), e.g. {weather_mi: 0.1}: "
        "mofme.studies registers weather_mi (maximised) and weather_groups",
    )
    particle_weight: float = Field(
        0.0,
        ge=0.0,
        description="on rendered weather: pixel-loss weight 1 + this x particle opacity (drops, flakes, streaks)",
    )
    drop_mask_weight: float = Field(
        0.0,
        ge=0.0,
        description="on rendered weather, model.drop_fill models: weight of the drop detector's binary "
        "cross-entropy against the renderer's drop opacity (mofme.losses.drop_mask_loss)",
    )
    presence_weight: float = Field(
        0.0,
        ge=0.0,
        description="model.presence_gate models: weight of the presence gate's binary cross-entropy "
        "against the pixels the weather changed (mofme.losses.presence_targets)",
    )
    drop_pos_weight: float = Field(
        1.0, gt=0.0, description="weight of the drop pixels in the drop detector's binary cross-entropy"
    )


class _CrossEntropyLoss(_Section):
    """Recognition: cross-entropy with ``label_smoothing`` and ``class_weights`` (one per class;
    default equal)."""

    label_smoothing: Fraction = 0.0
    class_weights: list[Annotated[float, Field(ge=0.0)]] | None = None


class ClassificationLoss(_CrossEntropyLoss):
    """``task: classification``: cross-entropy (:class:`_CrossEntropyLoss`)."""

    task: Literal["classification"] = Field("classification", exclude=True)


class SegmentationLoss(_CrossEntropyLoss):
    """``task: segmentation``: per-pixel cross-entropy (:class:`_CrossEntropyLoss`), unlabelled pixels left out."""

    task: Literal["segmentation"] = Field("segmentation", exclude=True)


class DropDetectionLoss(_Section):
    """``task: drop_detection``: binary cross-entropy against the drop opacity."""

    task: Literal["drop_detection"] = Field("drop_detection", exclude=True)
    drop_pos_weight: float = Field(1.0, gt=0.0, description="weight of the drop pixels (they are few)")


# the loss section, typed by the task: a field of another task's loss is a schema error
LossConfig = Annotated[
    RestorationLoss | ClassificationLoss | SegmentationLoss | DropDetectionLoss, Field(discriminator="task")
]
TASK_LOSSES: dict[str, type[_Section]] = {
    cls.model_fields["task"].default: cls
    for cls in (RestorationLoss, ClassificationLoss, SegmentationLoss, DropDetectionLoss)
}


def _typed_loss(data: Any) -> Any:
    """The raw config with its ``loss`` section tagged by ``task`` (the union's discriminator), less
    fields of other tasks' losses left at their defaults (runs saved before the loss was typed
    wrote every field); ``weather_mi`` / ``weather_groups`` given as fields (before they became
    registered terms) are read into ``extra``, with a FutureWarning when set."""
    if not isinstance(data, dict) or not isinstance(data.get("loss", {}), dict):
        return data
    task = data.get("task", "restoration")
    if task not in TASK_LOSSES:
        return data  # the task's own error names it
    own = TASK_LOSSES[task].model_fields
    idle = {
        name
        for cls in TASK_LOSSES.values()
        for name, field in cls.model_fields.items()
        if name not in own and data.get("loss", {}).get(name, object()) == field.default
    }
    loss = {k: v for k, v in (data.get("loss") or {}).items() if k not in idle}
    for name in _MOVED_TO_EXTRA & loss.keys():  # loss.weather_mi: 0.1 -> loss.extra.weather_mi: 0.1
        weight = loss.pop(name)
        if weight:
            _deprecated(f"loss.{name}: {weight}", f"loss.extra: {{{name}: {weight}}}")
            loss["extra"] = {**loss.get("extra", {}), name: weight}
    return {**data, "loss": {**loss, "task": task}}


_MOVED_TO_EXTRA = {"weather_mi", "weather_groups"}  # loss fields now registered terms (mofme.studies)


class TrainConfig(_Section):
    epochs: Count = 10
    max_minutes: Rate | None = Field(
        None, description="stop (and fit the schedule) within this budget, resumes included"
    )
    eval_every: Count = 1  # epochs
    checkpoint_every: Count = 100  # steps
    keep_checkpoints: Count = 2
    log_every: Count = 10  # steps
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0)
    seed: int = Field(0, ge=0)
    device: str = "auto"
    output_dir: str = "runs/default"
    progress: bool = True
    log_routing: bool = Field(
        False, description="at each validation, log NMI(weather; expert) per routed layer (restoration)"
    )
    init_from: str | None = Field(
        None,
        description="fine-tune: start from these weights (a save_pretrained directory or a shipped name) "
        "instead of a random initialisation; the model section must describe the same architecture",
    )
    init_parts: dict[str, str] = Field(
        default_factory=dict,
        description="modules whose weights come from other saved models (module name -> a save_pretrained "
        "directory or shipped name, e.g. {drop_head: runs/drop_detector/best}); init_from's file may lack them",
    )
    init_new: list[str] = Field(
        default_factory=list,
        description="modules added since init_from's weights (e.g. [presence_head, context, context_gate]): "
        "they keep their initialisation",
    )
    trainable: list[str] | None = Field(
        None,
        description="train only these modules (e.g. [presence_head, context, context_gate]); every other "
        "parameter stays as loaded and every other module stays in eval mode (no dropout): a new part "
        "learns around a fixed network. None: train everything",
    )


class EvalConfig(_Section):
    """Metric conventions and tiling: exactly the keyword options of :func:`mofme.evaluate.restoration.evaluate`."""

    y_channel: bool = False
    crop_border: int = Field(0, ge=0)
    tile: Count = 256
    overlap: int = Field(32, ge=0)


class Config(_Section):
    task: Literal["restoration", "classification", "segmentation", "drop_detection"] = "restoration"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=RestorationLoss)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="before")
    @classmethod
    def _loss_of_the_task(cls, data: Any) -> Any:
        return _typed_loss(data)

    @model_validator(mode="after")
    def _task_matches(self) -> Config:
        if self.data.type not in TASK_DATA[self.task]:
            raise ValueError(
                f"data.type {self.data.type!r} does not serve task {self.task!r}: use {TASK_DATA[self.task]}"
            )
        name, prefix = self.model.name, TASK_MODELS[self.task]
        if (name is None and self.task != "restoration") or (
            name is not None and not name.startswith(prefix)
        ):
            raise ValueError(f"task {self.task!r} needs model.name = one of the registered {prefix}* models")
        if self.train.log_routing and self.task != "restoration":
            raise ValueError(
                "train.log_routing needs task 'restoration' (weather-labelled validation images)"
            )
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def same_as(self, saved_yaml: str) -> bool:
        """Whether ``saved_yaml`` (an earlier :meth:`to_yaml`) describes this configuration. Fields the
        saved text lacks take their defaults, so a field added to the library later, left at its
        default, keeps a finished run valid; text that no longer parses is never the same. Where the
        run is written (``train.output_dir``) is not compared: a run folder copied or moved elsewhere
        (e.g. a main comparison's runs reused as one point of a scaling study) is the same run."""
        try:
            saved = Config.model_validate(yaml.safe_load(saved_yaml))
        except (yaml.YAMLError, ValueError):
            return False
        return _computed(saved) == _computed(self)


def _computed(config: Config) -> dict:
    """``config`` as JSON, without the fields that do not change what a run computes."""
    dumped = config.model_dump(mode="json")
    dumped["train"].pop("output_dir")
    return dumped


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the field."""


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a": {"b": 1}, "c": [1, 2]}``; values are parsed as YAML."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        node = tree
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override")
        node[leaf] = yaml.safe_load(value)
    return tree


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_recipe(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a YAML recipe. A top-level ``base: other.yaml`` (a path relative to this
    file's folder) names a recipe this one changes: its mapping is read first (recursively) and this
    file's sections are merged onto it, key by key; lists and scalars replace the base's. Raises
    :class:`ConfigError` naming the file: missing, not YAML, not a mapping, or a cycle of bases."""
    path = Path(path)
    if path.resolve() in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise ConfigError(f"{path}: recipes name each other as base: {cycle}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as err:
        raise ConfigError(f"config file not found: {path}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be the path of another recipe, got {base!r}")
    return _merge(read_recipe(path.parent / base, (*_chain, path.resolve())), raw)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe (:func:`read_recipe`; the defaults when ``path`` is None) and apply
    ``overrides``."""
    raw = read_recipe(path) if path is not None else {}
    raw = _merge(raw, parse_overrides(overrides or []))
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(_describe(error) for error in err.errors())
        source = "defaults" if path is None else str(path)
        raise ConfigError(f"{source}: {problems}") from err


def _describe(error: ErrorDetails) -> str:
    """One validation error as ``field: problem`` (``train.epochs: Input should be greater than or
    equal to 1``); an unknown field with the closest known one (``unknown field train.epoch; did you
    mean train.epochs?``), or the section's fields when none is close; a loss field of another task
    named as such."""
    loc, section = error["loc"], None
    if loc[:1] == ("loss",) and len(loc) > 1 and loc[1] in TASK_LOSSES:  # the union's tag: the task
        task, loc = loc[1], ("loss", *loc[2:])
        section = TASK_LOSSES[task] if len(loc) == 2 else None
    where = ".".join(str(part) for part in loc)
    if error["type"] == "extra_forbidden":
        section = section or _section_at(loc[:-1])
        if section is None:
            return f"unknown field {where}"
        known = [name for name in section.model_fields if name != "task"]
        if section in TASK_LOSSES.values() and any(
            loc[-1] in cls.model_fields for cls in TASK_LOSSES.values()
        ):
            return f"{where} is not a field of the {task} loss (task: {task}); its fields: {', '.join(known)}"
        close = closest_name(str(loc[-1]), known)
        if close is None:
            return f"unknown field {where}; known: {', '.join(known)}"
        return f"unknown field {where}; did you mean {'.'.join(str(part) for part in (*loc[:-1], close))}?"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _section_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The config class whose fields sit at ``loc`` (list positions skipped): :class:`Config` for
    ``()``, :class:`TrainConfig` for ``("train",)``; None past a field that is no section."""
    section: type[BaseModel] | None = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = section.model_fields.get(part)
        section = None if field is None else _model_in(field.annotation)
        if section is None:
            return None
    return section


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (``TrainConfig``, ``list[FolderSource]``, ``X | None``)."""
    if get_origin(annotation) is None and isinstance(annotation, type):
        return annotation if issubclass(annotation, BaseModel) else None
    return next(filter(None, map(_model_in, get_args(annotation))), None)
