"""Routing analysis: which experts each weather type uses, how informative the choice is, and
how often the Uncertainty-aware Router's MC selection differs from its deterministic one."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mofme.data import WEATHER_TYPES
from mofme.evaluate.routing import condition_counts, expert_counts, expert_usage, routing_nmi, weather_routing
from mofme.models.restorer import pad_to_multiple
from mofme.nn import RoutedLayer, UncertaintyAwareRouter, label_expert_mutual_information, routing_probs

TOKEN_PROPERTIES = ("brightness", "texture", "degradation")  # what routing_drivers bins per token

__all__ = [
    "condition_counts",
    "expert_counts",
    "expert_usage",
    "label_information_by_batch",
    "routing_drivers",
    "routing_nmi",
    "routing_weather_calibration",
    "uar_selection_change",
    "weather_routing_mass",
]


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


@torch.no_grad()
def weather_routing_mass(
    model: nn.Module, items: Iterable[dict], *, key: str = "image"
) -> tuple[np.ndarray, np.ndarray]:
    """Per weather item (weather index >= 0), the share of each expert in the routing weight of its
    tokens, per routed layer: ``(usage (items, layers, experts), weathers (items,))``; each usage
    row sums to 1. Eval mode, one item at a time."""
    experts = model.config.num_experts
    usage, weathers = [], []
    for item, routing in weather_routing(model, items, key):
        rows = []
        for indices, weights in routing:
            mass = torch.zeros(experts).index_add_(0, indices.flatten(), weights.flatten().float())
            rows.append((mass / mass.sum()).numpy())
        usage.append(rows)
        weathers.append(item["weather"])
    return np.asarray(usage, dtype=np.float64).reshape(len(weathers), -1, experts), np.asarray(weathers)


def routing_weather_calibration(
    fit: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *, bins: int = 15
) -> list[dict[str, float]]:
    """How well the routing tells the weather type, per routed layer. On ``fit`` (a
    :func:`weather_routing_mass` result, e.g. the validation split) estimate, per expert, the weather
    distribution of its routing mass, P(w | e); on ``test`` predict each item's weather as
    p(w) = sum_e usage_e P(w | e). Returns per layer the accuracy of argmax p and its expected
    calibration error (torchmetrics, ``bins`` equal-width bins, l1): how far the confidence max p is
    from that accuracy."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    (fit_usage, fit_weather), (test_usage, test_weather) = fit, test
    classes = len(WEATHER_TYPES)
    onehot = np.eye(classes)[fit_weather]  # (items, W)
    results = []
    for layer in range(fit_usage.shape[1]):
        mass = onehot.T @ fit_usage[:, layer]  # (W, E): routing mass of each expert per weather
        given_expert = (mass + 1e-9) / (mass + 1e-9).sum(0, keepdims=True)  # P(w | e), columns sum to 1
        predicted = test_usage[:, layer] @ given_expert.T  # (items, W), rows sum to 1
        probs, target = torch.from_numpy(predicted).float(), torch.from_numpy(test_weather)
        ece = multiclass_calibration_error(probs, target, num_classes=classes, n_bins=bins, norm="l1")
        accuracy = float((probs.argmax(1) == target).float().mean())
        results.append({"weather_accuracy": accuracy, "ece": float(ece)})
    return results


