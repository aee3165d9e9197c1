"""The optimiser every training path uses (trainer, benchmarks), so that they time the same thing."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["adamw"]


def adamw(
    params: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.01,
) -> torch.optim.AdamW:
    """AdamW with the fused kernel (one pass over each parameter, CPU and CUDA) where this torch
    supports it, else the default implementation. Same update rule either way."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
