"""Eval-mode layers export to ONNX (checked in onnxruntime), compile, and drop into timm's ViT."""

import functools

import pytest
import torch

import mofme
from mofme.nn import RoutedLayer

from .variants import DIM, ROUTED, VARIANTS, build


class _OutputOnly(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x).output


@pytest.mark.parametrize("name", VARIANTS)
def test_onnx_export_matches_pytorch(name):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = _OutputOnly(build(name)).eval()
    x = torch.randn(2, 9, DIM)
    program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    session = ort.InferenceSession(program.model_proto.SerializeToString())
    other = torch.randn(2, 9, DIM)  # not the input it was traced with
    (got,) = session.run(None, {session.get_inputs()[0].name: other.numpy()})
    with torch.no_grad():
        expected = model(other)
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ROUTED)
def test_torch_compile_matches_eager(name):
    layer = build(name).eval()
    compiled = torch.compile(layer, backend="aot_eager")
    x = torch.randn(3, 5, DIM)
    torch.testing.assert_close(compiled(x).output, layer(x).output)


def test_torch_compile_with_inductor_matches_eager():
    layer = build("mofme-static-linear").eval()
    x = torch.randn(3, 5, DIM)
    torch.testing.assert_close(torch.compile(layer)(x).output, layer(x).output, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mlp", [mofme.MoFMEMlp, mofme.SparseMoEMlp], ids=["mofme", "moe"])
def test_timm_vision_transformer_drop_in(mlp):
    timm = pytest.importorskip("timm")
    vit = timm.models.VisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=5,
        mlp_layer=functools.partial(mlp, num_experts=4, top_k=2),
    )
    routed = [m for m in vit.modules() if isinstance(m, RoutedLayer)]
    assert len(routed) == 2
    logits = vit(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 5)
    loss = logits.square().mean() + mofme.aux_loss(vit)
    assert mofme.aux_loss(vit).item() > 0
    loss.backward()
    for layer in routed:
        assert layer.router.proj.weight.grad.abs().sum() > 0
