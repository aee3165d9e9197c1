"""Which experts a model's routed layers choose per weather type (and severity), and how much the
choice says about them (NMI): used by the trainer (``train.log_routing``) and the study's analysis
(:mod:`mofme.studies.analysis`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score
from torch import nn

from mofme.data import SEVERITIES, WEATHER_TYPES

__all__ = ["condition_counts", "expert_counts", "expert_usage", "routing_nmi", "weather_routing"]


def weather_routing(model: nn.Module, items: Iterable[dict], key: str) -> Iterator[tuple[dict, list]]:
    """Per item with a weather (index >= 0): the item and the ``(indices, weights)`` of each routed
    layer (dense layers left out), from one eval-mode forward of ``item[key]`` alone."""
    model.eval()
    for item in items:
        if item["weather"] >= 0:
            routing = model(item[key].unsqueeze(0)).routing
            yield item, [(i, w) for i, w in routing if i is not None]


def _assignment_counts(
    model: nn.Module, items: Iterable[dict], key: str, labels: tuple[int, ...], label
) -> np.ndarray:
    """(routed layers, *labels, experts) token-assignment counts; ``label(item)`` is the item's
    index into the ``labels`` axes."""
    experts = model.config.num_experts
    counts: np.ndarray | None = None
    for item, routing in weather_routing(model, items, key):
        if counts is None:
            counts = np.zeros((len(routing), *labels, experts), dtype=np.int64)
        for layer, (indices, _) in enumerate(routing):
            counts[(layer, *label(item))] += np.bincount(indices.flatten().numpy(), minlength=experts)
    return counts if counts is not None else np.zeros((0, *labels, experts), dtype=np.int64)


@torch.no_grad()
def expert_counts(model: nn.Module, items: Iterable[dict], *, key: str = "input") -> np.ndarray:
    """(routed layers, weathers, experts) counts of token assignments, in the order of the model's
    ``routing`` output, over dataset items ``{key: (3, H, W), "weather": index}`` (items without
    weather, index -1, are skipped); the model runs in eval mode. No routed layer: shape (0, W, E)."""
    return _assignment_counts(model, items, key, (len(WEATHER_TYPES),), lambda item: (item["weather"],))


@torch.no_grad()
def condition_counts(model: nn.Module, items: Iterable[dict], *, key: str = "input") -> np.ndarray:
    """(routed layers, weathers, severities, experts) counts, as :func:`expert_counts` (its sum over
    the severity axis) but split by ``item["severity"]`` too (axis in :data:`SEVERITIES` order)."""
    return _assignment_counts(
        model,
        items,
        key,
        (len(WEATHER_TYPES), len(SEVERITIES)),
        lambda item: (item["weather"], SEVERITIES.index(item["severity"])),
    )


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
