import copy

import pytest
import torch

from mofme.nn import DenseFFN, MoFME, RoutedLayer, SparseMoE, UncertaintyAwareRouter, aux_loss
from mofme.nn.dispatch import capacity_mask

from .variants import DIM, EXPERTS, ROUTED, TOP_K, VARIANTS, build


@pytest.mark.parametrize("name", VARIANTS)
def test_output_keeps_shape_and_reports_routing(name):
    layer = build(name)
    x = torch.randn(3, 5, DIM)
    out = layer(x)
    assert out.output.shape == x.shape
    assert out.aux_loss.shape == () and torch.isfinite(out.aux_loss)
    if isinstance(layer, DenseFFN):
        assert out.expert_indices is None and out.aux_loss.item() == 0.0
    else:
        assert out.expert_indices.shape == (3, 5, TOP_K)
        assert out.expert_weights.shape == (3, 5, TOP_K)
        assert int(out.expert_indices.max()) < EXPERTS
        assert out.aux_loss.item() > 0


def _assert_sparse_matches_dense(sparse: RoutedLayer, x: torch.Tensor) -> None:
    """Forward and backward of the sparse path equal the dense (all-experts) reference."""
    dense = copy.deepcopy(sparse)
    dense.dispatch = "dense"
    results = []
    for layer in (sparse, dense):
        torch.manual_seed(1)  # the same MC-dropout / router-noise draws for both paths
        inp = x.clone().requires_grad_(True)
        out = layer(inp)
        (out.output.square().sum() + out.aux_loss).backward()
        grads = {n: p.grad for n, p in layer.named_parameters()}
        results.append((out, inp.grad, grads))
    (out_s, gx_s, g_s), (out_d, gx_d, g_d) = results
    assert torch.equal(out_s.expert_indices, out_d.expert_indices)
    torch.testing.assert_close(out_s.output, out_d.output, rtol=0, atol=1e-5)
    torch.testing.assert_close(gx_s, gx_d, rtol=0, atol=1e-5)
    for param_name, grad in g_s.items():
        assert grad is not None, param_name
        torch.testing.assert_close(grad, g_d[param_name], rtol=0, atol=1e-5, msg=param_name)


@pytest.mark.parametrize("name", ROUTED)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_sparse_equals_dense_reference_forward_and_backward(name, training):
    layer = build(name).double().train(training)
    _assert_sparse_matches_dense(layer, torch.randn(4, 7, DIM, dtype=torch.float64))


@pytest.mark.parametrize("name", ["moe-linear", "mofme-generator-uar", "mofme-static-linear"])
@pytest.mark.parametrize("top_k", [1, 3, EXPERTS])
@pytest.mark.parametrize("tokens", [1, 9])
def test_sparse_equals_dense_for_every_k_and_a_single_token(name, top_k, tokens):
    layer = build(name, top_k=top_k).double().train()
    _assert_sparse_matches_dense(layer, torch.randn(tokens, DIM, dtype=torch.float64))


@pytest.mark.parametrize("name", ["moe-linear", "mofme-generator-linear"])
def test_an_expert_without_tokens_costs_nothing_and_gets_no_gradient(name):
    layer = build(name).double().train()
    with torch.no_grad():
        layer.router.proj.bias[0] = -1e4  # expert 0 is never chosen
    x = torch.randn(20, DIM, dtype=torch.float64)
    _assert_sparse_matches_dense(layer, x)
    layer.zero_grad()
    out = layer(x)
    assert (out.expert_indices != 0).all()
    out.output.square().sum().backward()
    stacked = [p for name, p in layer.named_parameters() if name.startswith(("experts.", "modulation."))]
    assert stacked and all(p.shape[0] == EXPERTS for p in stacked)
    for param in stacked:  # expert 0's slice gets exactly zero gradient, the used experts some
        assert not param.grad[0].abs().any() and param.grad[1:].abs().any()


def _explicit_mofme(layer: MoFME, x: torch.Tensor, indices, weights) -> torch.Tensor:
    """The layer's formula written out token by token (see mofme/nn/mofme.py's docstring)."""
    proj, mod, rows = layer.gate.proj, layer.modulation, []
    dim = layer.dim
    for token, chosen, mix in zip(x, indices, weights, strict=True):
        a = proj.weight[:dim] @ token + proj.bias[:dim]
        b = proj.weight[dim:] @ token + proj.bias[dim:]
        h = torch.nn.functional.gelu(a) * b
        m = torch.zeros_like(h)
        for e, w in zip(chosen.tolist(), mix, strict=True):
            film = mod.bias[e]
            if mod.kind == "generator":
                film = film + h @ mod.weight[e]
            elif mod.kind == "lowrank":
                film = film + (h @ mod.down[e]) @ mod.up[e]
            gamma, beta = film[:dim], film[dim:]
            m = m + w * (gamma * h + beta)
        rows.append(layer.ffn(m))
    return torch.stack(rows)


