"""CPU inference fast path: an optimised copy of a restorer for eval-mode forward passes on the CPU.

    fast = optimize_for_cpu_inference(model)      # a copy; ``model`` itself is not modified
    with torch.no_grad():
        fast(image).image                         # model(image).image to ~1e-6 (tested to 1e-4)

**Where.** Only what runs after the model's last routing decision is changed: the last routed
block's FFN (its router excepted), any later blocks, ``to_pixels`` and the convolutional tail, and
the per-pixel heads that only read the input (drop detector, presence gate); a model without routers
(dense FFNs) is changed throughout. A router picks its top k experts by comparing
probabilities, so rounding differences upstream of it (1e-7) swap nearly tied experts on a few tokens
of most real photos, and those tokens then differ by ~1e-3. Upstream of the last router the plain
modules run on bit-identical inputs, so every routing decision is the plain path's.

**What** (float32; each step measured side by side against the plain path, see
``python -m mofme.benchmarks.fastpath`` for the whole restoration):

* **convolutions channels-last**: ``nn.Conv2d`` weights stored NHWC, so oneDNN takes and returns
  channels-last maps with no layout reorder around each layer.
* **ResBlocks fused**: ``conv -> ReLU`` and ``conv -> + x`` each run as one oneDNN convolution with a
  post-op (:class:`FusedResBlock`).
* **linear layers through oneDNN** (:class:`PackedLinear`): the weight prepacked once, the bias added in
  the GEMM, and a Linear followed by an exact GELU inside an ``nn.Sequential`` (the FFNs) fused. The
  per-expert GEMMs (stacked weights) are left as they are.
* **unpatchify**: ``Restorer.to_pixels`` with its output rows permuted from (c, i, j) to (i, j, c), so
  the GEMM and one contiguous copy write the channels-last (N, 4C, H, W) map that the plain path's
  pixel shuffle builds with two strided copies (:class:`PixelUnpatch`).

Measured and left out (slower, no better, or not exact): ``torch.jit.trace`` + ``freeze`` +
``optimize_for_inference`` (traces the all-experts dense dispatch; no faster), ``torch.compile``
(needs a C++ compiler and about a minute of compilation, gained less), oneDNN for the per-expert GEMMs
(under 1% of a forward), prepacked convolution weights (no gain over channels-last), the attention
outside PyTorch's CPU flash kernel (slower), and any change before the last router (not exact).

The copy shares the parameters it keeps as they are and holds new tensors for the ones it re-lays
out; the original's parameters, strides and modes are never touched, so saving or training it later is
unaffected. The copy is for inference only: its fast modules refuse ``train()``, and it holds opaque
oneDNN tensors that cannot be saved or moved off the CPU.

:func:`inference_model` is what ``mofme restore``, ``mofme eval`` and the demo use: the copy for an
eval-mode :class:`~mofme.models.Restorer` in float32 on the CPU (where oneDNN's operators are
available), the model itself otherwise or with ``fast=False`` (``--no-fast``).
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mofme.models.restorer import ResBlock, Restorer
from mofme.models.strength import CalibratedRestorer
from mofme.nn.routers import TopKRouter

__all__ = [
    "FusedResBlock",
    "PackedLinear",
    "PixelUnpatch",
    "fast_path_available",
    "inference_model",
    "is_fast_path",
    "optimize_for_cpu_inference",
]

logger = logging.getLogger(__name__)

_MARK = "cpu_fast_path"  # set to True on every copy made by optimize_for_cpu_inference
_CL = torch.channels_last


class _InferenceOnly(nn.Module):
    """A fast-path module: eval mode only (``train()`` raises), CPU float32 only."""

    def train(self, mode: bool = True) -> _InferenceOnly:
        if mode:
            raise RuntimeError(
                f"{type(self).__name__} is part of a CPU inference fast-path copy; train the original model"
            )
        return super().train(False)


class PackedLinear(_InferenceOnly):
    """``F.linear(x, weight, bias)`` through oneDNN with the weight prepacked once; (..., in) -> (..., out).

    ``weight`` (out, in) and ``bias`` (out,) or None, as ``nn.Linear`` stores them (kept as given, shared,
    for code that reads them; the packed copy is ``packed``). ``activation="gelu"`` fuses the exact
    (erf) GELU into the GEMM."""

    def __init__(self, weight: Tensor, bias: Tensor | None, *, activation: str = "none") -> None:
        super().__init__()
        if activation not in ("none", "gelu"):
            raise ValueError(f"activation must be 'none' or 'gelu', got {activation!r}")
        self.out_features, self.in_features = weight.shape
        self.weight, self.bias = weight, bias
        self.activation = activation
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.detach()
        algorithm = "none" if self.activation == "gelu" else ""
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, bias, self.activation, [], algorithm)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"
        )


class PixelUnpatch(_InferenceOnly):
    """``Restorer.to_pixels`` with the pixel shuffle folded in: ``unpatchify(tokens (N, h w, D), (h, w))``
    -> channels-last features (N, C', h P, w P), C' = out_features / P^2, equal to
    ``pixel_shuffle(linear(tokens).transpose(1, 2).unflatten(2, grid), P)``.

    The output rows are stored in (i, j, c) order instead of the Linear's (c, i, j), so each token's
    GEMM row is P x P runs of C' contiguous channels, copied into place in one pass."""

    def __init__(self, linear: nn.Linear, *, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.channels = linear.out_features // patch_size**2
        if self.channels * patch_size**2 != linear.out_features:
            raise ValueError(f"out_features={linear.out_features} is not a multiple of P^2={patch_size**2}")
        rows = (self.channels, patch_size, patch_size)  # output rows (c, i, j) -> (i, j, c)
        weight = linear.weight.detach().unflatten(0, rows).permute(1, 2, 0, 3).flatten(0, 2).contiguous()
        bias = linear.bias
        if bias is not None:
            bias = bias.detach().view(rows).permute(1, 2, 0).flatten().contiguous()
        self.proj = PackedLinear(weight, bias)

    def unpatchify(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        (h, w), p, n = grid, self.patch_size, tokens.shape[0]
        rows = self.proj(tokens).view(n, h, w, p, p, self.channels)
        nhwc = rows.permute(0, 1, 3, 2, 4, 5).reshape(n, h * p, w * p, self.channels)
        return nhwc.permute(0, 3, 1, 2)

    def forward(self, tokens: Tensor) -> Tensor:
        """The Linear's own output, (..., D) -> (..., C' P^2) in (c, i, j) order."""
        p = self.patch_size
        return self.proj(tokens).unflatten(-1, (p, p, self.channels)).movedim(-1, -3).flatten(-3)


class FusedResBlock(_InferenceOnly):
    """:class:`~mofme.models.restorer.ResBlock` as two oneDNN convolutions on channels-last maps:
    ``conv1`` with a fused ReLU, ``conv2`` with the residual add fused; (N, C, H, W) -> same."""

    def __init__(self, block: ResBlock) -> None:
        super().__init__()
        self.convs = [block.body[0], block.body[2]]
        for conv in self.convs:
            if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
                raise ValueError("FusedResBlock needs zero padding given as numbers")
        self.weights = [conv.weight.detach().contiguous(memory_format=_CL) for conv in self.convs]

    def _args(self, index: int) -> tuple:
        conv = self.convs[index]
        bias = None if conv.bias is None else conv.bias.detach()
        return (
            self.weights[index],
            bias,
            list(conv.padding),
            list(conv.stride),
            list(conv.dilation),
            conv.groups,
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x.contiguous(memory_format=_CL)
        ops = torch.ops.mkldnn
        hidden = ops._convolution_pointwise(x, *self._args(0), "relu", [None], "")
        return ops._convolution_pointwise.binary(hidden, x, *self._args(1), "add", None, None, [], None)


def _swap(module: nn.Module, make: Callable[[nn.Module], nn.Module | None]) -> None:
    """Replace, depth first, every child for which ``make(child)`` returns a module (it then is not
    descended into); a Sequential's ``Linear, GELU`` pairs become one fused :class:`PackedLinear`."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Sequential):
            _fuse_gelu(child)
        new = make(child)
        if new is not None:
            setattr(module, name, new)
        else:
            _swap(child, make)


def _fuse_gelu(sequential: nn.Sequential) -> None:
    """``Linear`` directly followed by an exact ``GELU``: a fused PackedLinear, then an Identity."""
    layers = list(sequential)
    for index, (layer, after) in enumerate(pairwise(layers)):
        if type(layer) is nn.Linear and type(after) is nn.GELU and after.approximate == "none":
            sequential[index] = PackedLinear(layer.weight, layer.bias, activation="gelu")
            sequential[index + 1] = nn.Identity()


def _fast_module(module: nn.Module) -> nn.Module | None:
    """The fast replacement of one module (None: keep it and look inside)."""
    if isinstance(module, TopKRouter):
        return module  # routing logits stay on the plain float32 path
    if type(module) is ResBlock:
        return FusedResBlock(module)
    if type(module) is nn.Linear:
        return PackedLinear(module.weight, module.bias)
    if type(module) is nn.Conv2d:
        module.weight = nn.Parameter(
            module.weight.detach().contiguous(memory_format=_CL), requires_grad=False
        )
        return module
    return None


def optimize_for_cpu_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` (float32, on the CPU) with the fast path's modules (module
    docstring); ``model`` is left exactly as it was. A copy already made is returned as it is."""
    if is_fast_path(model):
        return model
    if model.training:
        raise ValueError("the CPU fast path is for eval mode: call model.eval() first")
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.device.type != "cpu" or (tensor.is_floating_point() and tensor.dtype != torch.float32):
            raise ValueError(
                f"the CPU fast path takes float32 models on the CPU, got {tensor.dtype} on {tensor.device}"
            )
    if not fast_path_available():
        raise RuntimeError("this PyTorch build lacks the oneDNN operators the CPU fast path uses")
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    fast = copy.deepcopy(model, memo=shared)  # new modules around the same parameter tensors
    if isinstance(fast, Restorer):
        fast.to_pixels = PixelUnpatch(fast.to_pixels, patch_size=fast.patch_size)
    for part in _after_routing(fast) + _beside_routing(fast):
        _swap(part, _fast_module)
    setattr(fast, _MARK, True)
    return fast


def _after_routing(model: nn.Module) -> list[nn.Module]:
    """The parts of ``model`` that run after its last routing decision (all of it without routers):
    routing picks experts by comparing probabilities, so a rounding change upstream of a router could
    swap a nearly tied expert and change a token's output by far more than the rounding itself."""
    if not _has_router(model):
        return [model]
    if not isinstance(model, Restorer):
        raise ValueError(f"the CPU fast path does not know the order of a routed {type(model).__name__}")
    last = max(i for i, block in enumerate(model.blocks) if _has_router(block))
    return [model.blocks[last].ffn, *model.blocks[last + 1 :], model.to_pixels, model.tail]


def _beside_routing(model: nn.Module) -> list[nn.Module]:
    """The per-pixel heads of a routed :class:`~mofme.models.Restorer` that read only its input
    (drop detector, presence gate): no router sees their outputs, so their rounding changes nothing
    upstream of a routing decision."""
    if not isinstance(model, Restorer) or not _has_router(model):
        return []  # a model without routers is changed throughout already
    return model._pixel_heads()


def _has_router(module: nn.Module) -> bool:
    return any(isinstance(m, TopKRouter) for m in module.modules())


def is_fast_path(model: nn.Module) -> bool:
    """Whether ``model`` is a copy made by :func:`optimize_for_cpu_inference`."""
    return bool(getattr(model, _MARK, False))


@functools.cache
def fast_path_available() -> bool:
    """Whether this PyTorch build has the oneDNN operators used here and they give the plain results
    (a tiny probe, run once per process; it leaves the global random state alone)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            linear, x = nn.Linear(8, 4), torch.randn(3, 8)
            block, image = ResBlock(4).eval(), torch.randn(1, 4, 5, 6)
            packed = PackedLinear(linear.weight, linear.bias, activation="gelu")
            ok = torch.allclose(packed(x), F.gelu(linear(x)), atol=1e-5)
            return ok and torch.allclose(FusedResBlock(block)(image), block(image), atol=1e-5)
    except (RuntimeError, AttributeError, NotImplementedError) as error:
        logger.debug("CPU fast path unavailable: %s", error)
        return False


def inference_model(model: nn.Module, *, device: torch.device, fast: bool = True) -> nn.Module:
    """The module to run ``model``'s eval-mode inference with on ``device``: its fast-path copy for a
    float32 :class:`~mofme.models.Restorer` (or of a :class:`~mofme.models.CalibratedRestorer`'s base) in
    eval mode on the CPU when ``fast`` (and oneDNN is
    there), else ``model`` itself. Call it with the model already in eval mode (e.g. inside
    :func:`mofme.infer.restore.eval_mode`)."""
    if not fast or is_fast_path(model):
        return model
    if isinstance(model, CalibratedRestorer):  # the base runs fast; the strength head is tiny
        base = inference_model(model.base, device=device, fast=fast)
        shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
        return model if base is model.base else copy.deepcopy(model, memo={**shared, id(model.base): base})
    float32 = all(p.dtype == torch.float32 for p in model.parameters() if p.is_floating_point())
    eligible = isinstance(model, Restorer) and not model.training and float32
    if not (eligible and torch.device(device).type == "cpu" and fast_path_available()):
        return model
    logger.info("CPU inference fast path on (oneDNN, channels-last); fast=False / --no-fast turns it off")
    return optimize_for_cpu_inference(model)
