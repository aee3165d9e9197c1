"""Training: the typed recipe config, the loop (AMP, EMA, DDP, resume, checkpoints) and the recipes
per task.

    from mofme.train import load_config, train
    result = train(load_config("configs/demo_cpu.yaml"), resume=True)

``config`` (the YAML schema), ``trainer`` (the task-free loop and the recipe registry), ``recipes/``
(one module per task: restoration, drop detection, recognition), ``hooks`` (``loss.extra`` terms), ``data`` (datasets from the ``data:`` section), ``optim``, ``checkpoint``,
``distributed``. Imports the library (``nn``, ``models``, ``data``), ``evaluate`` (validation) and
``infer``; nothing below imports it.
"""

from .config import Config, ConfigError, load_config
from .trainer import Recipe, TrainResult, register_recipe, train

__all__ = ["Config", "ConfigError", "Recipe", "TrainResult", "load_config", "register_recipe", "train"]


def __getattr__(name: str) -> object:
    """``mofme.train.TrainingRecipe`` (deprecated, one release): the restoration recipe."""
    if name == "TrainingRecipe":
        from . import trainer

        return trainer.TrainingRecipe  # warns
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
