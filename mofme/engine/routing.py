"""Which experts a model's routed layers choose per weather type, and how much the choice says
about the weather (NMI): used by the trainer (``train.log_routing``) and the study's analysis
(:mod:`mofme.apps.analysis`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score
from torch import nn

from mofme.data import WEATHER_TYPES

__all__ = ["expert_counts", "expert_usage", "routing_nmi", "weather_routing"]


def weather_routing(model: nn.Module, items: Iterable[dict], key: str) -> Iterator[tuple[int, list]]:
    """Per item with a weather (index >= 0): the index and the ``(indices, weights)`` of each routed
    layer (dense layers left out), from one eval-mode forward of ``item[key]`` alone."""
    model.eval()
    for item in items:
        if item["weather"] >= 0:
            routing = model(item[key].unsqueeze(0)).routing
            yield item["weather"], [(i, w) for i, w in routing if i is not None]


@torch.no_grad()
def expert_counts(model: nn.Module, items: Iterable[dict], *, key: str = "input") -> np.ndarray:
    """(routed layers, weathers, experts) counts of token assignments, in the order of the model's
    ``routing`` output, over dataset items ``{key: (3, H, W), "weather": index}`` (items without
    weather, index -1, are skipped); the model runs in eval mode. No routed layer: shape (0, W, E)."""
    experts = model.config.num_experts
    counts: np.ndarray | None = None
    for weather, routing in weather_routing(model, items, key):
        if counts is None:
            counts = np.zeros((len(routing), len(WEATHER_TYPES), experts), dtype=np.int64)
        for layer, (indices, _) in enumerate(routing):
            counts[layer, weather] += np.bincount(indices.flatten().numpy(), minlength=experts)
    return counts if counts is not None else np.zeros((0, len(WEATHER_TYPES), experts), dtype=np.int64)


def expert_usage(counts: np.ndarray) -> np.ndarray:
    """(layers, weathers, experts) counts -> the share of each expert per layer and weather (rows
    sum to 1; a weather without tokens stays 0)."""
    return counts / np.maximum(counts.sum(axis=2, keepdims=True), 1)


def routing_nmi(counts: np.ndarray) -> list[float]:
    """Per layer, the normalised mutual information (arithmetic normalisation, scikit-learn)
    between a token assignment's weather type and its expert; ``counts`` as :func:`expert_counts`."""
    values = []
    for layer in counts:
        weather, expert = np.nonzero(layer)
        repeats = layer[weather, expert]
        values.append(
            float(normalized_mutual_info_score(np.repeat(weather, repeats), np.repeat(expert, repeats)))
        )
    return values
