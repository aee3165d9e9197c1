"""Routing losses of the specialisation study: signals that need labels the router does not see.

* :func:`label_expert_mutual_information`: I(label; expert), the task-expert mutual information of
  Mod-Squad (Chen et al. 2023); maximised, it makes images of one label use their own experts.
* :func:`label_group_loss`: each label is assigned a group of experts outright (supervised).

Registered with the trainer as ``loss.extra`` terms over weather labels (:mod:`mofme.train.hooks`):
``weather_mi`` (maximised) and ``weather_groups``, each the mean over the model's routed layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mofme.data import WEATHER_TYPES
from mofme.nn import routing_probs
from mofme.train.hooks import register_extra_loss

__all__ = ["label_expert_mutual_information", "label_group_loss", "weather_groups", "weather_mi"]

_TINY = 1e-12


def label_expert_mutual_information(probs: Tensor, labels: Tensor, num_labels: int) -> Tensor:
    """Mutual information I(label; expert) in nats of the soft joint distribution
    ``P(l, e) = mean_i [label_i = l] * p_i(e)`` (Mod-Squad's task-expert MI).

    ``probs`` (B, E): each sample's routing probabilities (e.g. the mean over its tokens), rows
    summing to 1; ``labels`` (B,) int64 in [0, num_labels), negative = unlabelled, left out. 0 when
    no sample is labelled. Between 0 and min(log num_labels, log E); maximising it also spreads the
    load over the experts (its H(expert) term), so it needs no balance loss of its own.
    """
    kept = labels >= 0
    if not bool(kept.any()):
        return probs.sum() * 0.0
    probs = probs[kept].float()
    onehot = F.one_hot(labels[kept], num_labels).to(probs.dtype)
    joint = onehot.T @ probs / probs.shape[0]  # (L, E)
    marginals = joint.sum(dim=1, keepdim=True) * joint.sum(dim=0, keepdim=True)
    return torch.sum(joint * (torch.log(joint + _TINY) - torch.log(marginals + _TINY)))


def label_group_loss(probs: Tensor, labels: Tensor, num_labels: int) -> Tensor:
    """Cross-entropy of each token's routing mass on its label's group of experts,
    ``-mean log sum_{e in G(l)} p(e)``, the E experts split into ``num_labels`` contiguous groups
    (expert e in group ``e * num_labels // E``).

    ``probs`` (B, N, E): routing probabilities of each sample's N tokens; ``labels`` (B,) int64,
    negative = unlabelled, left out (0 when none is labelled). ``log num_labels`` for uniform
    routing, 0 when every token routes inside its label's group.
    """
    experts = probs.shape[-1]
    if experts < num_labels:
        raise ValueError(f"label_group_loss needs at least one expert per label: {experts} < {num_labels}")
    kept = labels >= 0
    if not bool(kept.any()):
        return probs.sum() * 0.0
    group = torch.arange(experts, device=probs.device) * num_labels // experts
    member = (group == labels[kept, None]).to(probs.dtype)  # (B', E): the experts of each label
    mass = (probs[kept].float() * member[:, None, :]).sum(-1)  # (B', N)
    return -torch.log(mass + _TINY).mean()


def _weather_routing(recipe, batch: dict, name: str) -> tuple[Tensor, list[Tensor]]:
    """The batch's weather labels (B,) and each routed layer's routing probabilities (B, N, E) from the
    recipe's last forward pass, for the term ``loss.extra.<name>``."""
    if "weather" not in batch:
        raise ValueError(
            f"loss.extra.{name} needs weather-labelled training items; data.type "
            f"{recipe.config.data.type!r} has none"
        )
    weather = batch["weather"].to(recipe.device)
    layers = routing_probs(recipe.model)
    if not layers:
        raise ValueError(f"loss.extra.{name} needs a model with routed layers (model.ffn moe or mofme)")
    return weather, [p.reshape(len(weather), -1, p.shape[-1]) for p in layers]


@register_extra_loss("weather_mi", maximise=True)
def weather_mi(recipe, batch: dict) -> Tensor:
    """I(weather; expert) of the batch's images (each image's mean routing probabilities), mean over
    routed layers."""
    weather, layers = _weather_routing(recipe, batch, "weather_mi")
    values = [label_expert_mutual_information(p.mean(1), weather, len(WEATHER_TYPES)) for p in layers]
    return torch.stack(values).mean()


@register_extra_loss("weather_groups")
def weather_groups(recipe, batch: dict) -> Tensor:
    """The tokens' cross-entropy on their weather's group of experts, mean over routed layers."""
    weather, layers = _weather_routing(recipe, batch, "weather_groups")
    return torch.stack([label_group_loss(p, weather, len(WEATHER_TYPES)) for p in layers]).mean()