@pytest.mark.parametrize("modulation", ["generator", "lowrank", "static"])
def test_mofme_equals_its_per_token_formula(modulation):
    layer = build("mofme-generator-linear", modulation=modulation).double().eval()
    with torch.no_grad():  # away from the identity start, so that gamma and beta differ
        layer.modulation.bias.normal_()
    x = torch.randn(11, DIM, dtype=torch.float64)
    out = layer(x)
    expected = _explicit_mofme(layer, x, out.expert_indices, out.expert_weights)
    torch.testing.assert_close(out.output, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["moe-linear", "moe-uar", "mofme-generator-linear", "mofme-static-uar"])
@pytest.mark.parametrize("top_k", [1, 2])
def test_the_task_loss_alone_trains_the_router(name, top_k):
    layer = build(name, top_k=top_k).train()
    if isinstance(layer, MoFME):  # identical experts (the identity start) cannot tell routings apart
        with torch.no_grad():
            layer.modulation.bias.normal_()
    layer(torch.randn(30, DIM)).output.square().sum().backward()  # no aux loss
    assert layer.router.proj.weight.grad.abs().max() > 1e-5


def _expert_params(layer: RoutedLayer, expert: int) -> list[torch.Tensor]:
    if isinstance(layer, SparseMoE):
        e = layer.experts
        return [e.w1[expert], e.b1[expert], e.w2[expert], e.b2[expert]]
    mod = layer.modulation
    return [mod.bias[expert]] + ([] if mod.weight is None else [mod.weight[expert]])


@pytest.mark.parametrize("name", [n for n in ROUTED if "capacity" not in n])
def test_changing_an_unselected_expert_leaves_the_token_unchanged(name):
    layer = build(name).double().eval()
    x = torch.randn(12, DIM, dtype=torch.float64)
    before = layer(x)
    token = 0
    chosen = set(before.expert_indices[token].tolist())
    unchosen = next(e for e in range(EXPERTS) if e not in chosen)
    with torch.no_grad():
        for p in _expert_params(layer, unchosen):
            p.add_(torch.randn_like(p))
    after = layer(x)
    assert torch.equal(after.output[token], before.output[token])
    # and changing a chosen expert does change it, so the check above can fail
    with torch.no_grad():
        for p in _expert_params(layer, next(iter(chosen))):
            p.add_(torch.randn_like(p))
    assert not torch.allclose(layer(x).output[token], before.output[token])


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("dim,experts,hidden", [(16, 4, 64), (24, 9, 40), (384, 128, 1536)])
def test_parameter_counts_match_closed_forms(dim, experts, hidden):
    ffn = 2 * dim * hidden + hidden + dim
    router = dim * experts + experts
    gate = 2 * dim * dim + 2 * dim
    with torch.device("meta"):
        assert _count(DenseFFN(dim, hidden_dim=hidden)) == ffn
        assert _count(SparseMoE(dim, experts, 2, hidden_dim=hidden)) == experts * ffn + router
        generator = MoFME(dim, experts, 2, hidden_dim=hidden, modulation="generator")
        static = MoFME(dim, experts, 2, hidden_dim=hidden, modulation="static")
        lowrank = MoFME(dim, experts, 2, hidden_dim=hidden, modulation="lowrank")
    assert _count(generator) == gate + router + experts * 2 * (dim * dim + dim) + ffn
    assert _count(static) == gate + router + experts * 2 * dim + ffn
    rank = dim // 8  # the default
    assert lowrank.modulation.rank == rank
    assert _count(lowrank) == gate + router + experts * (3 * dim * rank + 2 * dim) + ffn


def test_capacity_serves_first_choices_before_second_choices():
    # capacity 1: token 0's second choice (expert 1) would otherwise take the slot of token 1's first
    indices = torch.tensor([[0, 1], [1, 0], [1, 2]])
    kept = capacity_mask(indices, 3, 1)
    assert kept.tolist() == [[True, False], [True, False], [False, True]]
    assert capacity_mask(indices, 3, 3).all()


def test_capacity_drops_exactly_the_assignments_beyond_capacity():
    layer = build("moe-capacity").double().eval()  # capacity = ceil(0.75 * N * k / E)
    x = torch.randn(30, DIM, dtype=torch.float64)
    out = layer(x)
    kept = layer.keep_mask(out.expert_indices)
    assert not kept.all()
    # the capped layer equals the dropless one with the dropped assignments' weights set to zero
    free = copy.deepcopy(layer)
    free.capacity_factor = None
    routing = free.router(x)
    routing = routing._replace(weights=routing.weights * kept)
    torch.testing.assert_close(out.output, free.compute(x, routing, sparse=False))


