"""The recognition models (ViT classifier and segmenter), over every registered ``classifier_*`` /
``segmenter_*`` model x every FFN kind: shapes at any size, aux loss, routing, gradients of the task
loss, save / load, locality of the segmenter, and a classifier that learns."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from mofme.models import (
    ARCHITECTURES,
    RECOGNIZER_PRESETS,
    RecognizerConfig,
    Restorer,
    ViTClassifier,
    ViTSegmenter,
    create_model,
    list_models,
    load_model,
    load_restorer,
)
from mofme.models.restorer import resample_position
from mofme.nn import FFN_LAYERS, aux_loss

from .routing import assert_routing, assert_sparse_gradients, expert_params

MODELS = list_models("classifier_*") + list_models("segmenter_*")
FFNS = sorted(FFN_LAYERS)
VARIANTS = [(name, ffn) for name in MODELS for ffn in FFNS]
EXPERTS, TOP_K, BATCH, CLASSES = 4, 2, 2, 5
ODD_SIZE = (30, 45)  # neither side a multiple of P = 4


def build(name: str, ffn: str, **overrides) -> ViTClassifier | ViTSegmenter:
    return create_model(name, ffn=ffn, num_experts=EXPERTS, top_k=TOP_K, num_classes=CLASSES, **overrides)


def logits_shape(model, height: int, width: int) -> tuple[int, ...]:
    if isinstance(model, ViTSegmenter):
        return (BATCH, CLASSES, height, width)
    return (BATCH, CLASSES)


def task_loss(model, logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against fixed random labels (per image or per pixel)."""
    g = torch.Generator().manual_seed(1)
    if isinstance(model, ViTSegmenter):
        target = torch.randint(0, CLASSES, (logits.shape[0], *logits.shape[2:]), generator=g)
    else:
        target = torch.randint(0, CLASSES, (logits.shape[0],), generator=g)
    return F.cross_entropy(logits, target)


def test_registry_builds_the_presets():
    assert list_models("classifier_*") == ["classifier_small", "classifier_tiny"]
    assert list_models("segmenter_*") == ["segmenter_small", "segmenter_tiny"]
    assert ARCHITECTURES["ViTClassifier"] is ViTClassifier and ARCHITECTURES["ViTSegmenter"] is ViTSegmenter
    for preset in RECOGNIZER_PRESETS:
        for kind, cls in (("classifier", ViTClassifier), ("segmenter", ViTSegmenter)):
            model = create_model(f"{kind}_{preset}", ffn="moe", num_classes=3)
            assert type(model) is cls
            assert model.config == dataclasses.replace(RECOGNIZER_PRESETS[preset], ffn="moe", num_classes=3)
    tiny, small = RECOGNIZER_PRESETS["tiny"], RECOGNIZER_PRESETS["small"]
    assert (tiny.embed_dim, tiny.depth, tiny.patch_size, tiny.num_heads, tiny.head_dim) == (64, 2, 4, 2, 32)
    assert (small.embed_dim, small.depth, small.patch_size, small.num_heads, small.head_dim) == (
        128,
        4,
        4,
        4,
        32,
    )
    assert tiny.pos_embed_size == small.pos_embed_size == 64


def test_the_config_dataclass_is_the_constructor():
    with torch.device("meta"):
        assert ViTClassifier().config == RecognizerConfig()  # the defaults live in the dataclass only
        with pytest.raises(ValueError, match="no field no_such_field"):
            create_model("segmenter_tiny", no_such_field=1)
        with pytest.raises(ValueError, match="router='soft'"):
            ViTSegmenter(router="soft")
        with pytest.raises(ValueError, match="multiple of patch_size"):
            ViTClassifier(pos_embed_size=18)
        with pytest.raises(ValueError, match="num_classes must be a positive"):
            ViTClassifier(num_classes=0)
        with pytest.raises(ValueError, match="power-of-two patch_size"):
            ViTSegmenter(patch_size=6, pos_embed_size=60)
        assert ViTClassifier(patch_size=6, pos_embed_size=60).config.patch_size == 6  # fine for a classifier


@pytest.mark.parametrize(("name", "ffn"), VARIANTS)
def test_shapes_and_routing_at_any_size(name, ffn):
    model = build(name, ffn).train()
    preset = model.config.pos_embed_size
    for height, width in (ODD_SIZE, (preset, preset)):
        out = model(torch.rand(BATCH, 3, height, width))
        assert out.logits.shape == logits_shape(model, height, width)
        assert torch.isfinite(out.logits).all()
        grids = model.token_grids(height, width)
        assert grids[0] == (math.ceil(height / 4), math.ceil(width / 4))
        assert len(out.routing) == len(grids) == model.config.depth
        assert_routing(out.routing, grids, ffn=ffn, batch=BATCH, top_k=TOP_K)


@pytest.mark.parametrize(("name", "ffn"), VARIANTS)
def test_aux_loss(name, ffn):
    model = build(name, ffn).train()
    out = model(torch.rand(BATCH, 3, *ODD_SIZE))
    assert out.aux_loss.shape == () and torch.isfinite(out.aux_loss)
    assert torch.allclose(out.aux_loss, aux_loss(model))
    if ffn == "dense":
        assert out.aux_loss == 0
    else:
        assert out.aux_loss > 0


