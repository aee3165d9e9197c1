"""MoFME: a Mixture of Feature-Modulated Experts (AAAI 2024), computed sparsely.

Per token x (the layer input, already normalised by the host block):

    h   = GELU(W_a x + b_a) * (W_b x + b_b)                 shared gated projection
    FM_e(h) = gamma_e(h) * h + beta_e(h)                    implicit expert e (FiLM)
    m   = sum over the k chosen e of w_e FM_e(h)            w from the router
    out = FFN(m)                                            one shared FFN

Modulation kinds:
  * ``"generator"`` (published, default): ``[gamma_e(h), beta_e(h)] = h @ G_e + c_e`` with
    G_e of shape (D, 2D); 2(D^2 + D) parameters per expert. Sparse cost (10 + 2k) D^2 per token.
  * ``"lowrank"``: the generator as a rank-r product, ``[gamma_e, beta_e] = (h @ U_e) @ V_e + c_e``
    with U_e (D, r), V_e (r, 2D), r = ``rank`` (default D / 8); 3 D r + 2D parameters per expert.
    Sparse cost (10 + 3 k r / D) D^2 per token: (10 + 0.375 k) D^2 at r = D / 8.
  * ``"static"``: gamma_e, beta_e are learned vectors; 2D parameters per expert and
    ``m = (sum w_e gamma_e) * h + sum w_e beta_e``, about 10 D^2 per token whatever E and k.
All start near the identity modulation (biases c_e = [1, 0]: gamma = 1, beta = 0 for static).
Costs are multiply-accumulates per token (gate 2 D^2, FFN 8 D^2 at H = 4D, the k chosen generators).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dispatch import (
    Assignments,
    dense_combine_weights,
    group_by_expert,
    grouped_linear,
    mix_rows,
    scatter_tokens,
    slot_weights,
    uses_grouped_mm,
)
from .ffn import FeedForward
from .routed import Dispatch, RouteBy, RoutedLayer
from .routers import RouterOutput, TopKRouter

__all__ = ["FeatureModulation", "GatedProjection", "MoFME"]

Modulation = Literal["generator", "lowrank", "static"]
MODULATIONS: tuple[str, ...] = ("generator", "lowrank", "static")


class GatedProjection(nn.Module):
    """``GELU(W_a x + b_a) * (W_b x + b_b)``, (..., D) -> (..., D); 2 D^2 + 2 D parameters."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * dim)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.proj(x).chunk(2, dim=-1)
        return F.gelu(gate) * value


