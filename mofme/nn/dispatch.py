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
from torch import Tensor

__all__ = ["Assignments", "combine", "dense_combine_weights", "group_by_expert", "grouped_linear"]


class Assignments(NamedTuple):
    """The kept (token, expert) assignments of N tokens, grouped by expert."""

    slot: Tensor  # (A',) position of each kept assignment in the flattened (N, k) routing
    token: Tensor  # (A',) token index of each kept assignment (slot // k)
    counts: list[int]  # (E,) kept assignments per expert; sums to A'
    num_slots: int  # N * k


def group_by_expert(indices: Tensor, num_experts: int, capacity: int | None = None) -> Assignments:
    """Sort the (N, k) expert ``indices`` by expert. With ``capacity``, each expert keeps only
    its first ``capacity`` assignments (in token order); the others are dropped."""
    top_k = indices.shape[-1]
    flat = indices.reshape(-1)
    slot = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=num_experts)
    if capacity is not None:
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(flat.numel(), device=flat.device) - starts.repeat_interleave(counts)
        slot = slot[rank < capacity]
        counts = counts.clamp(max=capacity)
    return Assignments(slot, torch.div(slot, top_k, rounding_mode="floor"), counts.tolist(), flat.numel())


def grouped_linear(rows: Tensor, counts: list[int], weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Per-expert affine map on rows grouped by expert.

    ``rows`` (A, in) with expert e's rows in the e-th block of ``counts``; ``weight`` (E, in, out);
    ``bias`` (E, out) or None. Returns (A, out): ``rows_e @ weight[e] + bias[e]`` block by block.
    """
    weights = weight.unbind(0)
    biases = bias.unbind(0) if bias is not None else None
    outputs = []
    for expert, block in enumerate(rows.split(counts)):
        if block.shape[0] == 0:
            continue
        if biases is None:
            outputs.append(block @ weights[expert])
        else:
            outputs.append(torch.addmm(biases[expert], block, weights[expert]))
    if not outputs:
        return rows.new_zeros(0, weight.shape[-1])
    return torch.cat(outputs)


def combine(values: Tensor, assignments: Assignments, weights: Tensor) -> Tensor:
    """Weighted sum per token of the expert outputs ``values`` (A', F), grouped as ``assignments``;
    ``weights`` (N, k) combine weights. Dropped assignments contribute zero. Returns (N, F)."""
    num_tokens, top_k = weights.shape
    per_slot = values.new_zeros(assignments.num_slots, values.shape[-1])
    per_slot = per_slot.index_copy(0, assignments.slot, values)
    mixed = torch.bmm(weights.unsqueeze(1).to(values.dtype), per_slot.view(num_tokens, top_k, -1))
    return mixed.squeeze(1)


def dense_combine_weights(indices: Tensor, weights: Tensor, num_experts: int) -> Tensor:
    """(N, E) combine weights with zeros at the experts a token did not choose (the published
    all-experts form)."""
    dense = weights.new_zeros(weights.shape[0], num_experts)
    return dense.scatter(1, indices, weights)
