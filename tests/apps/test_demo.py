"""The demo's helpers: the up-front time estimate and the clean pass-through check."""

import math

import torch

from mofme.apps.demo import clean_passthrough, estimate_step_seconds
from mofme.configs import recipe_path
from mofme.train.config import load_config
from tests.standin import StandIn


def test_step_estimate_is_positive_and_leaves_the_rng_alone():
    config = load_config(
        recipe_path("demo_cpu"),
        ["model.name=restorer_tiny", "model.num_experts=4", "data.batch_size=2", "data.crop_size=16"],
    )
    torch.manual_seed(7)
    before = torch.get_rng_state()
    assert estimate_step_seconds(config, steps=2) > 0
    assert torch.equal(torch.get_rng_state(), before)  # training after it starts from the same state


def test_clean_passthrough_scores_each_test_photo():
    identity = clean_passthrough(StandIn(), long_side=48)
    assert set(identity) == {"rocket", "china"} and all(math.isinf(v) for v in identity.values())
    blurred = clean_passthrough(StandIn(blur=True), long_side=48)
    assert all(10 < v < 40 for v in blurred.values())  # a blur changes a clean photo: finite PSNR