class FeatureModulation(nn.Module):
    """E implicit experts as feature-wise linear modulations of h (module docstring).

    ``bias`` (E, 2D) holds each expert's [gamma, beta] offset c_e. ``"generator"``: ``weight``
    (E, D, 2D) maps h to [gamma, beta]; ``"lowrank"``: ``down`` (E, D, r) then ``up`` (E, r, 2D);
    ``"static"``: no map. Maps are initialised like ``nn.Linear`` (uniform, bound 1/sqrt(fan_in)).
    """

    def __init__(
        self, dim: int, num_experts: int, *, kind: Modulation = "generator", rank: int | None = None
    ) -> None:
        super().__init__()
        if kind not in MODULATIONS:
            raise ValueError(f"modulation must be one of {MODULATIONS}, got {kind!r}")
        if rank is not None and (kind != "lowrank" or not 1 <= rank <= dim):
            raise ValueError(f"rank is for modulation='lowrank', 1 <= rank <= dim={dim}; got {rank}")
        self.kind = kind
        self.dim = dim
        self.num_experts = num_experts
        self.rank = (rank or max(1, dim // 8)) if kind == "lowrank" else None
        identity = torch.cat([torch.ones(dim), torch.zeros(dim)])
        self.bias = nn.Parameter(identity.repeat(num_experts, 1))
        self.weight = self.down = self.up = None
        if kind == "generator":
            self.weight = _uniform(num_experts, dim, 2 * dim)
        elif kind == "lowrank":
            self.down, self.up = (
                _uniform(num_experts, dim, self.rank),
                _uniform(num_experts, self.rank, 2 * dim),
            )

    def _widths(self) -> tuple[int, ...]:
        return (self.dim, 2 * self.dim) + ((self.rank,) if self.rank else ())

    def grouped_rows(self, h: Tensor, routing: RouterOutput) -> tuple[Tensor, Assignments]:
        """h (N, D) -> the rows :meth:`generate` takes, (A', D) grouped by expert, and their grouping.
        Each row is its token's h times the assignment's combine weight: sum_e w_e map_e(h) =
        sum_e map_e(w_e h), so the weight scales the D-wide input, not the 2D-wide output."""
        on_device = uses_grouped_mm(h, *self._widths())
        groups = group_by_expert(routing.indices, self.num_experts, on_device=on_device)
        return h.index_select(0, groups.token) * slot_weights(groups, routing.weights).to(h.dtype), groups

    def generate(self, rows: Tensor, groups: Assignments) -> Tensor:
        """Rows grouped by expert (A, D) -> (A, 2D): each block through its expert's map."""
        if self.kind == "generator":
            return grouped_linear(rows, groups, self.weight)
        return grouped_linear(grouped_linear(rows, groups, self.down), groups, self.up)

    def generate_one(self, h: Tensor, expert: int) -> Tensor:
        """Expert ``expert``'s map applied to every row of h (N, D) -> (N, 2D)."""
        if self.kind == "generator":
            return h @ self.weight[expert].to(h.dtype)
        return (h @ self.down[expert].to(h.dtype)) @ self.up[expert].to(h.dtype)

    def forward(self, h: Tensor, routing: RouterOutput, *, sparse: bool) -> Tensor:
        """h (N, D) and the routing of its tokens -> m (N, D), the mixed modulated features."""
        film = mix_rows(self.bias, routing.indices, routing.weights).to(h.dtype)  # sum_e w_e c_e
        if self.kind != "static" and sparse:
            rows, groups = self.grouped_rows(h, routing)
            film = film + scatter_tokens(self.generate(rows, groups), groups, h.shape[0])
        elif self.kind != "static":
            dense = dense_combine_weights(routing.indices, routing.weights, self.num_experts).to(h.dtype)
            for expert in range(self.num_experts):
                film = film + dense[:, expert : expert + 1] * self.generate_one(h, expert)
        gamma, beta = film.chunk(2, dim=-1)
        return gamma * h + beta

    def extra_repr(self) -> str:
        rank = f", rank={self.rank}" if self.rank else ""
        return f"dim={self.dim}, num_experts={self.num_experts}, kind={self.kind!r}{rank}"


def _uniform(experts: int, fan_in: int, fan_out: int) -> nn.Parameter:
    """(E, fan_in, fan_out) stacked maps, uniform in +-1/sqrt(fan_in) like ``nn.Linear``."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(experts, fan_in, fan_out).uniform_(-bound, bound))


class MoFME(RoutedLayer):
    """Mixture of Feature-Modulated Experts; ``layer(x)`` with x (..., dim) -> :class:`MoEOutput`.

    Args:
        dim: token dimension D.
        num_experts: E implicit experts.
        top_k: k experts mixed per token.
        hidden_dim: hidden width of the shared FFN (default 4 D).
        router: ``"linear"`` (:class:`TopKRouter`), ``"uar"`` (:class:`UncertaintyAwareRouter`) or a
            router module built for this dim, num_experts and top_k.
        modulation: ``"generator"`` (published), ``"lowrank"`` or ``"static"``.
        modulation_rank: r of ``"lowrank"`` (default D / 8).
        dropout: dropout inside the shared FFN.
        dispatch: ``"sparse"`` (only the chosen experts) or ``"dense"`` (all experts, reference).
        route_by: ``"token"`` (each token routed, published) or ``"image"`` (each sample routed once
            on its mean token; see :class:`RoutedLayer`).
        router_kwargs: passed to the router (noise_std, balance_coef, z_coef, samples, ...).

    Parameters: (2 D^2 + 2 D) + (D E + E) + E * 2(D^2 + D) [generator], E (3 D r + 2 D)
    [lowrank] or E * 2D [static] + (2 D H + H + D).
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
        modulation_rank: int | None = None,
        dropout: float = 0.0,
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
        self.gate = GatedProjection(dim)
        self.modulation = FeatureModulation(dim, num_experts, kind=modulation, rank=modulation_rank)
        self.ffn = FeedForward(dim, hidden_dim, dropout=dropout, act_layer=act_layer)

    def compute(self, tokens: Tensor, routing: RouterOutput, *, sparse: bool) -> Tensor:
        return self.ffn(self.modulation(self.gate(tokens), routing, sparse=sparse))
