"""The self-describing return value shared by every FFN layer of the library."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["MoEOutput"]


class MoEOutput(NamedTuple):
    """Output of :class:`DenseFFN`, :class:`SparseMoE` and :class:`MoFME`.

    ``output`` has the shape of the layer input (..., dim); ``aux_loss`` is a scalar (zero for a
    dense layer) to add to the training loss; ``expert_indices`` and ``expert_weights`` are
    (..., k): the experts each token used and their combine weights (None for a dense layer);
    ``uncertainty`` is (..., k), the MC spread of the chosen probabilities (UaR in training only).
    """

    output: Tensor
    aux_loss: Tensor
    expert_indices: Tensor | None = None
    expert_weights: Tensor | None = None
    uncertainty: Tensor | None = None
