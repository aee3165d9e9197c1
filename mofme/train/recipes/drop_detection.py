"""The training recipe of the lens-drop detector (``task: drop_detection``): the loop of
:class:`~mofme.train.trainer.Recipe` (resume, DDP, AMP, EMA, logging, selection on a
validation split) with a :class:`~mofme.models.drops.DropDetector`, the drop-mask loss and an IoU
validation score.

    mofme train drop_detector       # configs/drop_detector.yaml: rendered weather, drop opacity targets

The detector learns from rendered weather (``data.type`` builtin or folder): its target is the
renderer's drop opacity on raindrop renders and zero on every other render
(:func:`mofme.losses.drop_targets`), so streaks, flakes and clean photos teach it what is no drop.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchmetrics.classification import BinaryJaccardIndex

from mofme.data import WEATHER_TYPES
from mofme.infer.restore import eval_mode
from mofme.losses import DropMaskLoss, drop_targets
from mofme.train.trainer import Recipe, register_recipe

__all__ = ["DropDetectionRecipe", "drop_iou"]

_RAINDROP = WEATHER_TYPES.index("raindrop")


def drop_iou(model: nn.Module, dataset: Dataset, *, device: torch.device | str = "cpu") -> dict[str, float]:
    """IoU of the pixels ``model`` flags (drop probability > 0.5) with the drop pixels (target
    opacity > 0.5), each item of ``dataset`` whole: ``"raindrop"`` over the raindrop renders,
    ``"mean"`` over every render (pixels flagged under other weather count as false alarms)."""
    pooled, drops = BinaryJaccardIndex(), BinaryJaccardIndex()
    with eval_mode(model), torch.no_grad():
        for item in dataset:
            probs = torch.sigmoid(model(item["input"][None].to(device)).float()).cpu()
            weather = torch.tensor([item["weather"]])
            target = (drop_targets(item["particles"][None], weather) > 0.5).int()
            pooled.update(probs, target)
            if item["weather"] == _RAINDROP:
                drops.update(probs, target)
    return {"raindrop": float(drops.compute()), "mean": float(pooled.compute())}


@register_recipe("drop_detection")
class DropDetectionRecipe(Recipe):
    """Lens-drop detection (``task: drop_detection``); loss: :class:`~mofme.losses.DropMaskLoss`;
    validation score: :func:`drop_iou` over the validation split (``mean``, false alarms included)."""

    metric = "iou"

    def _setup_loss(self) -> nn.Module:
        return DropMaskLoss(pos_weight=self.config.loss.drop_pos_weight)

    def _loss(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        images = batch["input"].to(self.device)
        with self.autocast:
            logits = self.net(images)
        loss = self.criterion(
            logits.float(), batch["particles"].to(self.device), batch["weather"].to(self.device)
        )
        return loss, {"task": loss.detach()}

    def _scores(self, model: nn.Module) -> dict[str, float]:
        return drop_iou(model, self.val_set, device=self.device)
