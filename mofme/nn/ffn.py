"""The plain transformer feed-forward network, as a building block and as a layer."""

from __future__ import annotations

from torch import Tensor, nn

from .output import MoEOutput

__all__ = ["DenseFFN", "FeedForward"]


class FeedForward(nn.Sequential):
    """``Linear(dim, hidden) - act - Dropout - Linear(hidden, dim) - Dropout``; (..., dim) -> (..., dim).

    Parameters: 2 * dim * hidden + hidden + dim (8 D^2 + 5 D for hidden = 4 D).
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int | None = None,
        *,
        dropout: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        hidden_dim = hidden_dim or 4 * dim
        super().__init__(
            nn.Linear(dim, hidden_dim),
            act_layer(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, dim),
            nn.Dropout(dropout),
        )


class DenseFFN(nn.Module):
    """The dense baseline with the layer interface: ``layer(x).output`` is ``FeedForward(x)``,
    ``aux_loss`` is zero and there is no routing."""

    def __init__(
        self,
        dim: int,
        *,
        hidden_dim: int | None = None,
        dropout: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.ffn = FeedForward(dim, hidden_dim, dropout=dropout, act_layer=act_layer)

    def forward(self, x: Tensor) -> MoEOutput:
        return MoEOutput(self.ffn(x), x.new_zeros(()))
