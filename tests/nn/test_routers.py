import pytest
import torch

from mofme.nn import TopKRouter, UncertaintyAwareRouter, load_balancing_loss, router_z_loss

CALIBRATIONS = ["shrinkage", "whitening", "none"]


def test_load_balancing_loss_is_one_for_uniform_routing_and_e_for_collapse():
    experts, tokens, k = 8, 64, 2
    uniform = torch.full((tokens, experts), 1.0 / experts)
    round_robin = torch.arange(tokens * k).view(tokens, k) % experts
    assert load_balancing_loss(uniform, round_robin, experts).item() == pytest.approx(1.0)
    collapsed = torch.zeros(tokens, experts)
    collapsed[:, 0] = 1.0
    assert load_balancing_loss(
        collapsed, torch.zeros(tokens, 1, dtype=torch.long), experts
    ).item() == pytest.approx(experts)


def test_z_loss_is_the_mean_squared_logsumexp():
    logits = torch.randn(5, 7)
    expected = sum(torch.log(torch.exp(row).sum()) ** 2 for row in logits) / 5
    torch.testing.assert_close(router_z_loss(logits), expected)


def test_topk_router_weights_are_renormalised_top_probabilities():
    router = TopKRouter(12, 6, 3)
    x = torch.randn(20, 12)
    out = router(x)
    probs = torch.softmax(router.proj(x), -1)
    top = probs.topk(3, -1)
    assert torch.equal(out.indices, top.indices)
    torch.testing.assert_close(out.weights, top.values / top.values.sum(-1, keepdim=True))
    torch.testing.assert_close(out.aux_loss, 1e-2 * out.balance_loss + 1e-3 * out.z_loss)


def _uar(calibration="shrinkage", top_k=2, **kw):
    return UncertaintyAwareRouter(16, 8, top_k, calibration=calibration, **kw)


@pytest.mark.parametrize("calibration", CALIBRATIONS)
@pytest.mark.parametrize(
    "make_input",
    [
        lambda: torch.zeros(10, 16),
        lambda: torch.full((10, 16), 3.0),
        lambda: torch.randn(10, 16) * 1e6,
        lambda: torch.randn(10, 16) * 1e20,
        lambda: torch.randn(10, 16) * 1e-30,
        lambda: torch.randn(10, 16),
    ],
    ids=["zero", "constant", "huge", "enormous", "tiny", "normal"],
)
def test_uar_weights_are_finite_on_adversarial_inputs(calibration, make_input):
    router = _uar(calibration).train()
    out = router(make_input())
    assert torch.isfinite(out.weights).all()
    assert torch.isfinite(out.probs).all()
    if calibration != "whitening":
        assert (out.weights >= 0).all()
        torch.testing.assert_close(out.weights.sum(-1), torch.ones(10))
    else:
        assert out.weights.abs().max() <= 1.0 + 1e-6


@pytest.mark.parametrize("calibration", CALIBRATIONS)
def test_uar_is_deterministic_in_eval_and_equals_the_plain_router(calibration):
    uar = _uar(calibration).eval()
    plain = TopKRouter(16, 8, 2).eval()
    plain.load_state_dict(uar.state_dict())
    x = torch.randn(30, 16)
    first, second = uar(x), uar(x)
    assert torch.equal(first.weights, second.weights) and torch.equal(first.indices, second.indices)
    assert torch.equal(first.weights, plain(x).weights)
    assert first.uncertainty is None


def test_uar_training_samples_really_differ_and_shrink_uncertain_experts():
    router = _uar(samples=8, dropout=0.3).train()
    x = torch.randn(200, 16)
    out = router(x)
    assert out.uncertainty is not None and (out.uncertainty > 0).all()  # MC samples are not identical
    # the MC mean is what the selection uses: chosen experts have the largest mean probabilities
    top = out.probs.topk(2, -1).indices
    assert torch.equal(out.indices, top)
    # shrinkage moves weight away from the more uncertain of the two chosen experts
    mu = out.probs.gather(-1, out.indices)
    plain = mu / mu.sum(-1, keepdim=True)
    rel_unc = out.uncertainty / mu
    noisier_first = rel_unc[:, 0] > rel_unc[:, 1]
    assert (out.weights[noisier_first, 0] <= plain[noisier_first, 0] + 1e-6).all()
    assert (out.weights[~noisier_first, 0] >= plain[~noisier_first, 0] - 1e-6).all()


