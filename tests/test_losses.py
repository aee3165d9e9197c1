"""RestorationLoss: SmoothL1 against torch, the VGG16 perceptual term with random weights saved to disk."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

from mofme.losses import LossOutput, RestorationLoss, load_vgg_features


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
