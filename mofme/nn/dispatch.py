"""Sparse expert dispatch: group (token, expert) assignments by expert, run each expert once on
its own tokens, and combine the results back per token.

With N tokens and top-k routing there are A = N*k assignments. They are sorted by expert (one
stable argsort), so expert e owns a contiguous block of ``counts[e]`` rows; an expert with no
tokens costs nothing. Per-expert weights are stored stacked, shape (E, in, out), and split with
``unbind`` so that the backward pass writes all expert gradients in one stacked tensor.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Assignments",
    "capacity_mask",
    "dense_combine_weights",
    "group_by_expert",
    "grouped_linear",
]


class Assignments(NamedTuple):
    """The kept (token, expert) assignments of N tokens, grouped by expert."""

    slot: Tensor  # (A',) position of each kept assignment in the flattened (N, k) routing
    token: Tensor  # (A',) token index of each kept assignment (slot // k)
    counts: list[int]  # (E,) kept assignments per expert; sums to A'


def capacity_mask(indices: Tensor, num_experts: int, capacity: int) -> Tensor:
    """(N, k) bool: True where an assignment is among the first ``capacity`` that its expert
    receives, first choices served first (GShard / ST-MoE): every token's first choice in token
    order, then every second choice, and so on. Static shapes, so it also exports."""
    by_rank = indices.t().reshape(-1)  # (k N,): choice 0 of every token, then choice 1, ...
    one_hot = F.one_hot(by_rank, num_experts)
    position = (one_hot.cumsum(0) * one_hot).sum(-1) - 1
    return (position < capacity).view(indices.shape[1], indices.shape[0]).t()


def group_by_expert(indices: Tensor, num_experts: int, keep: Tensor | None = None) -> Assignments:
    """Sort the (N, k) expert ``indices`` by expert; assignments where the (N, k) bool ``keep`` is
    False (see :func:`capacity_mask`) are dropped."""
    top_k = indices.shape[-1]
    flat = indices.reshape(-1)
    if keep is not None:
        flat = torch.where(keep.reshape(-1), flat, num_experts)  # dropped ones sort last
    slot = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=num_experts + 1)[:num_experts].tolist()
    slot = slot[: sum(counts)]
    return Assignments(slot, torch.div(slot, top_k, rounding_mode="floor"), counts)


class _GroupedLinear(torch.autograd.Function):
    """``rows_e @ weight[e] + bias[e]`` for each block e of ``counts``; every result, input
    gradient and weight gradient is written straight into one preallocated tensor (no
    concatenation, no stacking of per-expert gradients)."""

    @staticmethod
    def forward(ctx, rows: Tensor, weight: Tensor, bias: Tensor | None, counts: list[int]) -> Tensor:
        out = rows.new_empty(rows.shape[0], weight.shape[-1])
        for expert, (block, target) in enumerate(zip(rows.split(counts), out.split(counts), strict=True)):
            if block.shape[0] == 0:
                continue
            if bias is None:
                torch.mm(block, weight[expert], out=target)
            else:
                torch.addmm(bias[expert], block, weight[expert], out=target)
        ctx.counts = counts
        ctx.has_bias = bias is not None
        ctx.save_for_backward(rows, weight)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        rows, weight = ctx.saved_tensors
        counts = ctx.counts
        grad_rows = grad_weight = grad_bias = None
        blocks = list(zip(rows.split(counts), grad_out.split(counts), strict=True))
        if ctx.needs_input_grad[0]:
            grad_rows = torch.empty_like(rows)
            for expert, ((_, grad), target) in enumerate(zip(blocks, grad_rows.split(counts), strict=True)):
                if grad.shape[0]:
                    torch.mm(grad, weight[expert].t(), out=target)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.empty_like(weight)
            for expert, (block, grad) in enumerate(blocks):
                if block.shape[0]:
                    torch.mm(block.t(), grad, out=grad_weight[expert])
                else:
                    grad_weight[expert].zero_()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.new_zeros(weight.shape[0], weight.shape[-1])
            for expert, (_, grad) in enumerate(blocks):
                if grad.shape[0]:
                    torch.sum(grad, dim=0, out=grad_bias[expert])
        return grad_rows, grad_weight, grad_bias, None


def grouped_linear(rows: Tensor, counts: list[int], weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Per-expert affine map on rows grouped by expert.

    ``rows`` (A, in) with expert e's rows in the e-th block of ``counts``; ``weight`` (E, in, out);
    ``bias`` (E, out) or None. Returns (A, out): ``rows_e @ weight[e] + bias[e]`` block by block;
    experts without rows cost nothing (and get zero gradient).
    """
    weight = weight.to(rows.dtype)  # under autocast the rows may be in lower precision
    bias = None if bias is None else bias.to(rows.dtype)
    return _GroupedLinear.apply(rows, weight, bias, counts)


def slot_weights(groups: Assignments, weights: Tensor) -> Tensor:
    """(A', 1) combine weight of each kept assignment, in grouped order; ``weights`` (N, k)."""
    return weights.reshape(-1)[groups.slot].unsqueeze(1)


def scatter_tokens(values: Tensor, groups: Assignments, num_tokens: int) -> Tensor:
    """Sum the (A', F) per-assignment ``values`` (already weighted) back per token -> (N, F);
    dropped assignments contribute zero."""
    return values.new_zeros(num_tokens, values.shape[-1]).index_add(0, groups.token, values)


def mix_rows(table: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
    """``sum_j weights[:, j] * table[indices[:, j]]``: (E, F) table, (N, k) indices and weights
    -> (N, F); reads only the chosen rows."""
    return F.embedding_bag(indices, table, per_sample_weights=weights.to(table.dtype), mode="sum")


def dense_combine_weights(indices: Tensor, weights: Tensor, num_experts: int) -> Tensor:
    """(N, E) combine weights with zeros at the experts a token did not choose (the published
    all-experts form)."""
    dense = weights.new_zeros(weights.shape[0], num_experts)
    return dense.scatter(1, indices, weights)
