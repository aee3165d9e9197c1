"""The CPU inference fast path: the plain outputs to 1e-4 (routing decisions identical), used by default
where it applies and never otherwise, and the original model untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mofme.infer.restore as restore_module
from mofme.cli import build_parser, main
from mofme.data import builtin_photos, read_image, write_image
from mofme.data.transforms import to_tensor
from mofme.infer.fastpath import (
    FusedResBlock,
    PackedLinear,
    PixelUnpatch,
    fast_path_available,
    inference_model,
    is_fast_path,
    optimize_for_cpu_inference,
)
from mofme.infer.restore import restore_image
from mofme.models import DEFAULT_WEIGHTS, build_restorer, load_restorer
from mofme.models.restorer import ResBlock
from tests.standin import StandIn

pytestmark = pytest.mark.skipif(
    not fast_path_available(), reason="this PyTorch build lacks oneDNN's operators"
)
CPU = torch.device("cpu")
TOL = 1e-4  # max abs difference on outputs in [0, 1]


def _photo(long_side: int | None) -> torch.Tensor:
    """A built-in test photo, (3, H, W) in [0, 1]."""
    photo = dict(builtin_photos("test", long_side=long_side))["rocket"]
    return to_tensor(photo)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("preset", ["small", "small_window", "tiny"])
@pytest.mark.parametrize("ffn", ["dense", "moe", "mofme"])
def test_fast_path_matches_the_plain_path(preset, ffn):
    model = build_restorer(preset=preset, ffn=ffn, num_experts=4, top_k=2).eval()
    fast = optimize_for_cpu_inference(model)
    assert is_fast_path(fast) and any(isinstance(m, PackedLinear) for m in fast.modules())
    image = torch.rand(2, 3, 37, 54)  # padded to the patch size inside, cropped back
    with torch.no_grad():
        plain, quick = model(image), fast(image)
    assert _max_diff(plain.image, quick.image) < TOL
    for (indices, _), (fast_indices, _) in zip(plain.routing, quick.routing, strict=True):
        assert (indices is None and fast_indices is None) or torch.equal(indices, fast_indices)
    photo = _photo(160)  # a real photo through the tiled restoration, several tiles
    tiled = {"tile": 64, "overlap": 16}
    assert (
        _max_diff(restore_image(model, photo, fast=False, **tiled), restore_image(model, photo, **tiled))
        < TOL
    )


def test_fast_path_matches_the_plain_path_with_a_drop_detector():
    torch.manual_seed(0)
    model = build_restorer(preset="tiny", ffn="mofme", num_experts=4, top_k=2, drop_fill=True).eval()
    torch.nn.init.normal_(model.drop_head.out.weight, std=0.5)  # a detector that finds something
    torch.nn.init.zeros_(model.drop_head.out.bias)
    image = torch.rand(2, 3, 37, 54)
    fast = optimize_for_cpu_inference(model)
    with torch.no_grad():
        plain, quick = model(image), fast(image)
    convs = [m for m in fast.drop_head.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)  # on the fast path
    assert 0.05 < float(torch.sigmoid(plain.drop_logits).mean()) < 0.95
    assert _max_diff(plain.image, quick.image) < TOL and _max_diff(plain.drop_logits, quick.drop_logits) < TOL


def test_shipped_model_on_a_full_size_photo():
    """The default `mofme restore` settings on a real photo: rounding before a router could swap a
    nearly tied expert and differ by ~1e-3; the fast path keeps every routing decision."""
    model = load_restorer(DEFAULT_WEIGHTS)
    photo = _photo(None)  # 427 x 640: six 256 x 256 tiles
    assert _max_diff(restore_image(model, photo, fast=False), restore_image(model, photo)) < TOL


def test_fast_modules_match_what_they_replace():
    linear, block = nn.Linear(12, 2 * 4 * 4), ResBlock(5).eval()
    tokens, maps = torch.randn(2, 6, 12), torch.randn(2, 5, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(PackedLinear(linear.weight, linear.bias)(tokens), linear(tokens))
        gelu = PackedLinear(linear.weight, linear.bias, activation="gelu")
        torch.testing.assert_close(gelu(tokens), F.gelu(linear(tokens)))
        unpatch = PixelUnpatch(linear, patch_size=4)
        torch.testing.assert_close(unpatch(tokens), linear(tokens))
        shuffled = F.pixel_shuffle(linear(tokens).transpose(1, 2).unflatten(2, (2, 3)), 4)
        features = unpatch.unpatchify(tokens, (2, 3))
        torch.testing.assert_close(features, shuffled)
        assert features.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(FusedResBlock(block)(maps), block(maps))


def test_the_original_model_is_untouched_and_still_trains():
    model = build_restorer(preset="tiny", ffn="mofme", num_experts=4, top_k=2).train()
    before = {name: (t.clone(), t.data_ptr(), t.stride()) for name, t in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    restored = restore_image(model, torch.rand(3, 40, 44), tile=32, overlap=8)  # fast path inside
    assert restored.shape == (3, 40, 44) and restored.is_contiguous()
    assert model.training and all(m.training for m in model.modules())  # its modes given back
    assert [type(m) for m in model.modules()] == types
    for name, tensor in model.state_dict().items():
        value, pointer, stride = before[name]
        assert torch.equal(tensor, value) and tensor.data_ptr() == pointer and tensor.stride() == stride
    out = model(torch.rand(2, 3, 16, 16))
    (out.image.mean() + out.aux_loss).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="eval mode"):
        optimize_for_cpu_inference(model)  # a training model is refused, not switched silently


def test_the_copy_is_for_inference_only():
    model = build_restorer(preset="tiny", ffn="dense").eval()
    fast = optimize_for_cpu_inference(model)
    assert optimize_for_cpu_inference(fast) is fast and inference_model(fast, device=CPU) is fast
    with pytest.raises(RuntimeError, match="inference"):
        fast.train()
    assert not any(isinstance(m, PackedLinear | FusedResBlock | PixelUnpatch) for m in model.modules())


def test_inference_model_applies_only_to_eval_float32_restorers_on_the_cpu():
    model = build_restorer(preset="tiny", ffn="moe", num_experts=4, top_k=1).eval()
    assert is_fast_path(inference_model(model, device=CPU))
    assert inference_model(model, device=CPU, fast=False) is model
    assert inference_model(model, device=torch.device("cuda")) is model  # CUDA: untouched, no copy
    assert inference_model(model.train(), device=CPU) is model  # training: untouched
    double = build_restorer(preset="tiny", ffn="dense").double().eval()
    assert inference_model(double, device=CPU) is double
    other = StandIn().eval()
    assert inference_model(other, device=CPU) is other


@pytest.fixture
def runners(monkeypatch):
    """The models restore_paths ran, each with the number of forward calls it received."""
    ran: list[list] = []
    real = restore_module.inference_model

    def spy(model, **kwargs):
        runner = real(model, **kwargs)
        record = [runner, 0]
        ran.append(record)
        runner.register_forward_hook(lambda *_: record.__setitem__(1, record[1] + 1))
        return runner

    monkeypatch.setattr(restore_module, "inference_model", spy)
    return ran


def test_restore_cli_uses_the_fast_path_unless_told_not_to(tmp_path, runners):
    write_image(tmp_path / "in" / "photo.png", _photo(96).permute(1, 2, 0).numpy())
    for flags, out in (([], "fast"), (["--no-fast"], "plain")):
        assert main(["restore", str(tmp_path / "in"), "--output", str(tmp_path / out), *flags]) == 0
    (fast, fast_calls), (plain, plain_calls) = runners
    assert is_fast_path(fast) and fast_calls == 1 and any(isinstance(m, PackedLinear) for m in fast.modules())
    assert not is_fast_path(plain) and plain_calls == 1
    assert not any(isinstance(m, PackedLinear) for m in plain.modules())
    fast_image, plain_image = (read_image(tmp_path / out / "photo.png") for out in ("fast", "plain"))
    assert abs(fast_image - plain_image).max() <= 1 / 255  # 8-bit files: at most one level apart


def test_eval_cli_has_the_opt_out():
    parser = build_parser()
    assert parser.parse_args(["eval", "--data", "builtin"]).fast
    assert not parser.parse_args(["eval", "--data", "builtin", "--no-fast"]).fast


def test_the_probe_leaves_the_random_state_alone():
    fast_path_available.cache_clear()
    state = torch.get_rng_state()
    assert fast_path_available()
    assert torch.equal(torch.get_rng_state(), state)  # a training run's random stream is not shifted


def test_hooks_on_the_model_still_see_every_tile():
    """mofme serve counts tiles and experts with a forward hook on the model it restores with."""
    model = build_restorer(preset="tiny", ffn="mofme", num_experts=4, top_k=2).eval()
    seen = []
    model.register_forward_hook(
        lambda module, args, out: seen.append((is_fast_path(module), len(out.routing)))
    )
    restore_image(model, torch.rand(3, 40, 44), tile=32, overlap=8)  # 4 tiles
    assert seen == [(True, 1)] * 4
