"""SparseMoE: the conventional baseline, E full FFN experts behind the same routers and the same
sparse dispatch (dropless by default, optional capacity factor)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .dispatch import (
    Assignments,
    capacity_mask,
    dense_combine_weights,
    group_by_expert,
    grouped_linear,
    scatter_tokens,
    slot_weights,
    uses_grouped_mm,
)
from .routed import Dispatch, RouteBy, RoutedLayer
from .routers import RouterOutput, TopKRouter

__all__ = ["ExpertFFNs", "SparseMoE"]


class ExpertFFNs(nn.Module):
    """E feed-forward experts stored stacked: ``w1`` (E, D, H), ``b1`` (E, H), ``w2`` (E, H, D),
    ``b2`` (E, D); each initialised like ``nn.Linear``. 8 D^2 + 5 D parameters per expert at H = 4D."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        num_experts: int,
        *,
        dropout: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.num_experts = num_experts

        def uniform(*shape: int, fan_in: int) -> nn.Parameter:
            bound = 1.0 / math.sqrt(fan_in)
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        self.w1 = uniform(num_experts, dim, hidden_dim, fan_in=dim)
        self.b1 = uniform(num_experts, hidden_dim, fan_in=dim)
        self.w2 = uniform(num_experts, hidden_dim, dim, fan_in=hidden_dim)
        self.b2 = uniform(num_experts, dim, fan_in=hidden_dim)
        self.act = act_layer()
        self.drop = nn.Dropout(dropout)

    def grouped(self, rows: Tensor, groups: Assignments) -> Tensor:
        """Rows grouped by expert (A, D) -> (A, D), expert e applied to its block of ``groups``."""
        hidden = self.drop(self.act(grouped_linear(rows, groups, self.w1, self.b1)))
        return self.drop(grouped_linear(hidden, groups, self.w2, self.b2))

    def expert(self, index: int, x: Tensor) -> Tensor:
        """Expert ``index`` applied to every row of x (N, D)."""
        hidden = self.drop(self.act(torch.addmm(self.b1[index], x, self.w1[index])))
        return self.drop(torch.addmm(self.b2[index], hidden, self.w2[index]))


class SparseMoE(RoutedLayer):
    """Conventional top-k MoE; ``layer(x)`` with x (..., dim) -> :class:`MoEOutput`.

    Args:
        dim, num_experts, top_k, hidden_dim, router, dropout, dispatch, route_by, router_kwargs: as
            :class:`MoFME`.
        capacity_factor: None (dropless, default) or c > 0: each expert takes at most
            ``ceil(c * N * k / E)`` assignments, the rest are dropped (they contribute zero).

    Parameters: E (2 D H + H + D) + (D E + E).
    """

    def __init__(
        self,
        dim: int,
        num_experts: int,
        top_k: int,
        *,
        hidden_dim: int | None = None,
        router: str | TopKRouter = "linear",
        dropout: float = 0.0,
        capacity_factor: float | None = None,
        dispatch: Dispatch = "sparse",
        route_by: RouteBy = "token",
        act_layer: type[nn.Module] = nn.GELU,
        router_kwargs: dict | None = None,
    ) -> None:
        super().__init__(
            dim,
            num_experts,
            top_k,
            router=router,
            router_kwargs=router_kwargs,
            dispatch=dispatch,
            route_by=route_by,
        )
        if capacity_factor is not None and capacity_factor <= 0:
            raise ValueError(f"capacity_factor must be positive or None, got {capacity_factor}")
        self.capacity_factor = capacity_factor
        self.experts = ExpertFFNs(
            dim, hidden_dim or 4 * dim, num_experts, dropout=dropout, act_layer=act_layer
        )

    def keep_mask(self, indices: Tensor) -> Tensor | None:
        """(N, k) bool of the assignments within capacity; None when dropless."""
        if self.capacity_factor is None:
            return None
        capacity = math.ceil(self.capacity_factor * indices.shape[0] * self.top_k / self.num_experts)
        return capacity_mask(indices, self.num_experts, capacity)

    def compute(self, tokens: Tensor, routing: RouterOutput, *, sparse: bool) -> Tensor:
        keep = self.keep_mask(routing.indices)
        if sparse:
            on_device = uses_grouped_mm(tokens, self.dim, self.experts.w1.shape[-1])
            groups = group_by_expert(routing.indices, self.num_experts, keep, on_device=on_device)
            out = self.experts.grouped(tokens.index_select(0, groups.token), groups)
            return scatter_tokens(
                out * slot_weights(groups, routing.weights).to(out.dtype), groups, tokens.shape[0]
            )
        weights = routing.weights if keep is None else routing.weights * keep
        dense = dense_combine_weights(routing.indices, weights, self.num_experts).to(tokens.dtype)
        out = torch.zeros_like(tokens)
        for expert in range(self.num_experts):
            out = out + dense[:, expert : expert + 1] * self.experts.expert(expert, tokens)
        return out
