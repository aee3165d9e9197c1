"""Lens drops: push-pull filling (mofme.models.fill: the explicit two-level formula, confident pixels
kept, holes of any size filled from their rims, gradients to image and weight) and the drop detector
(mofme.models.drops: any input size, a new one finds nothing, save / load, bad settings named)."""

import pytest
import torch

from mofme.models import DropDetector, create_model, load_model
from mofme.models.fill import push_pull_fill


def test_two_by_two_follows_the_formula():
    # one push to 1 x 1: f1 = sum(w x) / sum(w); f0 = w x + (1 - w) f1 (upsampling a 1 x 1 is constant)
    image = torch.tensor([[0.2, 0.9], [0.4, 0.7]], dtype=torch.float64).view(1, 1, 2, 2)
    weight = torch.tensor([[1.0, 0.25], [0.0, 0.5]], dtype=torch.float64).view(1, 1, 2, 2)
    coarse = (weight * image).sum() / weight.sum()
    expected = weight * image + (1 - weight) * coarse
    torch.testing.assert_close(push_pull_fill(image, weight), expected)


def test_confident_pixels_are_kept_and_a_constant_stays_constant():
    torch.manual_seed(0)
    image = torch.rand(2, 3, 37, 50)
    weight = torch.ones(2, 1, 37, 50)
    torch.testing.assert_close(push_pull_fill(image, weight), image, rtol=0, atol=0)
    weight[:, :, 5:30, 8:45] = 0.0  # a hole larger than half the image
    filled = push_pull_fill(image, weight)
    keep = weight.expand_as(image) == 1
    assert torch.equal(filled[keep], image[keep])
    constant = torch.full_like(image, 0.3)
    torch.testing.assert_close(push_pull_fill(constant, weight), constant)


def test_a_hole_takes_the_values_around_it():
    # left half 0.1, right half 0.9; a hole across the border fills with values between, each
    # side of the hole closer to its own side's value
    image = torch.full((1, 3, 64, 64), 0.1)
    image[..., 32:] = 0.9
    weight = torch.ones(1, 1, 64, 64)
    weight[..., 20:44, 16:48] = 0.0
    filled = push_pull_fill(image, weight)
    hole = filled[..., 20:44, 16:48]
    assert float(hole.min()) >= 0.1 - 1e-6 and float(hole.max()) <= 0.9 + 1e-6
    assert float(filled[..., 32, 17].mean()) < 0.5 < float(filled[..., 32, 46].mean())
    assert float(filled[..., 20:44, 16:48].std()) > 0  # not one flat colour: it follows the sides


def test_gradients_reach_image_and_weight_and_shapes_are_checked():
    image = torch.rand(1, 3, 9, 11, requires_grad=True)
    weight = torch.rand(1, 1, 9, 11, requires_grad=True)
    push_pull_fill(image, weight).square().sum().backward()
    assert image.grad.abs().sum() > 0 and weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="weight"):
        push_pull_fill(image, torch.ones(1, 3, 9, 11))


def test_a_new_detector_finds_nothing_at_any_size_and_round_trips(tmp_path):
    detector = create_model("drop_detector", widths=[4, 8, 8]).eval()
    image = torch.rand(2, 3, 37, 50)  # not a multiple of the 4x downsampling
    logits = detector(image)
    assert logits.shape == (2, 1, 37, 50)
    torch.testing.assert_close(torch.sigmoid(logits), torch.full_like(logits, 0.01))
    torch.nn.init.normal_(detector.out.weight)
    detector.save_pretrained(tmp_path / "detector")
    loaded = load_model(tmp_path / "detector")
    assert isinstance(loaded, DropDetector) and loaded.config == detector.config
    torch.testing.assert_close(loaded(image), detector(image))
    with pytest.raises(ValueError, match="prior"):
        DropDetector(prior=1.0)
    with pytest.raises(ValueError, match="widths"):
        DropDetector(widths=[])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        detector(torch.rand(1, 1, 8, 8))
