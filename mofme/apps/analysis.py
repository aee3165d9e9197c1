"""Routing analysis: which experts each weather type uses, how informative the choice is, and
how often the Uncertainty-aware Router's MC selection differs from its deterministic one."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score
from torch import nn

from mofme.data import WEATHER_TYPES
from mofme.nn import RoutedLayer, UncertaintyAwareRouter

__all__ = ["expert_counts", "expert_usage", "routing_nmi", "uar_selection_change"]


@torch.no_grad()
def expert_counts(model: nn.Module, items: Iterable[dict]) -> np.ndarray:
    """(routed layers, weathers, experts) counts of token assignments, in the order of the model's
    ``routing`` output, over dataset items ``{"input": (3, H, W), "weather": index}`` (items without
    weather, index -1, are skipped); the model runs in eval mode. No routed layer: shape (0, W, E)."""
    model.eval()
    experts = model.config.num_experts
    counts: np.ndarray | None = None
    for item in items:
        if item["weather"] < 0:
            continue
        routing = [i for i, _ in model(item["input"].unsqueeze(0)).routing if i is not None]
        if counts is None:
            counts = np.zeros((len(routing), len(WEATHER_TYPES), experts), dtype=np.int64)
        for layer, indices in enumerate(routing):
            counts[layer, item["weather"]] += np.bincount(indices.flatten().numpy(), minlength=experts)
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


@torch.no_grad()
def uar_selection_change(model: nn.Module, items: Iterable[dict], *, seed: int = 0) -> list[float]:
    """Per routed layer with a UaR, the fraction of tokens whose top-k set chosen from the MC mean
    (training-mode routing) differs from the deterministic eval-mode choice, on the eval-mode
    inputs of that layer. Empty when the model has no UaR."""
    model.eval()
    routers = [m.router for m in model.modules() if isinstance(m, RoutedLayer)]
    if not any(isinstance(r, UncertaintyAwareRouter) for r in routers):
        return []
    captured: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(routers))}
    hooks = [
        router.register_forward_hook(lambda _m, args, _o, i=i: captured[i].append(args[0].detach()))
        for i, router in enumerate(routers)
    ]
    try:
        for item in items:
            model(item["input"].unsqueeze(0))
    finally:
        for hook in hooks:
            hook.remove()
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    changed = []
    for i, router in enumerate(routers):
        tokens = torch.cat(captured[i])
        plain = router(tokens).indices.sort(-1).values
        router.train()
        sampled = router(tokens).indices.sort(-1).values
        router.eval()
        changed.append(float((plain != sampled).any(-1).float().mean()))
    torch.set_rng_state(generator_state)
    return changed
