"""What every routed layer (SparseMoE, MoFME) shares: flattening tokens, routing, choosing the
sparse or the dense (reference / export) computation, and recording the auxiliary loss."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .output import MoEOutput
from .routers import RouterOutput, TopKRouter, build_router

__all__ = ["Dispatch", "RouteBy", "RoutedLayer", "aux_loss", "routing_probs"]

Dispatch = Literal["sparse", "dense"]
RouteBy = Literal["token", "image"]


def _static_shapes_required() -> bool:
    """True while exporting or tracing, where data-dependent expert groups cannot be used."""
    return bool(
        torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or (hasattr(torch.compiler, "is_exporting") and torch.compiler.is_exporting())
    )


class RoutedLayer(nn.Module):
    """Base of the routed layers: ``forward(x)`` with x (..., dim) returns a :class:`MoEOutput`.

    ``dispatch="sparse"`` computes only the k chosen experts per token (grouped by expert);
    ``dispatch="dense"`` computes every expert for every token, with zero weight for the ones not
    chosen (the published computation; the reference for tests and benchmarks). Exporting and
    tracing always use the dense form, whose shapes do not depend on the data.
    The aux loss of the last forward is kept in ``last_aux_loss`` for :func:`aux_loss`, its routing
    probabilities, (..., E) in the input's leading shape, in ``last_probs`` for :func:`routing_probs`.

    ``router`` is a name (``"linear"``, ``"uar"``; built with ``router_kwargs``) or a router module
    (a :class:`TopKRouter` or subclass) for this layer's ``dim``, ``num_experts`` and ``top_k``.

    ``route_by="token"`` (default, published) routes every token on its own; ``route_by="image"``
    routes each sample of x (B, ..., dim) once, on the mean of its tokens, and every token of the
    sample uses that choice (the aux losses are then taken over samples; a 2-D x is one token per
    sample).
    """

    def __init__(
        self,
        dim: int,
        num_experts: int,
        top_k: int,
        *,
        router: str | TopKRouter = "linear",
        router_kwargs: dict | None = None,
        dispatch: Dispatch = "sparse",
        route_by: RouteBy = "token",
    ) -> None:
        super().__init__()
        if dispatch not in ("sparse", "dense"):
            raise ValueError(f"dispatch must be 'sparse' or 'dense', got {dispatch!r}")
        if route_by not in ("token", "image"):
            raise ValueError(f"route_by must be 'token' or 'image', got {route_by!r}")
        self.route_by = route_by
        self.dim = dim
        self.num_experts = num_experts
        self.top_k = top_k
        self.dispatch = dispatch
        self.router: TopKRouter = _router(
            router, router_kwargs, dim=dim, num_experts=num_experts, top_k=top_k
        )
        self.last_aux_loss: Tensor | None = None
        self.last_probs: Tensor | None = None

    def forward(self, x: Tensor) -> MoEOutput:
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected last dimension {self.dim}, got input of shape {tuple(x.shape)}")
        tokens = x.reshape(-1, self.dim)
        routing = self.router(tokens) if self.route_by == "token" else self._route_images(x)
        static = _static_shapes_required()
        out = self.compute(tokens, routing, sparse=self.dispatch == "sparse" and not static)
        lead = x.shape[:-1]
        if not static:  # an exported graph has no module state to write to
            self.last_aux_loss = routing.aux_loss
            self.last_probs = routing.probs.reshape(*lead, -1)
        uncertainty = None if routing.uncertainty is None else routing.uncertainty.reshape(*lead, -1)
        return MoEOutput(
            out.reshape(x.shape),
            routing.aux_loss,
            routing.indices.reshape(*lead, -1),
            routing.weights.reshape(*lead, -1),
            uncertainty,
        )

    def _route_images(self, x: Tensor) -> RouterOutput:
        """One routing decision per sample of x (B, ..., dim), on its mean token, repeated for
        each of its tokens: indices, weights, probs and uncertainty (B * T, ...). A 2-D x (N, dim)
        is N samples of one token (the same as routing by token)."""
        samples = x.reshape(x.shape[0], -1, self.dim) if x.dim() > 2 else x.unsqueeze(1)  # (B, T, dim)
        decision = self.router(samples.mean(dim=1))
        per_token = samples.shape[1]

        def repeat(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.repeat_interleave(per_token, dim=0)

        return decision._replace(
            indices=repeat(decision.indices),
            weights=repeat(decision.weights),
            probs=repeat(decision.probs),
            uncertainty=repeat(decision.uncertainty),
        )

    def __getstate__(self) -> dict:
        # the recorded tensors belong to the last forward's graph: copies and pickles start without them
        state = super().__getstate__()
        return {**state, "last_aux_loss": None, "last_probs": None}

    def compute(self, tokens: Tensor, routing: RouterOutput, *, sparse: bool) -> Tensor:
        """(N, dim) tokens and their routing -> (N, dim) layer output."""
        raise NotImplementedError


def _router(
    router: str | TopKRouter, router_kwargs: dict | None, *, dim: int, num_experts: int, top_k: int
) -> TopKRouter:
    """The router a layer was given by name, or the module itself after checking its shape."""
    if isinstance(router, str):
        return build_router(router, dim=dim, num_experts=num_experts, top_k=top_k, **(router_kwargs or {}))
    if not isinstance(router, TopKRouter):
        raise TypeError(f"router must be a name or a TopKRouter module, got {type(router).__name__}")
    if router_kwargs:
        raise ValueError("router_kwargs apply to a router given by name; configure the module instead")
    got = (router.proj.in_features, router.num_experts, router.top_k)
    if got != (dim, num_experts, top_k):
        raise ValueError(
            f"the router module has (dim, num_experts, top_k) = {got}, the layer {(dim, num_experts, top_k)}"
        )
    return router


def aux_loss(model: nn.Module) -> Tensor:
    """Sum of the auxiliary losses that the routed layers of ``model`` recorded in their last
    forward (a zero scalar if there are none)."""
    losses = [
        m.last_aux_loss for m in model.modules() if isinstance(m, RoutedLayer) and m.last_aux_loss is not None
    ]
    if not losses:
        param = next(model.parameters(), None)
        return torch.zeros((), device=None if param is None else param.device)
    return torch.stack([loss.float() for loss in losses]).sum()


def routing_probs(model: nn.Module) -> list[Tensor]:
    """The routing probabilities each routed layer of ``model`` recorded in its last forward,
    (..., E) in the leading shape of that layer's input, in module order."""
    return [m.last_probs for m in model.modules() if isinstance(m, RoutedLayer) and m.last_probs is not None]