@pytest.mark.parametrize(("name", "ffn"), VARIANTS)
def test_task_loss_alone_reaches_every_parameter(name, ffn):
    model = build(name, ffn).train()
    out = model(torch.rand(BATCH, 3, *ODD_SIZE))
    task_loss(model, out.logits).backward()  # no aux loss: the router must learn from the task
    assert bool(expert_params(model)) == (ffn != "dense")
    routers = [n for n, _ in model.named_parameters() if ".ffn.router." in n]
    assert bool(routers) == (ffn != "dense")
    layers = [f"encoder.blocks.{i}" for i in range(len(out.routing))]
    assert_sparse_gradients(model, out.routing, layers)


@pytest.mark.parametrize(("name", "ffn"), VARIANTS)
def test_save_load_round_trip(name, ffn, tmp_path):
    model = build(name, ffn).eval()
    x = torch.rand(BATCH, 3, *ODD_SIZE)
    expected = model(x)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config == json.loads(json.dumps({"architecture": type(model).__name__, **asdict(model.config)}))
    for loaded in (load_model(tmp_path), type(model).from_pretrained(tmp_path)):
        assert type(loaded) is type(model) and not loaded.training
        assert loaded.config == model.config
        got = loaded(x)
        assert torch.equal(got.logits, expected.logits)
        assert torch.equal(got.aux_loss, expected.aux_loss)
    with pytest.raises(ValueError, match=f"holds a {type(model).__name__}, not a restorer"):
        load_restorer(tmp_path)


def test_load_model_dispatches_on_the_architecture(tmp_path):
    create_model("restorer_tiny", ffn="dense").save_pretrained(tmp_path / "restorer")
    assert type(load_model(tmp_path / "restorer")) is Restorer
    assert type(load_restorer(tmp_path / "restorer")) is Restorer
    build("classifier_tiny", "dense").save_pretrained(tmp_path / "classifier")
    with pytest.raises(ValueError, match="describes a ViTClassifier, not a ViTSegmenter"):
        ViTSegmenter.from_pretrained(tmp_path / "classifier")
    config = json.loads((tmp_path / "classifier" / "config.json").read_text())
    (tmp_path / "classifier" / "config.json").write_text(json.dumps({**config, "architecture": "ResNet"}))
    with pytest.raises(ValueError, match="unknown architecture 'ResNet'"):
        load_model(tmp_path / "classifier")


@pytest.mark.parametrize("ffn", FFNS)
def test_segmenter_logits_follow_the_input_where_it_changes(ffn):
    model = build("segmenter_tiny", ffn).eval()
    x = torch.rand(1, 3, 32, 32)
    changed = x.clone()
    changed[..., :4, :4] = 1 - changed[..., :4, :4]  # the top-left patch
    with torch.no_grad():
        delta = (model(changed).logits - model(x).logits).abs().sum(1)[0]  # (H, W)
    near, far = delta[:4, :4].mean(), delta[-4:, -4:].mean()
    assert near > 0
    assert near > 2 * far, (near, far)  # the patch's own token dominates its pixels


def test_position_embedding_is_used_and_resampled():
    model = build("classifier_tiny", "dense").eval()
    pos = model.encoder.pos_embed
    assert pos.shape == (1, 16, 16, 64)  # 64 x 64 images, P = 4
    native, other = torch.rand(1, 3, 64, 64), torch.rand(1, 3, *ODD_SIZE)
    with torch.no_grad():
        before = [model(x).logits for x in (native, other)]
        pos.add_(torch.randn_like(pos))
        for x, old in zip((native, other), before, strict=True):
            assert not torch.allclose(model(x).logits, old)  # used at the native and at another grid
        pos.fill_(0.5)
    torch.testing.assert_close(resample_position(pos, (8, 12)), torch.full((1, 96, 64), 0.5))
    assert torch.equal(resample_position(pos, (16, 16)), pos.flatten(1, 2))


def test_rejects_bad_input():
    model = build("classifier_tiny", "dense")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.rand(1, 1, 8, 8))


def stripes(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy grey images of sinusoidal stripes (period 6, random phase): label 0 horizontal,
    1 vertical; (n, 3, size, size) in [0, 1] and (n,)."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    phase = torch.rand(n, 1, 1, generator=generator) * 2 * math.pi
    coord = torch.arange(size, dtype=torch.float32)
    axis = torch.where(labels.view(-1, 1, 1).bool(), coord.view(1, 1, -1), coord.view(1, -1, 1))
    images = 0.5 + 0.5 * torch.sin(2 * math.pi * axis / 6 + phase)
    images = (images + 0.1 * torch.randn(n, size, size, generator=generator)).clamp(0, 1)
    return images.unsqueeze(1).expand(-1, 3, -1, -1).contiguous(), labels


def test_the_classifier_learns_stripe_orientation():
    model = create_model("classifier_tiny", ffn="mofme", num_classes=2).train()  # E = 16, k = 2
    generator = torch.Generator().manual_seed(0)
    x, y = stripes(32, 16, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        start = (model(x).logits.argmax(1) == y).float().mean()
    for _ in range(24):
        out = model(x)
        loss = F.cross_entropy(out.logits, y) + out.aux_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        train = (model(x).logits.argmax(1) == y).float().mean()
        held_x, held_y = stripes(64, 16, generator)  # new phases and noise
        held = (model(held_x).logits.argmax(1) == held_y).float().mean()
    assert start < 0.9, start  # not solved before training
    assert train >= 0.95 and held >= 0.9, (train, held)
