"""MoFME: a Mixture of Feature-Modulated Experts (AAAI 2024), computed sparsely.

Per token x (the layer input, already normalised by the host block):

    h   = GELU(W_a x + b_a) * (W_b x + b_b)                 shared gated projection
    FM_e(h) = gamma_e(h) * h + beta_e(h)                    implicit expert e (FiLM)
    m   = sum over the k chosen e of w_e FM_e(h)            w from the router
    out = FFN(m)                                            one shared FFN

Modulation kinds:
  * ``"generator"`` (published, default): ``[gamma_e(h), beta_e(h)] = h @ G_e + c_e`` with
    G_e of shape (D, 2D); 2(D^2 + D) parameters per expert. Sparse cost (10 + 2k) D^2 per token.
  * ``"static"``: gamma_e, beta_e are learned vectors; 2D parameters per expert and
    ``m = (sum w_e gamma_e) * h + sum w_e beta_e``, about 10 D^2 per token whatever E and k.
Both start as the identity modulation (gamma = 1, beta = 0 for static; generator biases 1 and 0).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dispatch import (
    dense_combine_weights,
    group_by_expert,
    grouped_linear,
    mix_rows,
    scatter_tokens,
    slot_weights,
)
from .ffn import FeedForward
from .routed import Dispatch, RoutedLayer
from .routers import RouterOutput, TopKRouter

__all__ = ["FeatureModulation", "GatedProjection", "MoFME"]

Modulation = Literal["generator", "static"]


class GatedProjection(nn.Module):
    """``GELU(W_a x + b_a) * (W_b x + b_b)``, (..., D) -> (..., D); 2 D^2 + 2 D parameters."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * dim)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.proj(x).chunk(2, dim=-1)
        return F.gelu(gate) * value


class FeatureModulation(nn.Module):
    """E implicit experts as feature-wise linear modulations of h.

    ``"generator"``: ``weight`` (E, D, 2D) and ``bias`` (E, 2D) map h to [gamma, beta].
    ``"static"``: ``bias`` (E, 2D) holds [gamma, beta] directly; ``weight`` is None.
    """

    def __init__(self, dim: int, num_experts: int, *, kind: Modulation = "generator") -> None:
        super().__init__()
        if kind not in ("generator", "static"):
            raise ValueError(f"modulation must be 'generator' or 'static', got {kind!r}")
        self.kind = kind
        self.dim = dim
        self.num_experts = num_experts
        identity = torch.cat([torch.ones(dim), torch.zeros(dim)])
        self.bias = nn.Parameter(identity.repeat(num_experts, 1))
        if kind == "generator":
            bound = 1.0 / math.sqrt(dim)  # nn.Linear's default range
            self.weight = nn.Parameter(torch.empty(num_experts, dim, 2 * dim).uniform_(-bound, bound))
        else:
            self.register_parameter("weight", None)

    def forward(self, h: Tensor, routing: RouterOutput, *, sparse: bool) -> Tensor:
        """h (N, D) and the routing of its tokens -> m (N, D), the mixed modulated features."""
        film = mix_rows(self.bias, routing.indices, routing.weights).to(h.dtype)  # sum_e w_e c_e
        if self.kind == "generator" and sparse:
            # sum_e w_e (h G_e) = sum_e (w_e h) G_e: the weight scales the D-wide input, not the output
            groups = group_by_expert(routing.indices, self.num_experts)
            rows = h.index_select(0, groups.token) * slot_weights(groups, routing.weights).to(h.dtype)
            film = film + scatter_tokens(grouped_linear(rows, groups.counts, self.weight), groups, h.shape[0])
        elif self.kind == "generator":
            dense = dense_combine_weights(routing.indices, routing.weights, self.num_experts).to(h.dtype)
            for expert in range(self.num_experts):
                film = film + dense[:, expert : expert + 1] * (h @ self.weight[expert])
        gamma, beta = film.chunk(2, dim=-1)
        return gamma * h + beta

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_experts={self.num_experts}, kind={self.kind!r}"


class MoFME(RoutedLayer):
    """Mixture of Feature-Modulated Experts; ``layer(x)`` with x (..., dim) -> :class:`MoEOutput`.

    Args:
        dim: token dimension D.
        num_experts: E implicit experts.
        top_k: k experts mixed per token.
        hidden_dim: hidden width of the shared FFN (default 4 D).
        router: ``"linear"`` (:class:`TopKRouter`), ``"uar"`` (:class:`UncertaintyAwareRouter`) or a
            router module built for this dim, num_experts and top_k.
        modulation: ``"generator"`` (published) or ``"static"``.
        dropout: dropout inside the shared FFN.
        dispatch: ``"sparse"`` (only the chosen experts) or ``"dense"`` (all experts, reference).
        router_kwargs: passed to the router (noise_std, balance_coef, z_coef, samples, ...).

    Parameters: (2 D^2 + 2 D) + (D E + E) + E * 2(D^2 + D) [generator] or E * 2D [static]
    + (2 D H + H + D).
    """

    def __init__(
        self,
        dim: int,
        num_experts: int,
        top_k: int,
        *,
        hidden_dim: int | None = None,
        router: str | TopKRouter = "linear",
        modulation: Modulation = "generator",
        dropout: float = 0.0,
        dispatch: Dispatch = "sparse",
        act_layer: type[nn.Module] = nn.GELU,
        router_kwargs: dict | None = None,
    ) -> None:
        super().__init__(
            dim, num_experts, top_k, router=router, router_kwargs=router_kwargs, dispatch=dispatch
        )
        self.gate = GatedProjection(dim)
        self.modulation = FeatureModulation(dim, num_experts, kind=modulation)
        self.ffn = FeedForward(dim, hidden_dim, dropout=dropout, act_layer=act_layer)

    def compute(self, tokens: Tensor, routing: RouterOutput, *, sparse: bool) -> Tensor:
        return self.ffn(self.modulation(self.gate(tokens), routing, sparse=sparse))
