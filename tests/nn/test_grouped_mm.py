"""The grouped_mm path of the sparse dispatch (one grouped GEMM per weight, offsets on the device)
against the per-expert loop and the dense all-experts reference, on every routed variant; the CUDA
checks (no host sync, bf16 on the GPU) skip without a GPU."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from mofme.nn import dispatch
from mofme.nn.dispatch import grouped_gemm_backend, uses_grouped_mm

from .variants import DIM, ROUTED, build

pytestmark = pytest.mark.skipif(not hasattr(torch.nn.functional, "grouped_mm"), reason="no grouped_mm")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _run(layer, x: torch.Tensor, backend: str, *, dispatch_kind: str = "sparse"):
    """Output, input gradient and parameter gradients of one forward / backward."""
    layer = copy.deepcopy(layer)
    layer.dispatch = dispatch_kind
    torch.manual_seed(1)  # the same MC-dropout / router-noise draws for every run
    inp = x.clone().requires_grad_(True)
    with grouped_gemm_backend(backend):
        out = layer(inp)
        (out.output.float().square().sum() + out.aux_loss).backward()
    return out, inp.grad, {n: p.grad for n, p in layer.named_parameters()}


def _assert_same(a, b, *, atol: float) -> None:
    (out_a, gx_a, g_a), (out_b, gx_b, g_b) = a, b
    assert torch.equal(out_a.expert_indices, out_b.expert_indices)
    torch.testing.assert_close(out_a.output, out_b.output, rtol=0, atol=atol)
    torch.testing.assert_close(gx_a, gx_b, rtol=0, atol=atol)
    for name, grad in g_a.items():
        assert grad is not None and g_b[name] is not None, name
        torch.testing.assert_close(grad, g_b[name], rtol=0, atol=atol, msg=name)


@pytest.fixture
def grouped_calls(monkeypatch):
    """Counts the grouped_mm calls, so that a test knows the grouped path really ran."""
    calls = []
    real = torch.nn.functional.grouped_mm

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(dispatch.F, "grouped_mm", counting)
    return calls


@pytest.mark.parametrize("name", ROUTED)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_grouped_mm_equals_the_loop_and_the_dense_reference(name, training, grouped_calls):
    layer = build(name).train(training)
    x = torch.randn(3, 7, DIM)
    grouped = _run(layer, x, "grouped_mm")
    modulation = getattr(layer, "modulation", None)  # None: SparseMoE
    # static modulation has no per-expert GEMM; rank D / 8 = 2 fp32 values is 8 bytes: the loop
    expected = modulation is None or (modulation.kind != "static" and (modulation.rank or 4) % 4 == 0)
    assert bool(grouped_calls) == expected
    _assert_same(grouped, _run(layer, x, "loop"), atol=1e-5)
    _assert_same(grouped, _run(layer, x, "loop", dispatch_kind="dense"), atol=1e-5)


def test_an_expert_without_tokens_gets_zero_gradient_on_the_grouped_path(grouped_calls):
    layer = build("mofme-lowrank-linear")
    with torch.no_grad():
        layer.router.proj.bias[0] = -1e4  # expert 0 is never chosen
    out, _, grads = _run(layer, torch.randn(20, DIM), "grouped_mm")
    assert grouped_calls and (out.expert_indices != 0).all()
    for name in ("modulation.down", "modulation.up"):
        assert not grads[name][0].abs().any() and grads[name][1:].abs().any()


def test_capacity_drops_the_same_assignments_on_both_paths(grouped_calls):
    layer = build("moe-capacity")
    x = torch.randn(40, DIM)
    _assert_same(_run(layer, x, "grouped_mm"), _run(layer, x, "loop"), atol=1e-5)
    assert grouped_calls
    # the dropped assignments exist (the capacity binds) and contribute nothing
    keep = layer.keep_mask(layer(x).expert_indices.reshape(-1, 2))
    assert not keep.all()


@pytest.mark.parametrize("name", ["moe-linear", "mofme-generator-uar", "mofme-lowrank-linear"])
def test_autocast_bf16_on_the_grouped_path_stays_close_to_fp32(name, grouped_calls):
    layer = build(name, **({"modulation_rank": 8} if "lowrank" in name else {})).eval()  # 16 bytes
    x = torch.randn(4, 9, DIM)
    reference = layer(x).output
    with grouped_gemm_backend("grouped_mm"), torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x).output
    assert grouped_calls and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05)


def test_the_backend_falls_back_to_the_loop_where_grouped_mm_does_not_apply():
    x32, x64 = torch.randn(4, 16), torch.randn(4, 16, dtype=torch.float64)
    with grouped_gemm_backend("grouped_mm"):
        assert uses_grouped_mm(x32, 16, 32)
        assert not uses_grouped_mm(x64, 16, 32)  # fp64
        assert not uses_grouped_mm(x32, 16, 6)  # 24 bytes: not a multiple of 16
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert uses_grouped_mm(x32, 16, 32) and not uses_grouped_mm(x32, 16, 4)  # 8 bytes in bf16
    assert not uses_grouped_mm(x32, 16, 32)  # auto: grouped_mm on CUDA only
    with grouped_gemm_backend("loop"):
        assert not uses_grouped_mm(x32, 16, 32)
    with pytest.raises(ValueError, match="backend"), grouped_gemm_backend("fast"):
        pass


@CUDA
@pytest.mark.parametrize("name", ROUTED)
def test_cuda_forward_and_backward_never_synchronise_with_the_host(name):
    layer = build(name).cuda().train()
    x = torch.randn(4, 64, DIM, device="cuda", requires_grad=True)
    layer(x)  # warm-up: lazy initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = layer(x)
        (out.output.float().square().mean() + out.aux_loss).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@CUDA
@pytest.mark.parametrize("name", ROUTED)
def test_cuda_grouped_mm_equals_the_dense_reference(name):
    layer = build(name).cuda()
    x = torch.randn(2, 33, DIM, device="cuda")
    _assert_same(_run(layer, x, "auto"), _run(layer, x, "loop", dispatch_kind="dense"), atol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fast, reference = _run(layer, x, "auto"), _run(layer, x, "loop", dispatch_kind="dense")
    torch.testing.assert_close(fast[0].output.float(), reference[0].output.float(), rtol=0.05, atol=0.05)


@CUDA
def test_a_short_restorer_training_on_cuda_with_bf16_autocast(tmp_path):
    from mofme.models import load_restorer
    from mofme.train.config import load_config
    from mofme.train.trainer import train

    overrides = [
        "model.name=restorer_tiny",
        "model.num_experts=4",
        "data.samples_per_epoch=16",
        "data.batch_size=4",
        "data.crop_size=32",
        "train.epochs=2",
        "train.eval_every=1",
        "train.device=cuda",
        "train.amp=bf16",
        "train.progress=false",
        f"train.output_dir={tmp_path}",
    ]
    result = train(load_config("configs/demo_cpu.yaml", overrides))
    losses = [
        r["loss"]
        for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines())
        if r["kind"] == "train"
    ]
    assert result.steps == 8 and losses and all(math.isfinite(v) for v in losses)
    model = load_restorer(result.best_dir)  # saved from the GPU, loaded on the CPU
    assert next(model.parameters()).device.type == "cpu"
    assert torch.isfinite(model(torch.rand(1, 3, 32, 32)).image).all()


@pytest.mark.parametrize("value", ["loop", "grouped_mm", "gemm"])
def test_the_environment_sets_the_backend_a_process_starts_with(value):
    """``MOFME_GROUPED_GEMM`` (read at import): what a GPU run falls back to if grouped_mm fails."""
    code = (
        "import torch; from mofme.nn.dispatch import uses_grouped_mm; "
        "print(uses_grouped_mm(torch.zeros(2, 16), 16))"
    )
    env = {**os.environ, "MOFME_GROUPED_GEMM": value}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if value == "gemm":
        assert result.returncode != 0 and "MOFME_GROUPED_GEMM" in result.stderr and "'gemm'" in result.stderr
    else:  # on a CPU tensor only the forced grouped_mm backend takes the grouped path
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(value == "grouped_mm")
