"""The Hugging Face transformers Mixtral sparse block as a baseline of the layer benchmark.

``MixtralLayer(dim, experts, top_k, hidden, implementation)`` wraps ``MixtralSparseMoeBlock``
(a SwiGLU expert: gate+up ``2H x D`` and down ``D x H``; no aux loss) so that it takes the
benchmark's (N, D) tokens. ``implementation`` is transformers' experts backend (``"eager"``, its
default loop over experts; ``"grouped_mm"`` where the installed version has one; see
:func:`implementations`). Needs the optional ``transformers`` package; nothing downloads.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MixtralLayer", "equal_flops_hidden", "implementations"]


def equal_flops_hidden(dim: int, hidden: int | None = None) -> int:
    """SwiGLU width with the FLOPs of a ``dim -> hidden -> dim`` GELU FFN (hidden default 4 D):
    3 D H' = 2 D H, i.e. H' = 2 H / 3, rounded to a multiple of 8."""
    return max(8, round(2 * (hidden or 4 * dim) / 3 / 8) * 8)


def implementations() -> list[str]:
    """The experts backends the installed transformers offers: ``[]`` without transformers,
    ``["eager"]`` before the experts interface (v4), else eager plus grouped_mm when registered."""
    try:
        from transformers.models.mixtral import modeling_mixtral  # noqa: F401
    except ImportError:
        return []
    try:
        from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS
    except ImportError:
        return ["eager"]
    return ["eager", *(["grouped_mm"] if "grouped_mm" in ALL_EXPERTS_FUNCTIONS else [])]


class MixtralLayer(nn.Module):
    """``MixtralSparseMoeBlock`` on (N, D) tokens -> (N, D); weights N(0, 0.02) as transformers
    initialises them."""

    def __init__(self, dim: int, experts: int, top_k: int, *, hidden: int, implementation: str = "eager"):
        super().__init__()
        from transformers import MixtralConfig
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

        if implementation not in implementations():
            raise ValueError(
                f"experts implementation {implementation!r} not offered; have {implementations()}"
            )
        config = MixtralConfig(
            hidden_size=dim, intermediate_size=hidden, num_local_experts=experts, num_experts_per_tok=top_k
        )
        config._experts_implementation = implementation  # transformers' own switch (v5 experts interface)
        self.block = MixtralSparseMoeBlock(config)
        for parameter in self.block.parameters():
            nn.init.normal_(parameter, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x.unsqueeze(0))
        return (out[0] if isinstance(out, tuple) else out).squeeze(0)  # v4 returns (out, router logits)