@torch.no_grad()
def label_information_by_batch(
    model: nn.Module, items: Iterable[dict], *, batch_size: int, draws: int = 200, seed: int = 0
) -> dict[str, list[float]]:
    """The soft I(weather; expert) in nats that ``loss.weather_mi`` rewards (each image's mean
    routing probabilities, :func:`mofme.nn.label_expert_mutual_information`), per routed layer:
    ``"whole"`` over every weather item of ``items`` at once, ``"batch"`` its mean over ``draws``
    random batches of ``batch_size`` of them (drawn without replacement). A batch value far above
    the whole one is information about the images of a batch, not about the weather. Eval mode."""
    probs, weathers = [], []
    for item, _ in weather_routing(model, items, "input"):  # routing_probs: that item's forward
        probs.append(torch.stack([p.reshape(-1, p.shape[-1]).mean(0) for p in routing_probs(model)]))
        weathers.append(item["weather"])
    probs, labels = torch.stack(probs), torch.tensor(weathers)  # (images, layers, E), (images,)
    generator = torch.Generator().manual_seed(seed)
    batches = [torch.randperm(len(labels), generator=generator)[:batch_size] for _ in range(draws)]

    def information(rows: Tensor, layer: int) -> float:
        return float(label_expert_mutual_information(probs[rows, layer], labels[rows], len(WEATHER_TYPES)))

    every = torch.arange(len(labels))
    layers = range(probs.shape[1])
    return {
        "whole": [information(every, layer) for layer in layers],
        "batch": [float(np.mean([information(rows, layer) for rows in batches])) for layer in layers],
    }


def _token_properties(item: dict, multiple: int, grid: tuple[int, int]) -> Tensor:
    """(3, h, w): per token of an (h, w) grid on ``item``'s image padded to ``multiple`` as the
    model pads it, the mean over the token's pixels of :data:`TOKEN_PROPERTIES`: the clean target's
    grey level, its gradient magnitude (forward differences), and |input - target|."""
    grey = item["target"].mean(0)
    dx = F.pad(grey.diff(dim=1), (0, 1))
    dy = F.pad(grey.diff(dim=0), (0, 0, 0, 1))
    degradation = (item["input"] - item["target"]).abs().mean(0)
    maps = torch.stack([grey, (dx**2 + dy**2).sqrt(), degradation]).unsqueeze(0)
    return F.adaptive_avg_pool2d(pad_to_multiple(maps, multiple), grid)[0]


def _quantile_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """Each value's bin among ``bins`` equal-count bins of ``values`` (ties share a bin)."""
    edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, values, side="right")


@torch.no_grad()
def routing_drivers(model: nn.Module, items: Iterable[dict], *, bins: int = 4) -> dict[str, list[float]]:
    """What a routed layer's expert choice follows: per layer, the NMI (as :func:`routing_nmi`)
    between a token's experts (all k) and ``"weather"``, its image's weather type, or the bin
    (``bins`` equal-count bins over every token of ``items``) of each of :data:`TOKEN_PROPERTIES`
    under it. On the built-in splits the clean content is the same under every weather, so
    brightness and texture say what the photo shows, not the weather on it. Items as
    :class:`~mofme.data.BuiltinWeatherDataset`'s (``input``, ``target``, ``weather``); eval mode."""
    labels: dict[str, list[list[np.ndarray]]] = {}
    experts: list[list[np.ndarray]] = []
    for item, routing in weather_routing(model, items, "input"):
        if not experts:
            experts = [[] for _ in routing]
            labels = {name: [[] for _ in routing] for name in ("weather", *TOKEN_PROPERTIES)}
        for layer, (indices, _) in enumerate(routing):
            tokens = indices[0].flatten(0, 1)  # (h w, k)
            experts[layer].append(tokens.numpy())
            labels["weather"][layer].append(np.full(len(tokens), item["weather"]))
            pad = getattr(model, "patch_size", None) or model.size_multiple  # what the model pads to
            properties = _token_properties(item, pad, indices.shape[1:3])
            for name, values in zip(TOKEN_PROPERTIES, properties.flatten(1).numpy(), strict=True):
                labels[name][layer].append(values)
    result = {}
    for name, per_layer in labels.items():
        result[name] = []
        for layer, values in enumerate(per_layer):
            chosen = np.concatenate(experts[layer])  # (tokens, k)
            label = np.concatenate(values)
            label = label if name == "weather" else _quantile_bins(label, bins)
            counts = np.zeros((1, label.max() + 1, chosen.max() + 1), dtype=np.int64)  # as routing_nmi takes
            np.add.at(counts[0], (np.repeat(label, chosen.shape[1]), chosen.flatten()), 1)
            result[name] += routing_nmi(counts)
    return result
