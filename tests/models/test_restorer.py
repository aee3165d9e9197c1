"""The restoration network, over every registered model x every FFN kind (timm style: register a
model or an FFN layer and it is tested here), plus parameter counts against the published code."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file, save_file

import mofme.models.fill
import mofme.models.hub
from mofme.models import (
    PRESETS,
    RESTORER_PRESETS,
    FFNChoice,
    Restorer,
    RestorerConfig,
    UNetConfig,
    UNetRestorer,
    build_restorer,
    create_model,
    list_models,
    load_restorer,
    load_weights,
    model_config,
    register_model,
    restorer_config,
)
from mofme.nn import FFN_LAYERS, aux_loss

from .routing import assert_routing, assert_sparse_gradients

# every registered restorer with FFN fields (restorer_calibrated wraps one of them: tests/models/test_strength.py)
MODELS = [name for name in list_models("restorer_*") if isinstance(model_config(name), FFNChoice)]
FFNS = sorted(FFN_LAYERS)
VARIANTS = [(name, ffn) for name in MODELS for ffn in FFNS]
EXPERTS, TOP_K, BATCH = 4, 2, 2


def build(name: str, ffn: str, **overrides) -> Restorer:
    return create_model(name, ffn=ffn, num_experts=EXPERTS, top_k=TOP_K, **overrides)


def images(model: Restorer, height_patches: int = 2, width_patches: int = 2, extra: tuple[int, int] = (0, 0)):
    p = model.size_multiple
    return torch.rand(BATCH, 3, height_patches * p + extra[0], width_patches * p + extra[1])


def ffn_names(model) -> list[str]:
    """Module names of the FFN layers, in the order the forward pass runs (and reports) them."""
    return [name for name, m in model.named_modules() if isinstance(m, tuple(FFN_LAYERS.values()))]


def test_registry_lists_the_presets():
    assert {f"restorer_{preset}" for preset in RESTORER_PRESETS} <= set(MODELS)
    assert isinstance(create_model("restorer_unet", num_experts=2), UNetRestorer)
    assert list_models("restorer_t*") == ["restorer_tiny"]
    model = create_model("restorer_small", ffn="dense")
    assert asdict(model.config) == {**asdict(PRESETS["small"]), "ffn": "dense"}
    with pytest.raises(ValueError, match="unknown model"):
        create_model("restorer_huge")

    def restorer_tiny(**overrides):  # the name is taken
        return Restorer(**overrides)

    with pytest.raises(ValueError, match="already registered"):
        register_model(restorer_tiny)
    with pytest.raises(ValueError, match="unknown preset"):
        build_restorer(preset="huge")


@pytest.mark.parametrize(("cls", "config"), [(Restorer, RestorerConfig), (UNetRestorer, UNetConfig)])
def test_the_config_dataclass_is_the_constructor(cls, config):
    with torch.device("meta"):
        assert cls().config == config()  # the defaults live in the dataclass only
        with pytest.raises(TypeError, match="no_such_field"):
            cls(no_such_field=1)
        with pytest.raises(ValueError, match="router='soft'"):
            cls(router="soft")  # names are checked against the registries


def test_restorer_config_names_unknown_fields_and_keeps_the_rest_of_the_preset():
    config = restorer_config("small", top_k=1, residual=True)
    assert config == dataclasses.replace(PRESETS["small"], top_k=1, residual=True)
    with pytest.raises(ValueError, match="no field depths"):
        restorer_config("small", depths=(1, 2))  # a U-Net field


@pytest.mark.parametrize(("name", "ffn"), VARIANTS)
def test_shape_range_and_routing(name, ffn):
    model = build(name, ffn).train()
    x = images(model)
    out = model(x)
    assert out.image.shape == x.shape
    assert out.image.min() >= 0 and out.image.max() <= 1
    grids = model.token_grids(*x.shape[-2:])
    assert len(out.routing) == len(grids) == len(ffn_names(model)) > 0
    assert_routing(out.routing, grids, ffn=ffn, batch=BATCH, top_k=TOP_K)


@pytest.mark.parametrize(("name", "ffn"), VARIANTS)
def test_any_input_size(name, ffn):
    model = build(name, ffn).eval()
    x = images(model, 2, 1, extra=(3, 1))  # neither side a multiple of P
    out = model(x)
    assert out.image.shape == x.shape
    assert out.image.min() >= 0 and out.image.max() <= 1
    if ffn != "dense":  # the padded token grids: 3 x 2 pads (17 x 9 for windows), then halvings
        assert [i.shape[1:3] for i, _ in out.routing] == model.token_grids(*x.shape[-2:])
        pad = getattr(model, "patch_size", model.size_multiple)  # a Restorer pads to its patch size only
        rows, cols = -(-x.shape[-2] // pad), -(-x.shape[-1] // pad)
        level = [m for m in (1, 2, 4, 8) if out.routing[0][0].shape[1:3] == (rows * m, cols * m)]
        assert level, out.routing[0][0].shape
    tiny = torch.rand(1, 3, 2, 3)  # smaller than a patch: replicate padding
    assert model(tiny).image.shape == tiny.shape


@pytest.mark.parametrize(("name", "ffn"), VARIANTS)
def test_aux_loss(name, ffn):
    model = build(name, ffn).train()
    out = model(images(model))
    assert out.aux_loss.shape == () and torch.isfinite(out.aux_loss)
    assert torch.allclose(out.aux_loss, aux_loss(model))
    if ffn == "dense":
        assert out.aux_loss == 0
    else:
        assert out.aux_loss > 0


@pytest.mark.parametrize(("name", "ffn"), VARIANTS)
def test_backward_reaches_every_parameter(name, ffn):
    model = build(name, ffn).train()
    if isinstance(model, UNetRestorer):  # its output conv and context maps start at zero, which
        for name, param in model.named_parameters():  # stops the gradient before them
            if name.startswith("outro.") or ".film." in name:
                torch.nn.init.normal_(param, std=0.1)
    out = model(images(model))
    out.image.square().mean().backward()  # the task loss alone: routers must get gradient from it
    assert_sparse_gradients(model, out.routing, ffn_names(model))


@pytest.mark.parametrize(("name", "ffn"), VARIANTS)
def test_save_load_round_trip(name, ffn, tmp_path):
    model = build(name, ffn).eval()
    x = images(model, extra=(1, 2))
    expected = model(x)
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config == json.loads(json.dumps({"architecture": type(model).__name__, **asdict(model.config)}))
    for loaded in (type(model).from_pretrained(tmp_path), load_restorer(tmp_path)):
        assert not loaded.training and type(loaded) is type(model)
        assert loaded.config == model.config
        got = loaded(x)
        assert torch.equal(got.image, expected.image)
        assert torch.equal(got.aux_loss, expected.aux_loss)


@pytest.mark.parametrize(("name", "ffn"), VARIANTS)
def test_eval_is_deterministic(name, ffn):
    model = build(name, ffn).eval()
    x = images(model)
    first, second = model(x), model(x)
    assert torch.equal(first.image, second.image)
    for (i1, w1), (i2, w2) in zip(first.routing, second.routing, strict=True):
        assert (i1 is None and i2 is None) or (torch.equal(i1, i2) and torch.equal(w1, w2))


@pytest.mark.parametrize(
    "method",
    [
        dict(ffn="mofme", router="uar"),
        dict(ffn="mofme", modulation="static"),
        dict(ffn="moe", router="uar", router_kwargs={"samples": 3}),
        dict(ffn="moe", ffn_kwargs={"capacity_factor": 1.0}),
    ],
    ids=["mofme-uar", "mofme-static", "moe-uar", "moe-capacity"],
)
def test_method_options(method, tmp_path):
    model = build_restorer(preset="tiny", num_experts=EXPERTS, top_k=TOP_K, **method).train()
    x = torch.rand(BATCH, 3, 12, 12)
    out = model(x)
    (out.image.mean() + out.aux_loss).backward()
    assert torch.isfinite(out.aux_loss) and out.aux_loss > 0
    model.eval().save_pretrained(tmp_path)
    assert torch.equal(Restorer.from_pretrained(tmp_path)(x).image, model(x).image)


def test_dense_dispatch_override_matches_sparse(tmp_path):
    """from_pretrained overrides that keep the parameter shapes: the published all-experts
    computation gives the outputs of the sparse one."""
    model = build("restorer_tiny", "mofme").eval()
    model.save_pretrained(tmp_path)
    reference = Restorer.from_pretrained(tmp_path, ffn_kwargs={"dispatch": "dense"})
    assert reference.blocks[0].ffn.dispatch == "dense"
    x = torch.rand(BATCH, 3, 16, 16)
    torch.testing.assert_close(reference(x).image, model(x).image)


def test_residual_is_bounded_and_starts_from_the_identity():
    model = build_restorer(preset="tiny", ffn="dense", residual=True).eval()
    x = torch.rand(BATCH, 3, 10, 9)
    assert model(x).image.min() >= 0 and model(x).image.max() <= 1
    last = model.tail[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    torch.testing.assert_close(model(x).image, x.clamp(1e-3, 1 - 1e-3))


def test_position_embedding_is_used_and_resampled():
    model = build_restorer(preset="tiny", ffn="dense", pos_embed_size=16).eval()  # a 4 x 4 token grid
    assert model.pos_embed.shape == (1, 4, 4, model.config.embed_dim)
    native, other = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 12, 28)  # grids 4 x 4 and 3 x 7
    before = [model(x).image for x in (native, other)]
    with torch.no_grad():
        model.pos_embed.add_(torch.randn_like(model.pos_embed))
    for x, old in zip((native, other), before, strict=True):
        assert not torch.allclose(model(x).image, old)  # not a dead parameter, at any grid
    with torch.no_grad():
        model.pos_embed.fill_(0.5)
    torch.testing.assert_close(model._position((3, 7)), torch.full((1, 21, model.config.embed_dim), 0.5))
    assert torch.equal(model._position((4, 4)), model.pos_embed.flatten(1, 2))  # no resampling at 4 x 4
    with pytest.raises(ValueError, match="multiple of patch_size"):
        build_restorer(preset="tiny", pos_embed_size=18)


def test_rejects_bad_input():
    model = build("restorer_tiny", "dense")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.rand(1, 1, 8, 8))


# ----------------------------------------------------------------------------- save / load errors


@pytest.fixture
def saved(tmp_path):
    model = build("restorer_tiny", "mofme")
    model.save_pretrained(tmp_path)
    return model, tmp_path


def test_load_never_unpickles(saved, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(mofme.models.hub.torch, "load", refuse)
    Restorer.from_pretrained(saved[1])


def test_load_without_config(saved):
    (saved[1] / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        Restorer.from_pretrained(saved[1])


def test_load_without_weights(saved):
    (saved[1] / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        Restorer.from_pretrained(saved[1])


def test_load_missing_or_wrong_tensor(saved):
    _, path = saved
    weights = path / "model.safetensors"
    state = load_file(weights)
    missing = dict(state)
    del missing["blocks.0.attn.qkv.weight"]
    save_file(missing, weights)
    with pytest.raises(ValueError, match=r"model\.safetensors.*missing.*blocks\.0\.attn\.qkv\.weight"):
        Restorer.from_pretrained(path)
    wrong = {**state, "to_pixels.bias": torch.zeros(3), "extra.weight": torch.zeros(1)}
    save_file(wrong, weights)
    with pytest.raises(ValueError, match=r"unexpected.*extra\.weight.*wrong shapes.*to_pixels\.bias"):
        Restorer.from_pretrained(path)


def test_load_bad_config(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "widht": 3}))
    with pytest.raises(ValueError, match=r"config\.json.*widht"):
        Restorer.from_pretrained(path)
    (path / "config.json").write_text(json.dumps({**config, "architecture": "Classifier"}))
    with pytest.raises(ValueError, match="describes a Classifier"):
        Restorer.from_pretrained(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Restorer.from_pretrained(path)


def test_load_a_path_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a directory, nor a shipped model"):
        Restorer.from_pretrained(tmp_path / "missing")


# ----------------------------------------------------------------------------- parameter counts


def closed_form(
    ffn: str, experts: int, *, c=32, d=384, p=8, depth=2, heads=8, head_dim=64, ratio=4, image=240
) -> int:
    """Parameters of the restorer, from the architecture alone (position embedding for ``image``)."""

    def conv(cin, cout, k):
        return cin * cout * k * k + cout

    def res(ch):
        return 2 * conv(ch, ch, 3)

    hidden, inner, norm = ratio * d, heads * head_dim, 2 * d
    mlp = 2 * d * hidden + hidden + d
    router = d * experts + experts
    layer = {
        "dense": mlp,
        "moe": router + experts * mlp,
        "mofme": (2 * d * d + 2 * d) + router + experts * 2 * (d * d + d) + mlp,
    }[ffn]
    attention = d * 3 * inner + inner * d + d
    block = norm + attention + norm + layer
    head = conv(3, c, 3) + 2 * res(c)
    embed = conv(c, d, p) + norm + (image // p) ** 2 * d
    tail = (
        (d * p * p * 4 * c + p * p * 4 * c)
        + res(4 * c)
        + conv(4 * c, 2 * c, 3)
        + res(2 * c)
        + conv(2 * c, 3, 3)
    )
    return head + embed + depth * block + tail


def published_extras(ffn: str, experts: int, *, d=384, depth=2) -> int:
    """Parameters the published code allocates and never uses, which its counts include: per-expert
    LayerNorms (MoE: every expert is a PreNorm FFN, with no shared norm in front; MoFME: one unused
    LayerNorm per expert). Its position embedding, also never used there, is used here."""
    return {"dense": 0, "moe": depth * (experts - 1) * 2 * d, "mofme": depth * experts * 2 * d}[ffn]


PUBLISHED = {  # whole model at 240x240, k=4; exact for E=128, to 0.01M for E=16 and 64
    ("dense", 128): 8_709_379,
    ("moe", 128): 309_121_283,
    ("mofme", 128): 85_289_987,
    ("moe", 16): 44_190_000,
    ("mofme", 16): 18_800_000,
    ("moe", 64): 157_730_000,
    ("mofme", 64): 47_300_000,
}


@pytest.mark.parametrize(("ffn", "experts"), list(PUBLISHED))
def test_paper_parameter_counts(ffn, experts):
    with torch.device("meta"):  # no memory for the 309M parameters
        model = create_model("restorer_paper", ffn=ffn, num_experts=experts, top_k=4)
    count = sum(p.numel() for p in model.parameters())
    assert count == closed_form(ffn, experts)
    published = PUBLISHED[(ffn, experts)]
    tolerance = 0 if experts == 128 else 5_000  # the E=16/64 numbers are rounded to 0.01M
    assert abs(count + published_extras(ffn, experts) - published) <= tolerance
    # ours has no unused tensors; at E=128 it is within 1% of every published count
    if experts == 128:
        assert abs(count - published) / published < 0.01
    if ffn == "mofme" and experts == 128:
        assert count == 85_093_379  # published, less its unused per-expert norms


def test_unet_starts_as_the_identity_and_clamps_in_eval():
    model = build("restorer_unet", "mofme")
    x = torch.rand(BATCH, 3, 20, 13)
    torch.testing.assert_close(model.train()(x).image, x)  # zero-initialised output conv
    with torch.no_grad():
        model.outro.bias.fill_(1.0)
    assert model.train()(x).image.max() > 1  # the training loss sees the unclamped output
    assert model.eval()(x).image.max() == 1


def test_load_restorer_names_the_architecture(tmp_path):
    build("restorer_unet", "dense").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="describes a UNetRestorer, not a Restorer"):
        Restorer.from_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architecture": "Pix2Pix"}))
    with pytest.raises(ValueError, match="unknown architecture 'Pix2Pix'"):
        load_restorer(tmp_path)


class _SquareDetector(torch.nn.Module):
    """Drop logits +30 in one square of the image, -30 elsewhere (a detector with a known answer)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = torch.full_like(features[:, :1], -30.0)
        logits[..., 8:20, 4:16] = 30.0
        return logits


