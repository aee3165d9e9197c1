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


def expert_params(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Stacked per-expert tensors (leading dim E): only the chosen experts' slices get gradients."""
    return {
        name: p
        for name, p in model.named_parameters()
        if (".ffn.experts." in name or ".ffn.modulation." in name) and p.shape[0] == model.config.num_experts
    }


def assert_sparse_gradients(model: torch.nn.Module, routing: list, layer_names: list[str]) -> None:
    """After a backward pass: every parameter has a finite gradient, nonzero except in the stacked
    expert tensors, where exactly the experts chosen in that layer (``routing[i]``, the FFN named
    ``layer_names[i]``) have a nonzero slice."""
    experts = expert_params(model)
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        if pname not in experts:
            assert p.grad.abs().sum() > 0, pname
    for (indices, _), layer in zip(routing, layer_names, strict=True):
        chosen = [] if indices is None else indices.unique().tolist()
        for pname, p in experts.items():
            if pname.startswith(f"{layer}."):
                used = p.grad.flatten(1).abs().sum(1) > 0
                assert used.nonzero().flatten().tolist() == chosen, pname
