"""The restoration recipe (``task: restoration``): a restorer, the smooth-L1 (+ perceptual, particle,
drop-mask, presence and registered extra) loss, and restored PSNR per weather type on the validation
images as the score.

    mofme train demo_cpu              # configs/demo_cpu.yaml: task: restoration (the default)
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.utils.data import Dataset

from mofme.evaluate.restoration import CLEAN, evaluate
from mofme.infer.restore import eval_mode
from mofme.losses import RestorationLoss, drop_mask_loss, drop_targets, presence_targets
from mofme.models import RestorerOutput
from mofme.nn import aux_loss
from mofme.train.config import Config
from mofme.train.hooks import extra_loss
from mofme.train.trainer import Recipe, register_recipe

__all__ = ["RestorationRecipe", "validate"]


def validate(model: nn.Module, dataset: Dataset, config: Config) -> dict[str, float]:
    """Restored PSNR per weather type (or renderer family) on the validation images (the evaluation
    protocol of :func:`mofme.evaluate.restoration.evaluate` with the recipe's conventions), and ``mean``:
    the mean over those groups, the model-selection criterion. Weather-free items (group ``clean``:
    the output's PSNR from its own input) are reported as ``clean`` and ``clean_min`` and never
    enter ``mean``: the clean photos are a check, not a selection criterion."""
    conv = config.eval
    with eval_mode(model):  # each module gets its own mode back (some may be fixed, in eval mode)
        report = evaluate(
            model,
            dataset,
            **conv.model_dump(),
            progress=False,
            fast=False,  # training's validation keeps the plain modules (fastpath is for inference)
        )
    scores = {weather: group.psnr for weather, group in report.per_weather.items()}
    scores["mean"] = report.mean_over_weather.psnr  # the clean photos left out
    clean = [row.psnr for row in report.images if row.weather == CLEAN]
    if clean:
        scores["clean_min"] = min(clean)
    return scores


@register_recipe("restoration")
class RestorationRecipe(Recipe):
    """Weather restoration: the loop of :class:`~mofme.train.trainer.Recipe` with a restorer
    (``model.name: restorer_*``), :class:`~mofme.losses.RestorationLoss` plus the optional terms of
    the ``loss:`` section, and :func:`validate` as the score."""

    def _setup_loss(self) -> nn.Module:
        loss = self.config.loss
        for name in loss.extra:
            extra_loss(name)  # a name nothing registered: an error before the first step
        return RestorationLoss(
            beta=loss.smooth_l1_beta,
            perceptual_weight=loss.perceptual_weight,
            vgg_weights=loss.vgg_weights,
            particle_weight=loss.particle_weight,
            pixel=loss.pixel,
            psnr_cap=loss.psnr_cap,
        ).to(self.device)

    def _scores(self, model: nn.Module) -> dict[str, float]:
        return validate(model, self.val_set, self.config)

    def _routing_scores(self, model: nn.Module) -> dict[str, float]:
        """``nmi_layer<i>``: NMI(weather; expert) of each routed layer on the validation split
        (:func:`mofme.evaluate.routing.routing_nmi`); nothing for a model without routed layers."""
        from mofme.evaluate.routing import expert_counts, routing_nmi

        was_training = model.training
        nmi = routing_nmi(expert_counts(model, self.val_set))
        model.train(was_training)
        return {f"nmi_layer{i}": value for i, value in enumerate(nmi)}

    def _loss(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss of a batch (task loss + the routed layers' aux losses) and its parts."""
        inputs, targets = batch["input"].to(self.device), batch["target"].to(self.device)
        with self.autocast:
            restored = self.net(inputs)
            particles = batch.get("particles") if self.config.loss.particle_weight else None
            if particles is not None:
                particles = particles.to(self.device)
            losses = self.criterion(restored.image.float(), targets, particles)
            loss = losses.total + aux_loss(self.model)
            parts = {"pixel": losses.pixel, "aux": restored.aux_loss}
            if self.config.loss.drop_mask_weight:
                drop_mask = self._drop_mask_loss(restored, batch)
                loss = loss + self.config.loss.drop_mask_weight * drop_mask
                parts["drop_mask"] = drop_mask.detach()
            if self.config.loss.presence_weight:
                presence = self._presence_loss(restored, inputs, targets)
                loss = loss + self.config.loss.presence_weight * presence
                parts["presence"] = presence.detach()
            for name, weight in self.config.loss.extra.items():
                term = extra_loss(name)
                value = term.fn(self, batch)
                loss = loss - weight * value if term.maximise else loss + weight * value
                parts[name] = value.detach()
        return loss, parts

    def _drop_mask_loss(self, restored: RestorerOutput, batch: dict) -> Tensor:
        """The drop detector's loss on this batch (``loss.drop_mask_weight``)."""
        if restored.drop_logits is None:
            raise ValueError(
                "loss.drop_mask_weight needs a model with a drop detector (model.drop_fill: true)"
            )
        if "particles" not in batch or "weather" not in batch:
            raise ValueError(
                f"loss.drop_mask_weight needs rendered weather items (particles and weather); data.type "
                f"{self.config.data.type!r} has none"
            )
        targets = drop_targets(batch["particles"], batch["weather"]).to(self.device)
        pos_weight = self.config.loss.drop_pos_weight
        return drop_mask_loss(restored.drop_logits.float(), targets, pos_weight=pos_weight)

    @staticmethod
    def _presence_loss(restored: RestorerOutput, inputs: Tensor, targets: Tensor) -> Tensor:
        """The presence gate's loss on this batch (``loss.presence_weight``)."""
        if restored.presence_logits is None:
            raise ValueError(
                "loss.presence_weight needs a model with a presence gate (model.presence_gate: true)"
            )
        return drop_mask_loss(restored.presence_logits.float(), presence_targets(inputs, targets))
