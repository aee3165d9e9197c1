"""Training recipes of the recognition tasks: the loop of :class:`~mofme.train.trainer.Recipe`
(resume, DDP, AMP, EMA, logging, selection on a validation split) with a recogniser, cross-entropy and
an accuracy / mIoU validation score.

    mofme train scenes_vit           # configs/scenes_vit.yaml: task: classification, data.type: scenes
    mofme train degradation_vit      # task: segmentation, data.type: degradation
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mofme.data import IGNORE_INDEX
from mofme.nn import aux_loss
from mofme.train.config import ConfigError
from mofme.train.data import class_names
from mofme.train.trainer import Recipe, register_recipe

__all__ = ["ClassificationRecipe", "SegmentationRecipe"]


class _RecognitionRecipe(Recipe):
    """A recogniser whose ``num_classes`` is the data's number of classes; the loss is the
    cross-entropy of ``output.logits`` against ``batch[self.target_key]`` plus the routed layers'
    aux losses."""

    target_key = "label"

    def _setup_model(self) -> nn.Module:
        self.classes = class_names(self.config.data)
        given = self.config.model.fields.get("num_classes", len(self.classes))
        if given != len(self.classes):
            raise ConfigError(
                f"model.num_classes is {given} but data.type {self.config.data.type!r} has {len(self.classes)} classes"
            )
        return self.config.model.build(num_classes=len(self.classes)).to(self.device)

    def _setup_loss(self) -> nn.Module:
        loss = self.config.loss
        weight = None
        if loss.class_weights is not None:
            if len(loss.class_weights) != len(self.classes):
                raise ConfigError(
                    f"loss.class_weights has {len(loss.class_weights)} entries for {len(self.classes)} classes"
                )
            weight = torch.tensor(loss.class_weights, dtype=torch.float32)
        return nn.CrossEntropyLoss(
            weight=weight, ignore_index=IGNORE_INDEX, label_smoothing=loss.label_smoothing
        ).to(self.device)

    def _loss(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        images, targets = batch["image"].to(self.device), batch[self.target_key].to(self.device)
        with self.autocast:
            output = self.net(images)
            task = self.criterion(output.logits.float(), targets)
            loss = task + aux_loss(self.model)
        return loss, {"task": task.detach(), "aux": output.aux_loss.detach()}

    def _scores(self, model: nn.Module) -> dict[str, float]:
        report = self._evaluate(model)
        scores: dict[str, Any] = {
            weather: metrics[self.metric] for weather, metrics in report.per_weather.items()
        }
        scores["mean"] = report.score
        return scores


@register_recipe("classification")
class ClassificationRecipe(_RecognitionRecipe):
    """Image classification (``task: classification``); validation score: top-1 accuracy over the
    validation split (every condition of the built-in scene task)."""

    metric = "accuracy"

    def _evaluate(self, model: nn.Module):
        from mofme.evaluate.recognition import evaluate_classifier

        return evaluate_classifier(model, self.val_set, device=self.device)


@register_recipe("segmentation")
class SegmentationRecipe(_RecognitionRecipe):
    """Semantic segmentation (``task: segmentation``); validation score: mIoU over the validation
    split, whole images evaluated tiled (``eval.tile`` / ``eval.overlap``)."""

    metric = "miou"
    target_key = "mask"

    def _evaluate(self, model: nn.Module):
        from mofme.evaluate.recognition import evaluate_segmenter

        tiling = {"tile": self.config.eval.tile, "overlap": self.config.eval.overlap}
        return evaluate_segmenter(model, self.val_set, device=self.device, **tiling)
