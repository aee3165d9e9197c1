"""The optimiser every training path uses (trainer, benchmarks), so that they time the same thing."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["adamw", "decay_groups"]

# vectors: biases (also the experts' stacked biases and the FiLM gamma/beta vectors), norm scales,
# position embeddings and attention temperatures. Decay would pull them to 0, not to their start
# (a FiLM gamma starts at 1), so common practice (timm, BERT) leaves them out.
_NO_DECAY_NAMES = frozenset({"bias", "b1", "b2", "pos_embed", "temperature"})


def decay_groups(model: torch.nn.Module, weight_decay: float, *, decay_all: bool = False) -> list[dict]:
    """AdamW parameter groups: weight matrices and kernels with ``weight_decay``; vectors (1-D
    parameters and the names in ``_NO_DECAY_NAMES``) without. ``decay_all`` puts every parameter in
    the decayed group (how the weights shipped with 0.1 were trained)."""
    decay, keep = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        vector = param.ndim <= 1 or name.rsplit(".", 1)[-1] in _NO_DECAY_NAMES
        (keep if vector and not decay_all else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    return groups + ([{"params": keep, "weight_decay": 0.0}] if keep else [])


def adamw(
    params: Iterable[torch.nn.Parameter] | Iterable[dict],
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.01,
) -> torch.optim.AdamW:
    """AdamW with the fused kernel (one pass over each parameter, CPU and CUDA) where this torch
    supports it, else the default implementation. Same update rule either way. ``params``:
    parameters, or groups (see :func:`decay_groups`)."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
