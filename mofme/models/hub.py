"""Save and load models in the Hugging Face Hub layout: ``config.json`` + ``model.safetensors``.

    model.save_pretrained("runs/x/best")          # writes exactly the two files
    model = Restorer.from_pretrained("runs/x/best")  # rebuilds from config.json, loads safetensors
    model = Restorer.from_pretrained("mofme-small-weather")  # weights shipped in mofme/weights/

A name is looked up as a local directory first, then among the weights shipped inside the package
(``shipped_weights()``), then as a Hub repo id ``owner/name``.

Nothing is ever unpickled: the config is JSON, the weights are safetensors.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..atomic import atomic_file, recover_directory, write_text_atomic

__all__ = [
    "CONFIG_NAME",
    "SHIPPED_WEIGHTS_DIR",
    "WEIGHTS_NAME",
    "PretrainedMixin",
    "check_state_dict",
    "config_from",
    "load_weights",
    "read_config",
    "shipped_weights",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

M = TypeVar("M", bound="PretrainedMixin")


def _unshared(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous CPU copies where tensors share memory (safetensors refuses shared storage).

    Tied weights are structural: loading copies the saved value into every tied name."""
    seen: set[int] = set()
    out = {}
    for name, tensor in state.items():
        tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage()
        whole = (
            tensor.is_contiguous()
            and tensor.storage_offset() == 0
            and storage.nbytes() == tensor.numel() * tensor.element_size()
        )
        if storage.data_ptr() in seen or not whole:
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        elif tensor.numel():
            seen.add(storage.data_ptr())
        out[name] = tensor
    return out


def check_state_dict(
    model: nn.Module, state: dict[str, Tensor], *, source: str, new_modules: Sequence[str] = ()
) -> None:
    """Raise a ``ValueError`` naming ``source`` and the keys if ``state`` does not fit ``model``
    exactly (missing, unexpected, or of the wrong shape); tensors of the modules named in
    ``new_modules`` (e.g. ``"drop_head"``) may be missing."""
    expected = model.state_dict()
    fresh = tuple(f"{name}." for name in new_modules)
    missing = sorted(k for k in set(expected) - set(state) if not k.startswith(fresh))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected}")
    if wrong:
        problems.append(f"wrong shapes [{'; '.join(wrong)}]")
    if problems:
        raise ValueError(f"{source} does not match {type(model).__name__}: " + ", ".join(problems))


def shipped_weights() -> list[str]:
    """Names of the pretrained models shipped inside the package (``mofme/weights/<name>/``)."""
    if not SHIPPED_WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_WEIGHTS_DIR.iterdir() if (p / CONFIG_NAME).is_file())


def _resolve(name_or_path: str | Path, filename: str, revision: str | None) -> Path:
    """``name_or_path/filename`` for a local directory, else for a shipped model name, else the file
    downloaded from the Hub repo ``name_or_path``."""
    local = Path(name_or_path)
    with suppress(OSError):  # a folder whose replacement was killed mid-way (mofme.atomic)
        recover_directory(local)
    if not local.is_dir() and str(name_or_path) in shipped_weights():
        local = SHIPPED_WEIGHTS_DIR / str(name_or_path)
    if local.is_dir():
        path = local / filename
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {local} is not a save_pretrained directory")
        return path
    repo_id = str(name_or_path)
    # "best/model" beside an existing folder "best" is a missing path, not the Hub repo of user "best"
    looks_local = local.exists() or local.parent.is_dir() or repo_id.startswith((".", "/", "~"))
    if looks_local or repo_id.count("/") != 1:
        raise FileNotFoundError(
            f"{name_or_path} is neither a directory, nor a shipped model {shipped_weights()}, "
            "nor a Hub repo id 'owner/name'"
        )
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, filename, revision=revision))


def load_weights(
    model: nn.Module,
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    new_modules: Sequence[str] = (),
) -> nn.Module:
    """Load ``model.safetensors`` of a saved model (directory, shipped name or Hub repo id) into
    ``model`` in place; raises naming the file when a tensor is missing, extra or of another shape.
    Modules named in ``new_modules`` (added to the architecture since) keep their initialisation."""
    weights_path = _resolve(name_or_path, WEIGHTS_NAME, revision)
    state = load_file(str(weights_path), device="cpu")
    check_state_dict(model, state, source=str(weights_path), new_modules=new_modules)
    model.load_state_dict(state, strict=not new_modules)
    return model


def read_config(name_or_path: str | Path, *, revision: str | None = None) -> tuple[dict[str, Any], Path]:
    """The JSON object in ``config.json`` of a saved model, and the file's path."""
    config_path = _resolve(name_or_path, CONFIG_NAME, revision)
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} must hold a JSON object, got {type(config).__name__}")
    return config, config_path


def config_from(config_class: type, config: Any, fields: dict[str, Any]) -> Any:
    """A model's settings: ``config`` (an instance of ``config_class``, e.g. from
    :func:`mofme.models.model_config`) or ``config_class(**fields)``; giving both is a TypeError."""
    if config is None:
        return config_class(**fields)
    if fields:
        raise TypeError(f"give a {config_class.__name__} or keyword fields, not both (got {sorted(fields)})")
    if not isinstance(config, config_class):
        raise TypeError(f"expected a {config_class.__name__}, got {type(config).__name__}")
    return config


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` whose constructor takes
    keyword arguments only and which keeps them, JSON-serialisable, as ``self.config_dict()``."""

    META_KEYS: ClassVar[tuple[str, ...]] = ("architecture",)

    def config_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed;
        other files there are kept). Each file is written under a temporary name and renamed into
        place, so neither is ever half-written; to replace a whole folder at once, save into
        :func:`mofme.atomic.staged_directory`, as the trainer does for checkpoints and ``best/``."""
        assert isinstance(self, nn.Module)
        directory = Path(directory)
        config = {"architecture": type(self).__name__, **self.config_dict()}
        with atomic_file(directory / WEIGHTS_NAME) as tmp:
            save_file(_unshared(self.state_dict()), str(tmp), metadata={"format": "pt"})
        write_text_atomic(directory / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(
        cls: type[M],
        name_or_path: str | Path,
        *,
        device: str | torch.device = "cpu",
        revision: str | None = None,
        **overrides: Any,
    ) -> M:
        """Rebuild from ``config.json`` (updated by ``overrides``, e.g. ``dispatch`` settings that
        do not change parameter shapes) and load ``model.safetensors``; returned in eval mode.

        ``name_or_path``: a ``save_pretrained`` directory, a shipped model name or a Hub repo id."""
        config, config_path = read_config(name_or_path, revision=revision)
        architecture = config.pop("architecture", cls.__name__)
        if architecture != cls.__name__:
            raise ValueError(f"{config_path} describes a {architecture}, not a {cls.__name__}")
        for key in cls.META_KEYS:
            config.pop(key, None)
        config.update(overrides)
        try:
            model = cls(**config)
        except TypeError as error:
            raise ValueError(f"{config_path}: cannot build {cls.__name__}: {error}") from error
        if any(parameter.is_meta for parameter in model.parameters()):  # under torch.device("meta")
            return model.eval()  # shapes only: there is nothing to load weights into
        load_weights(model, name_or_path, revision=revision)
        return model.to(device).eval()
