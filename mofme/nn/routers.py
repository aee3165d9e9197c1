"""Top-k routers: the linear router and the Uncertainty-aware Router (UaR).

Shapes: a router takes tokens ``x`` of shape (N, dim) and returns a :class:`RouterOutput` whose
``indices`` and ``weights`` are (N, k): the k experts chosen for each token and their combine
weights. Routing probabilities are computed in float32 whatever the input dtype.

Auxiliary losses (both returned unscaled and also summed, with their coefficients, into
``aux_loss``):

* load balancing (Switch Transformer, Fedus et al. 2021): ``E * sum_e f_e * P_e`` with ``f_e`` the
  fraction of the N*k assignments sent to expert e and ``P_e`` the mean routing probability of
  expert e. It equals 1 for perfectly uniform routing and grows to E when one expert takes all.
  Default coefficient 1e-2 (Switch).
* router z-loss (ST-MoE, Zoph et al. 2022): ``mean(logsumexp(logits)^2)``, which keeps logits
  small. Default coefficient 1e-3 (ST-MoE).

Signals that need labels the router does not see (the task-expert mutual information of
Mod-Squad, expert groups per label) belong to a study, not to the layer: :mod:`mofme.studies.losses`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dispatch import count_per_expert

__all__ = [
    "ROUTERS",
    "RouterOutput",
    "TopKRouter",
    "UncertaintyAwareRouter",
    "build_router",
    "combine_weights",
    "load_balancing_loss",
    "router_z_loss",
]

_TINY = 1e-12


class RouterOutput(NamedTuple):
    """What a router decides for N tokens."""

    indices: Tensor  # (N, k) int64: chosen experts, by decreasing probability
    weights: Tensor  # (N, k): combine weights of the chosen experts
    probs: Tensor  # (N, E) float32: routing probabilities (the MC mean for UaR in training)
    aux_loss: Tensor  # scalar: balance_coef * balance_loss + z_coef * z_loss
    balance_loss: Tensor  # scalar, unscaled
    z_loss: Tensor  # scalar, unscaled
    uncertainty: Tensor | None = None  # (N, k): std of the chosen probabilities across MC samples


def load_balancing_loss(probs: Tensor, indices: Tensor, num_experts: int) -> Tensor:
    """Switch load-balancing loss ``E * sum_e f_e P_e``; 1 for uniform routing.

    ``probs`` (N, E) routing probabilities; ``indices`` (N, k) chosen experts.
    """
    counts = count_per_expert(indices.reshape(-1), num_experts).to(probs.dtype)
    fraction = counts / max(indices.numel(), 1)
    return num_experts * torch.sum(fraction * probs.mean(dim=0))


def router_z_loss(logits: Tensor) -> Tensor:
    """ST-MoE router z-loss ``mean(logsumexp(logits)^2)`` over all leading dims."""
    return torch.logsumexp(logits, dim=-1).square().mean()


def _at_least_float32(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def combine_weights(top: Tensor) -> Tensor:
    """Combine weights from the (N, k) chosen probabilities: renormalised over the k chosen experts
    for k >= 2; for k = 1 the probability itself (Switch Transformer), since renormalising one weight
    makes it exactly 1 and leaves the router without gradient from the task loss."""
    if top.shape[-1] == 1:
        return top
    # the best expert has probability >= 1/E, so the sum is positive; the clamp guards underflow
    return top / top.sum(dim=-1, keepdim=True).clamp_min(_TINY)


class TopKRouter(nn.Module):
    """Linear router with top-k selection; weights renormalised over the k chosen experts
    (k = 1: the chosen probability itself, see :func:`combine_weights`).

    The router's matmul runs in float32 even under autocast (Switch's selective precision): routing
    decisions do not flip with the precision of the rest of the network. The z-loss is computed on
    the logits before the training noise.

    Args:
        dim: token dimension D.
        num_experts: E.
        top_k: k, 1 <= k <= E.
        noise_std: std of Gaussian noise added to the logits in training (noisy top-k); 0 disables.
        balance_coef: coefficient of the load-balancing loss in ``aux_loss``.
        z_coef: coefficient of the router z-loss in ``aux_loss``.
    """

    def __init__(
        self,
        dim: int,
        num_experts: int,
        top_k: int,
        *,
        noise_std: float = 0.0,
        balance_coef: float = 1e-2,
        z_coef: float = 1e-3,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        self.num_experts = num_experts
        self.top_k = top_k
        self.noise_std = noise_std
        self.balance_coef = balance_coef
        self.z_coef = z_coef
        self.proj = nn.Linear(dim, num_experts)

    def logits(self, x: Tensor) -> Tensor:
        """Router logits in float32, (..., E), also under autocast."""
        dtype = _at_least_float32(x)
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(x.to(dtype), self.proj.weight.to(dtype), self.proj.bias.to(dtype)).float()

    def forward(self, x: Tensor) -> RouterOutput:
        logits = self.logits(x)
        noisy = logits
        if self.training and self.noise_std > 0:
            noisy = logits + torch.randn_like(logits) * self.noise_std
        probs = noisy.softmax(dim=-1)
        top, indices = probs.topk(self.top_k, dim=-1)
        return self._output(logits, probs, indices, combine_weights(top).to(x.dtype))

    def _output(
        self,
        logits: Tensor,
        probs: Tensor,
        indices: Tensor,
        weights: Tensor,
        uncertainty: Tensor | None = None,
    ) -> RouterOutput:
        balance = load_balancing_loss(probs, indices, self.num_experts)
        z = router_z_loss(logits)
        aux = self.balance_coef * balance + self.z_coef * z
        return RouterOutput(indices, weights, probs, aux, balance, z, uncertainty)

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, top_k={self.top_k}, noise_std={self.noise_std}"


Calibration = Literal["shrinkage", "whitening", "none"]


class UncertaintyAwareRouter(TopKRouter):
    """Uncertainty-aware Router (UaR): Monte-Carlo dropout on the router, calibrated weights.

    Training, for each token x (dropout rate p, M samples, all M passes in one batched matmul):

    1. ``l_m = W drop_m(x) + b`` and ``P_m = softmax(l_m)`` for m = 1..M (inverted dropout, so
       E[l_m] = W x + b). Each pass draws one dropout mask over the D input units, shared by
       the tokens of the pass (one sampled router per pass, Gal & Ghahramani's MC dropout), so
       the M passes cost one (N, D) x (D, M E) matmul and M x D random numbers.
    2. ``mu = mean_m P_m`` and ``var = var_m P_m`` (unbiased), per expert.
    3. The k experts with the largest ``mu`` are chosen (selection by the MC mean, not by one
       noisy pass).
    4. ``calibration="shrinkage"`` (default): each chosen expert's weight is shrunk by its
       signal-to-noise ratio, ``w_e = mu_e * mu_e^2 / (mu_e^2 + strength * var_e)`` (a Wiener /
       James-Stein factor in [0, 1]), then renormalised over the k chosen experts. An expert whose
       probability is unstable under dropout gets less weight; gradients flow through ``mu`` and
       ``var``, so the router is also trained to be stable. The chosen expert with the largest
       ``mu`` has ``mu >= 1/E`` and ``var <= 1``, so its factor is bounded away from 0: the weights
       are finite for every finite input.
       ``calibration="whitening"`` is the published covariance form, repaired: per token the
       E x E covariance C of the samples (+ 1e-5 I), ``d_m = C^-1 (P_m - mu)`` normalised to unit
       length, weights = mean_m d_m at the chosen experts (bounded in [-1, 1], not renormalised,
       as published). It solves an E x E system per token: for comparison only.
       ``calibration="none"``: the MC mean itself, renormalised over the chosen experts.
       With k = 1 the shrunk (or plain) mean is used without renormalising (see
       :func:`combine_weights`).

    ``uncertainty`` (reported, not used by the weights) is the standard deviation of the chosen
    probabilities across the M samples; its gradient is zero where the spread is 0 (not NaN).
    The MC dropout is the router's only noise: ``noise_std`` is not accepted.

    Evaluation: one deterministic pass without dropout (the standard weight-scaling
    approximation of the MC mean) and no variance, i.e. exactly :class:`TopKRouter`: deterministic
    and no extra cost at inference. With ``calibration="whitening"`` this is a different rule from
    training: the whitened training weights are signed and not normalised (the published form; on
    average they sum to about 0), while evaluation uses renormalised probabilities, which the
    whitening cannot give without samples. Use it to compare with the publication, not to ship.

    Args (beyond :class:`TopKRouter`):
        samples: M >= 2 stochastic passes in training.
        dropout: p, dropout rate on the router input in those passes.
        calibration: "shrinkage" | "whitening" | "none".
        strength: lambda, how strongly variance shrinks a weight (shrinkage only).
    """

    def __init__(
        self,
        dim: int,
        num_experts: int,
        top_k: int,
        *,
        samples: int = 4,
        dropout: float = 0.1,
        calibration: Calibration = "shrinkage",
        strength: float = 1.0,
        balance_coef: float = 1e-2,
        z_coef: float = 1e-3,
    ) -> None:
        super().__init__(dim, num_experts, top_k, balance_coef=balance_coef, z_coef=z_coef)
        if samples < 2:
            raise ValueError(f"samples must be >= 2 to estimate a spread, got {samples}")
        if not 0.0 < dropout < 1.0:
            raise ValueError(f"dropout must be in (0, 1), got {dropout}")
        if calibration not in ("shrinkage", "whitening", "none"):
            raise ValueError(f"unknown calibration {calibration!r}")
        self.samples = samples
        self.dropout = dropout
        self.calibration = calibration
        self.strength = strength

    def forward(self, x: Tensor) -> RouterOutput:
        if not self.training:
            return super().forward(x)
        logits = self._sampled_logits(x)  # (M, N, E)
        sample_probs = logits.softmax(dim=-1)
        mean = sample_probs.mean(dim=0)
        # unbiased variance over the M samples (written out: torch.var over the leading dim is slow on CPU)
        var = (sample_probs - mean).square().sum(dim=0) / (self.samples - 1)
        mu, indices = mean.topk(self.top_k, dim=-1)
        spread = var.gather(-1, indices)
        if self.calibration == "whitening":
            weights = _whitened_weights(sample_probs, mean).gather(-1, indices)
        else:
            if self.calibration == "shrinkage":
                square = mu.square()
                mu = mu * square / (square + self.strength * spread).clamp_min(_TINY)
            weights = combine_weights(mu)
        # clamp: sqrt has an infinite derivative at 0, which would turn a zero spread into NaN gradients
        return self._output(logits, mean, indices, weights.to(x.dtype), spread.clamp_min(_TINY).sqrt())

    def _sampled_logits(self, x: Tensor) -> Tensor:
        """(M, N, E) float32 logits of M routers sampled by dropping input units (rows of W^T).

        One dropout draw per pass, shared by the pass's tokens (one sampled network per pass, as
        in Gal & Ghahramani's MC dropout): the M passes are one (N, D) x (D, M E) matmul and only
        M x D random numbers are drawn.
        """
        keep = 1.0 - self.dropout
        with torch.autocast(x.device.type, enabled=False):
            return self._masked_logits(x.to(_at_least_float32(x)), keep).float()

    def _masked_logits(self, x: Tensor, keep: float) -> Tensor:
        masks = torch.bernoulli(torch.full((self.samples, x.shape[-1]), keep, device=x.device)) / keep
        weight = self.proj.weight.t().to(x.dtype)  # (D, E)
        sampled = (
            (masks.to(weight.dtype).unsqueeze(-1) * weight).permute(1, 0, 2).reshape(weight.shape[0], -1)
        )
        logits = torch.addmm(self.proj.bias.to(x.dtype).repeat(self.samples), x, sampled)  # (N, M E)
        return logits.view(x.shape[0], self.samples, -1).transpose(0, 1)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, samples={self.samples}, dropout={self.dropout}, "
            f"calibration={self.calibration!r}, strength={self.strength}"
        )


def _whitened_weights(sample_probs: Tensor, mean: Tensor, eps: float = 1e-5) -> Tensor:
    """The published covariance form: mean over samples of unit-normalised ``C^-1 (P_m - mu)``.

    ``sample_probs`` (M, N, E), ``mean`` (N, E) -> (N, E), each entry in [-1, 1].
    """
    samples, _, experts = sample_probs.shape
    centred = (sample_probs - mean).permute(1, 2, 0)  # (N, E, M)
    cov = centred @ centred.transpose(1, 2) / (samples - 1)
    cov = cov + eps * torch.eye(experts, device=cov.device, dtype=cov.dtype)
    solved = torch.linalg.solve(cov, centred)  # (N, E, M)
    solved = solved / (solved.norm(dim=1, keepdim=True) + eps)
    return solved.mean(dim=-1)


ROUTERS: dict[str, type[TopKRouter]] = {"linear": TopKRouter, "uar": UncertaintyAwareRouter}


def build_router(kind: str, *, dim: int, num_experts: int, top_k: int, **kwargs) -> TopKRouter:
    """Router by name: ``"linear"`` (:class:`TopKRouter`) or ``"uar"`` (:class:`UncertaintyAwareRouter`)."""
    if kind not in ROUTERS:
        raise ValueError(f"unknown router {kind!r}; choose from {sorted(ROUTERS)}")
    return ROUTERS[kind](dim, num_experts, top_k, **kwargs)
