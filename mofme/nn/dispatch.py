"""Sparse expert dispatch: group (token, expert) assignments by expert, run each expert once on
its own tokens, and combine the results back per token.

With N tokens and top-k routing there are A = N*k assignments. They are sorted by expert (one
stable argsort), so expert e owns a contiguous block of ``counts[e]`` rows; an expert with no
tokens costs nothing. Per-expert weights are stored stacked, shape (E, in, out).

Two ways to run the per-expert GEMMs (:func:`grouped_gemm_backend`):

* **grouped_mm** (default on CUDA for fp32 / bf16 / fp16 with 16-byte aligned widths): one
  ``torch.nn.functional.grouped_mm`` call per weight, forward and backward, with the group offsets
  computed on the device: no ``.tolist()`` / ``.item()``, no host synchronisation, static shapes
  (dropped assignments of a capacity limit stay in their block with combine weight 0).
* **loop** (the reference, and the default on CPU, for fp64 and unaligned widths): per-expert counts
  copied to the host, one GEMM per expert with tokens, every result and gradient written straight
  into one preallocated tensor.

The environment variable ``MOFME_GROUPED_GEMM`` (``auto`` | ``loop`` | ``grouped_mm``) sets the
backend a process starts with, e.g. ``MOFME_GROUPED_GEMM=loop mofme train ...`` on a GPU whose
``grouped_mm`` fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Assignments",
    "capacity_mask",
    "count_per_expert",
    "dense_combine_weights",
    "group_by_expert",
    "grouped_gemm_backend",
    "grouped_linear",
    "uses_grouped_mm",
]

Backend = Literal["auto", "loop", "grouped_mm"]
_GROUPED_MM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _checked(backend: str, source: str) -> Backend:
    if backend not in ("auto", "loop", "grouped_mm"):
        raise ValueError(f"{source} must be 'auto', 'loop' or 'grouped_mm', got {backend!r}")
    return backend  # type: ignore[return-value]


_backend: Backend = _checked(os.environ.get("MOFME_GROUPED_GEMM", "auto"), "MOFME_GROUPED_GEMM")


@contextmanager
def grouped_gemm_backend(backend: Backend) -> Iterator[None]:
    """Choose how the routed layers run their per-expert GEMMs inside the block (module docstring):
    ``"auto"`` (grouped_mm on CUDA where it applies, else the loop), ``"loop"``, or ``"grouped_mm"``
    (on any device, CPU included, wherever the dtype and widths allow it)."""
    global _backend
    previous, _backend = _backend, _checked(backend, "backend")
    try:
        yield
    finally:
        _backend = previous


def uses_grouped_mm(x: Tensor, *widths: int) -> bool:
    """Whether GEMMs on activations like ``x`` (in the autocast dtype, if autocast is on for its
    device) with the given row ``widths`` run as ``grouped_mm``: fp32 / bf16 / fp16, every width a
    multiple of 16 bytes, and the backend (see :func:`grouped_gemm_backend`) allows it."""
    if _backend == "loop" or not hasattr(F, "grouped_mm"):
        return False
    dtype = _compute_dtype(x)
    if dtype not in _GROUPED_MM_DTYPES or any(w * dtype.itemsize % 16 for w in widths):
        return False
    return _backend == "grouped_mm" or x.device.type == "cuda"


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a GEMM on ``x`` runs in: autocast's where it is on for x's device, else x's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class Assignments(NamedTuple):
    """The (token, expert) assignments of N tokens, grouped by expert.

    Loop path: only the kept assignments (A' rows), ``counts`` on the host. Device path
    (``grouped_mm``): all A = N k assignments, ``offsets`` / ``expert`` on the device, and ``kept``
    zeroes the combine weight of assignments beyond a capacity limit."""

    slot: Tensor  # (A',) position of each assignment in the flattened (N, k) routing
    token: Tensor  # (A',) token index of each assignment (slot // k)
    counts: list[int] | None  # loop path: (E,) assignments per expert, sums to A'; device path: None
    offsets: Tensor | None = None  # device path: (E,) int32 end row of each expert's block
    expert: Tensor | None = None  # device path: (A,) expert of each row, non-decreasing
    kept: Tensor | None = None  # device path with a capacity limit: (A,) bool, False where dropped


def capacity_mask(indices: Tensor, num_experts: int, capacity: int) -> Tensor:
    """(N, k) bool: True where an assignment is among the first ``capacity`` that its expert
    receives, first choices served first (GShard / ST-MoE): every token's first choice in token
    order, then every second choice, and so on. Static shapes, so it also exports."""
    by_rank = indices.t().reshape(-1)  # (k N,): choice 0 of every token, then choice 1, ...
    one_hot = indices.new_zeros(by_rank.shape[0], num_experts).scatter_(1, by_rank[:, None], 1)
    position = (one_hot.cumsum(0) * one_hot).sum(-1) - 1
    return (position < capacity).view(indices.shape[1], indices.shape[0]).t()


def count_per_expert(flat: Tensor, num_experts: int) -> Tensor:
    """(E,) int64 number of entries of the expert indices ``flat`` per expert; no host sync (unlike
    ``torch.bincount`` on CUDA), entries outside [0, E) are not allowed."""
    return flat.new_zeros(num_experts).scatter_add_(0, flat, torch.ones_like(flat))


def group_by_expert(
    indices: Tensor, num_experts: int, keep: Tensor | None = None, *, on_device: bool = False
) -> Assignments:
    """Sort the (N, k) expert ``indices`` by expert. Loop path: assignments where the (N, k) bool
    ``keep`` is False (see :func:`capacity_mask`) are dropped. ``on_device``: the grouped_mm path
    (no host sync; dropped assignments stay, flagged in ``kept``)."""
    top_k = indices.shape[-1]
    flat = indices.reshape(-1)
    if on_device:
        slot = torch.argsort(flat, stable=True)
        offsets = count_per_expert(flat, num_experts).cumsum(0).to(torch.int32)
        kept = None if keep is None else keep.reshape(-1)[slot]
        token = torch.div(slot, top_k, rounding_mode="floor")
        return Assignments(slot, token, None, offsets, flat[slot], kept)
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


def grouped_linear(rows: Tensor, groups: Assignments, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Per-expert affine map on rows grouped by expert.

    ``rows`` (A, in) with expert e's rows in the e-th block of ``groups``; ``weight`` (E, in, out);
    ``bias`` (E, out) or None. Returns (A, out): ``rows_e @ weight[e] + bias[e]`` block by block;
    experts without rows cost nothing (and get zero gradient). One ``grouped_mm`` on the device
    path, the per-expert loop otherwise (module docstring).
    """
    weight = weight.to(rows.dtype)  # under autocast the rows may be in lower precision
    bias = None if bias is None else bias.to(rows.dtype)
    if groups.counts is None:  # grouped_mm is not an autocast op everywhere: cast as mm would
        dtype = _compute_dtype(rows)
        rows, weight, bias = rows.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)
        out = F.grouped_mm(rows, weight, offs=groups.offsets)
        return out if bias is None else out + bias.index_select(0, groups.expert)
    return _GroupedLinear.apply(rows, weight, bias, groups.counts)


def slot_weights(groups: Assignments, weights: Tensor) -> Tensor:
    """(A', 1) combine weight of each assignment, in grouped order (0 where dropped); ``weights`` (N, k)."""
    grouped = weights.reshape(-1)[groups.slot]
    if groups.kept is not None:
        grouped = grouped * groups.kept.to(grouped.dtype)
    return grouped.unsqueeze(1)


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
