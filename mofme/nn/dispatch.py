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
    num_slots: int  # N * k


def capacity_mask(indices: Tensor, num_experts: int, capacity: int) -> Tensor:
    """(N, k) bool: True where an assignment is among the first ``capacity`` that its expert
    receives, in token order (static shapes, so it also exports)."""
    one_hot = F.one_hot(indices.reshape(-1), num_experts)
    rank = (one_hot.cumsum(0) * one_hot).sum(-1) - 1
    return (rank < capacity).view_as(indices)


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
    return Assignments(slot, torch.div(slot, top_k, rounding_mode="floor"), counts, flat.numel())


def grouped_linear(rows: Tensor, counts: list[int], weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Per-expert affine map on rows grouped by expert.

    ``rows`` (A, in) with expert e's rows in the e-th block of ``counts``; ``weight`` (E, in, out);
    ``bias`` (E, out) or None. Returns (A, out): ``rows_e @ weight[e] + bias[e]`` block by block.
    Without autograd the blocks are written straight into one output (no concatenation).
    """
    weights = weight.unbind(0)
    biases = bias.unbind(0) if bias is not None else None
    blocks = rows.split(counts)
    if not torch.is_grad_enabled() or not (rows.requires_grad or weight.requires_grad):
        out = rows.new_empty(rows.shape[0], weight.shape[-1])
        for expert, (block, target) in enumerate(zip(blocks, out.split(counts), strict=True)):
            if block.shape[0]:
                if biases is None:
                    torch.mm(block, weights[expert], out=target)
                else:
                    torch.addmm(biases[expert], block, weights[expert], out=target)
        return out
    outputs = [
        block @ weights[e] if biases is None else torch.addmm(biases[e], block, weights[e])
        for e, block in enumerate(blocks)
        if block.shape[0]
    ]
    return torch.cat(outputs) if outputs else rows.new_zeros(0, weight.shape[-1])


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