def _task_gradient(router, x):
    """Gradient of the router's projection from a loss on the combine weights alone (no aux loss)."""
    out = router(x)
    target = torch.rand_like(out.weights)
    (out.weights * target).sum().backward()
    return router.proj.weight.grad


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize(
    "make", [lambda k: TopKRouter(16, 8, k), lambda k: _uar(top_k=k)], ids=["linear", "uar"]
)
def test_task_loss_alone_trains_the_router(make, top_k):
    router = make(top_k).train()
    grad = _task_gradient(router, torch.randn(40, 16))
    assert grad is not None and grad.abs().max() > 1e-4


@pytest.mark.parametrize("make", [lambda: TopKRouter(16, 8, 1), lambda: _uar(top_k=1)], ids=["linear", "uar"])
def test_top1_weight_is_the_chosen_probability(make):
    router = make().train()
    out = router(torch.randn(40, 16))
    assert (out.weights < 1).all()  # renormalising would give exactly 1
    if isinstance(router, UncertaintyAwareRouter):  # shrinkage only lowers the MC mean
        assert (out.weights <= out.probs.gather(-1, out.indices) + 1e-7).all()
    else:
        torch.testing.assert_close(out.weights, out.probs.gather(-1, out.indices))


def test_uar_gradients_are_finite_where_the_spread_is_zero():
    router = _uar().train()
    out = router(torch.zeros(10, 16))  # no input: every MC sample gives the same probabilities
    assert (out.uncertainty < 1e-5).all()
    (out.weights.sum() + out.uncertainty.sum()).backward()
    assert torch.isfinite(router.proj.weight.grad).all() and torch.isfinite(router.proj.bias.grad).all()


def test_uar_refuses_logit_noise():
    with pytest.raises(TypeError, match="noise_std"):
        _uar(noise_std=0.5)


def test_z_loss_is_taken_before_the_training_noise():
    router = TopKRouter(16, 8, 2, noise_std=2.0).train()
    x = torch.randn(30, 16)
    out = router(x)
    clean = torch.softmax(router.proj(x), -1)
    assert not torch.allclose(out.probs, clean)  # the noise is really there
    torch.testing.assert_close(out.z_loss, router_z_loss(router.proj(x)))


@pytest.mark.parametrize("make", [lambda: TopKRouter(16, 8, 2), lambda: _uar()], ids=["linear", "uar"])
def test_router_runs_in_float32_under_bf16_autocast(make):
    router = make().eval()
    x = torch.randn(64, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = router.logits(x)
    torch.testing.assert_close(mixed, router.proj(x), rtol=1e-6, atol=1e-6)  # bf16 would be off by ~1e-2


def test_uar_validates_arguments():
    with pytest.raises(ValueError, match="samples"):
        _uar(samples=1)
    with pytest.raises(ValueError, match="dropout"):
        _uar(dropout=0.0)
    with pytest.raises(ValueError, match="calibration"):
        _uar(calibration="bogus")


def test_uar_sampled_routers_are_unbiased_and_drop_whole_input_units():
    router = UncertaintyAwareRouter(16, 8, 2, samples=4000, dropout=0.3).train()
    x = torch.randn(5, 16)
    with torch.no_grad():
        sampled = router._sampled_logits(x)  # (M, N, E)
        expected = router.proj(x)
        w, b = router.proj.weight, router.proj.bias
    assert sampled.shape == (4000, 5, 8)
    assert ((sampled.mean(0) - expected).abs() <= 5 * sampled.std(0) / 4000**0.5 + 1e-5).all()
    # a pass is (x * mask) W^T + b with ONE mask in {0, 1/keep}^D for all its tokens: solve for it
    design = (x.unsqueeze(1) * w.unsqueeze(0)).reshape(-1, 16)  # (N E, D) coefficients of mask_d
    for m in range(10):
        mask = torch.linalg.lstsq(design, (sampled[m] - b).reshape(-1, 1)).solution.squeeze(1)
        assert ((mask.abs() < 1e-3) | ((mask - 1 / 0.7).abs() < 1e-3)).all()


def test_whitening_trains_with_unnormalised_weights_and_evaluates_with_renormalised_ones():
    router = _uar("whitening", samples=8, dropout=0.3)
    x = torch.randn(200, 16)
    trained = router.train()(x).weights
    evaluated = router.eval()(x).weights
    assert (trained.sum(-1) - 1).abs().mean() > 0.5  # the published form: signed, about 0 on average
    torch.testing.assert_close(evaluated.sum(-1), torch.ones(200))