def test_drop_fill_replaces_the_detected_pixels_from_around_them():
    torch.manual_seed(0)
    plain = build_restorer(preset="tiny", ffn="dense", residual=True).eval()
    model = build_restorer(preset="tiny", ffn="dense", residual=True, drop_fill=True).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    x = torch.rand(BATCH, 3, 32, 28)  # a multiple of the patch size: no padding
    with torch.no_grad():
        base = plain(x).image
        start = model(x)  # a new detector finds (almost) nothing: the model without it, nearly
        assert torch.equal(
            start.drop_logits, torch.full_like(start.drop_logits, start.drop_logits[0, 0, 0, 0])
        )
        assert torch.sigmoid(start.drop_logits[0, 0, 0, 0]) == pytest.approx(0.01)
        assert 0 < float((start.image - base).abs().max()) <= 0.01
        model.drop_head = _SquareDetector()
        out = model(x)
    weight = 1 - torch.sigmoid(out.drop_logits)
    torch.testing.assert_close(out.image, mofme.models.fill.push_pull_fill(base, weight))
    outside = torch.ones_like(base, dtype=torch.bool)
    outside[..., 8:20, 4:16] = False
    assert torch.equal(out.image[outside], base[outside])
    assert float((out.image - base)[..., 8:20, 4:16].abs().mean()) > 0.01


def test_drop_fill_output_shape_and_weights_from_a_model_without_it(tmp_path):
    plain = build_restorer(preset="tiny", ffn="mofme", num_experts=EXPERTS, top_k=TOP_K)
    plain.save_pretrained(tmp_path / "plain")
    model = build_restorer(
        preset="tiny", ffn="mofme", num_experts=EXPERTS, top_k=TOP_K, drop_fill=True
    ).eval()
    with pytest.raises(ValueError, match=r"model\.safetensors.*missing tensors \['drop_head"):
        load_weights(model, tmp_path / "plain")
    load_weights(model, tmp_path / "plain", new_modules=["drop_head"])
    for name, tensor in plain.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match="missing tensors"):  # only the named modules may be missing
        load_weights(model, tmp_path / "plain", new_modules=["tail"])
    out = model(torch.rand(1, 3, 13, 18))
    assert out.image.shape == (1, 3, 13, 18) and out.drop_logits.shape == (1, 1, 13, 18)
    assert plain(torch.rand(1, 3, 8, 8)).drop_logits is None
    model.save_pretrained(tmp_path / "fill")
    assert load_restorer(tmp_path / "fill").config.drop_fill