def test_aux_loss_collects_every_routed_layer():
    model = torch.nn.Sequential(build("mofme-generator-linear"), torch.nn.Identity())
    model2 = torch.nn.ModuleList([build("moe-linear"), build("mofme-static-uar"), build("dense")])
    x = torch.randn(5, DIM)
    out = model[0](x)
    assert torch.equal(aux_loss(model), out.aux_loss)
    outs = [m(x) for m in model2]
    expected = outs[0].aux_loss + outs[1].aux_loss
    torch.testing.assert_close(aux_loss(model2), expected)
    assert aux_loss(torch.nn.Linear(2, 2)).item() == 0.0


@pytest.mark.parametrize("name", VARIANTS)
def test_wrong_dim_raises(name):
    layer = build(name)
    with pytest.raises((ValueError, RuntimeError)):
        layer(torch.randn(3, DIM + 1))


def test_constructor_arguments_are_validated():
    with pytest.raises(ValueError, match="top_k"):
        MoFME(8, 4, 5)
    with pytest.raises(ValueError, match="modulation"):
        MoFME(8, 4, 2, modulation="bogus")
    for kind, rank in (("generator", 2), ("lowrank", 0), ("lowrank", 9)):
        with pytest.raises(ValueError, match="rank"):
            MoFME(8, 4, 2, modulation=kind, modulation_rank=rank)
    with pytest.raises(ValueError, match="router"):
        SparseMoE(8, 4, 2, router="bogus")
    with pytest.raises(ValueError, match="dispatch"):
        SparseMoE(8, 4, 2, dispatch="bogus")
    with pytest.raises(ValueError, match="capacity_factor"):
        SparseMoE(8, 4, 2, capacity_factor=0)


@pytest.mark.parametrize("name", ROUTED)
def test_half_precision_inputs_keep_their_dtype(name):
    layer = build(name).to(torch.bfloat16)
    out = layer(torch.randn(6, DIM, dtype=torch.bfloat16))
    assert out.output.dtype == torch.bfloat16
    assert torch.isfinite(out.output.float()).all()


@pytest.mark.parametrize("name", ROUTED)
def test_autocast_bf16_forward_and_backward(name):
    layer = build(name)
    x = torch.randn(2, 6, DIM, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    (out.output.float().square().mean() + out.aux_loss).backward()
    assert torch.isfinite(out.output.float()).all()
    assert all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize("layer_class", [MoFME, SparseMoE])
def test_a_router_module_can_be_passed_in(layer_class):
    router = UncertaintyAwareRouter(DIM, EXPERTS, TOP_K, samples=3, dropout=0.2)
    layer = layer_class(DIM, EXPERTS, TOP_K, router=router).double().eval()
    assert layer.router is router
    x = torch.randn(7, DIM, dtype=torch.float64)
    torch.testing.assert_close(layer(x).expert_indices, router(x).indices)
    with pytest.raises(ValueError, match="num_experts"):
        layer_class(DIM, EXPERTS + 1, TOP_K, router=router)
    with pytest.raises(ValueError, match="router_kwargs"):
        layer_class(DIM, EXPERTS, TOP_K, router=router, router_kwargs={"z_coef": 0.0})


@pytest.mark.parametrize("name", ["moe-image-routed", "mofme-generator-image-routed"])
def test_image_routing_gives_every_token_of_a_sample_the_choice_made_on_its_mean_token(name):
    layer = build(name).double().eval()
    x = torch.randn(3, 4, 5, DIM, dtype=torch.float64)  # (B, H, W, D)
    out = layer(x)
    per_sample = layer.router(x.reshape(3, -1, DIM).mean(dim=1))  # the rule, computed here
    for b in range(3):
        assert torch.equal(out.expert_indices[b], per_sample.indices[b].expand(4, 5, TOP_K))
        torch.testing.assert_close(out.expert_weights[b], per_sample.weights[b].expand(4, 5, TOP_K))
    token_routed = build(name.replace("image-routed", "linear") if "moe" in name else "mofme-generator-uar")
    token_routed.load_state_dict(layer.state_dict())
    token_out = token_routed.double().eval()(x)
    assert not torch.equal(token_out.expert_indices, out.expert_indices)  # the two rules really differ
    with pytest.raises(ValueError, match="route_by"):
        build(name, route_by="patch")
