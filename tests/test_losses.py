"""RestorationLoss: SmoothL1 against torch, the VGG16 perceptual term with random weights saved to disk."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

from mofme.data import WEATHER_TYPES
from mofme.losses import (
    DropMaskLoss,
    LossOutput,
    RestorationLoss,
    drop_mask_loss,
    drop_targets,
    load_vgg_features,
)


@pytest.fixture(scope="module")
def vgg_path(tmp_path_factory):
    """A full torchvision vgg16 state_dict (random weights), as vgg16-397923af.pth is laid out."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), path)
    return path


def images(n=2, size=32):
    return torch.rand(n, 3, size, size), torch.rand(n, 3, size, size)


@pytest.mark.parametrize("beta", [1.0, 0.05])
def test_pixel_term_is_smooth_l1(beta):
    pred, target = images()
    out = RestorationLoss(beta=beta)(pred, target)
    assert isinstance(out, LossOutput)
    expected = F.smooth_l1_loss(pred, target, beta=beta)
    torch.testing.assert_close(out.pixel, expected)
    torch.testing.assert_close(out.total, expected)
    assert out.perceptual.item() == 0.0


def test_perceptual_term(vgg_path):
    loss = RestorationLoss(perceptual_weight=0.04, vgg_weights=vgg_path)
    pred, target = images()
    same = loss(target, target.clone())
    assert same.perceptual.item() == 0.0 and same.total.item() == 0.0

    pred.requires_grad_(True)
    out = loss(pred, target)
    assert out.perceptual.item() > 0
    torch.testing.assert_close(out.total, out.pixel + 0.04 * out.perceptual)
    out.total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.vgg.parameters())

    loss.train()
    assert not loss.vgg.training and loss.training


def test_weights_are_the_file_weights_and_safetensors_work(vgg_path, tmp_path):
    state = torch.load(vgg_path, weights_only=True)
    layers = load_vgg_features(vgg_path)
    assert len(layers) == 16
    torch.testing.assert_close(layers[14].weight, state["features.14.weight"])  # conv3_3

    features_only = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    path = tmp_path / "vgg16_features.safetensors"
    save_file({k: v.contiguous() for k, v in features_only.items()}, str(path))
    torch.testing.assert_close(load_vgg_features(path)[14].weight, state["features.14.weight"])


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(ValueError, match=r"vgg16-397923af\.pth"):
        RestorationLoss(perceptual_weight=0.04)
    with pytest.raises(FileNotFoundError, match=r"vgg16-397923af\.pth.*loss\.vgg_weights"):
        RestorationLoss(perceptual_weight=0.04, vgg_weights=tmp_path / "nope.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"weight": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError, match="not a torchvision VGG16"):
        RestorationLoss(perceptual_weight=0.04, vgg_weights=wrong)
    assert RestorationLoss(perceptual_weight=0.0, vgg_weights=None).vgg is None


def test_particle_weight_is_the_weighted_mean_of_the_formula():
    torch.manual_seed(1)
    pred, target = images()
    particles = torch.rand(2, 1, 32, 32) * (torch.rand(2, 1, 32, 32) > 0.7)
    torch.testing.assert_close(
        RestorationLoss(beta=0.05, particle_weight=0.0)(pred, target, particles).pixel,
        F.smooth_l1_loss(pred, target, beta=0.05),
    )
    out = RestorationLoss(beta=0.05, particle_weight=3.0)(pred, target, particles)
    diff = (pred - target).abs().double()
    elementwise = torch.where(diff < 0.05, 0.5 * diff**2 / 0.05, diff - 0.025)
    weight = (1 + 3.0 * particles.double()).expand(-1, 3, -1, -1)
    expected = (weight * elementwise).sum() / weight.sum()
    torch.testing.assert_close(out.pixel.double(), expected)
    assert out.total is out.pixel  # no perceptual term


def test_particle_weight_scales_the_gradient_on_particles():
    target = torch.zeros(1, 3, 4, 4)
    pred = torch.full((1, 3, 4, 4), 0.5, requires_grad=True)  # the same residual everywhere
    particles = torch.zeros(1, 1, 4, 4)
    particles[..., :2, :] = 1.0  # the top half is a drop
    RestorationLoss(beta=0.01, particle_weight=4.0)(pred, target, particles).total.backward()
    grad = pred.grad[0, 0]
    assert torch.allclose(grad[:2] / grad[2:], torch.tensor(5.0))


def test_particle_weight_needs_the_masks():
    pred, target = images()
    with pytest.raises(ValueError, match="particles"):
        RestorationLoss(particle_weight=1.0)(pred, target)
    with pytest.raises(ValueError, match="do not cover"):
        RestorationLoss(particle_weight=1.0)(pred, target, torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="particle_weight"):
        RestorationLoss(particle_weight=-1.0)


def test_drop_targets_keep_the_particles_of_raindrop_renders_only():
    torch.manual_seed(0)
    particles = torch.rand(4, 1, 5, 6)
    weather = torch.tensor([WEATHER_TYPES.index("raindrop"), WEATHER_TYPES.index("snow"), -1, 0])
    targets = drop_targets(particles, weather)
    assert torch.equal(targets[0], particles[0])
    assert not targets[1:].any()  # snow flakes, a clean render and rain are no drops
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        drop_targets(particles[:, 0], weather)


def test_drop_mask_loss_is_the_mean_binary_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 7, 9, dtype=torch.float64) * 3
    targets = torch.rand(2, 1, 7, 9, dtype=torch.float64)
    p = 1 / (1 + torch.exp(-logits))
    for pos_weight in (1.0, 3.0):
        expected = -(pos_weight * targets * torch.log(p) + (1 - targets) * torch.log(1 - p)).mean()
        torch.testing.assert_close(drop_mask_loss(logits, targets, pos_weight=pos_weight), expected)
    particles, weather = targets, torch.full((2,), WEATHER_TYPES.index("raindrop"))
    torch.testing.assert_close(DropMaskLoss(pos_weight=3.0)(logits, particles, weather), expected)
    with pytest.raises(ValueError, match="pos_weight"):
        DropMaskLoss(pos_weight=0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        drop_mask_loss(logits, targets[:1])
