"""Training: the typed recipe config, the loop (AMP, EMA, DDP, resume, checkpoints) and the recipes
per task.

    from mofme.train import load_config, train
    result = train(load_config("configs/demo_cpu.yaml"), resume=True)

``config`` (the YAML schema), ``trainer`` (the loop and the restoration recipe), ``recipes/`` (drop
detection, recognition), ``data`` (datasets from the ``data:`` section), ``optim``, ``checkpoint``,
``distributed``. Imports the library (``nn``, ``models``, ``data``), ``evaluate`` (validation) and
``infer``; nothing below imports it.
"""

from .config import Config, ConfigError, load_config
from .trainer import TrainingRecipe, TrainResult, train

__all__ = ["Config", "ConfigError", "TrainResult", "TrainingRecipe", "load_config", "train"]
