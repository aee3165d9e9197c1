"""Checks shared by the model tests."""

from __future__ import annotations

import torch


def assert_routing(routing: list, grids: list[tuple[int, int]], *, ffn: str, batch: int, top_k: int) -> None:
    """Per layer: no routing for a dense FFN; else (batch, h, w, k) indices and weights on that
    layer's token grid, the weights of each token summing to 1."""
    assert len(routing) == len(grids)
    for (indices, weights), grid in zip(routing, grids, strict=True):
        if ffn == "dense":
            assert indices is None and weights is None
        else:
            assert indices.shape == weights.shape == (batch, *grid, top_k)
            assert torch.allclose(weights.sum(-1), torch.ones(()))
