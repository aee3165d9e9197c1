"""label_information_by_batch: the batch estimate of I(weather; expert) that loss.weather_mi rewards,
against the whole-set value, on routings with a known answer."""

import math
from types import SimpleNamespace

import pytest
import torch
from sklearn.metrics import mutual_info_score

from mofme.apps import analysis
from mofme.evaluate.routing import expert_counts, routing_nmi
from mofme.models import create_model


class FixedRouting(torch.nn.Module):
    """Routes image i (its input holds i) with probabilities ``table[i]`` (one layer, 4 tokens)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table, self.last = table, None

    def forward(self, x):
        self.last = self.table[int(x.flatten()[0])].expand(4, -1)
        return SimpleNamespace(routing=[])  # the restorer's output has a routing field


def weather_items(per_weather: int) -> list[dict]:
    weathers = [w for w in range(4) for _ in range(per_weather)]
    return [{"input": torch.full((3, 2, 2), float(i)), "weather": w} for i, w in enumerate(weathers)]


@pytest.fixture
def items():
    return weather_items(12)  # 48 images


@pytest.fixture(autouse=True)
def fixed_probs(monkeypatch):
    monkeypatch.setattr(analysis, "routing_probs", lambda model: [model.last])


def test_the_whole_set_value_is_the_mutual_information_of_the_assignments(items):
    experts = torch.randint(0, 16, (48,), generator=torch.Generator().manual_seed(0))
    model = FixedRouting(torch.nn.functional.one_hot(experts, 16).float())  # each image one expert
    result = analysis.label_information_by_batch(model, items, batch_size=8)
    weathers = [item["weather"] for item in items]
    assert result["whole"] == pytest.approx([mutual_info_score(weathers, experts.numpy())], abs=1e-6)


def test_weather_routing_is_informative_at_any_batch_size_and_image_routing_only_in_batches(items):
    by_weather = torch.nn.functional.one_hot(torch.tensor([i["weather"] for i in items]), 16).float()
    result = analysis.label_information_by_batch(FixedRouting(by_weather), items, batch_size=8)
    assert result["whole"] == pytest.approx([math.log(4)])  # the expert tells the weather exactly
    assert result["batch"][0] > 0.8 * math.log(4)
    # every image its own experts, whatever its weather: little about the weather over a large set,
    # much in a batch of 8 (about 2 images per weather, each with its own experts)
    by_image = torch.softmax(4 * torch.randn(400, 16, generator=torch.Generator().manual_seed(1)), -1)
    result = analysis.label_information_by_batch(FixedRouting(by_image), weather_items(100), batch_size=8)
    assert result["whole"][0] < 0.1 and result["batch"][0] > 5 * result["whole"][0]


class BrightnessRouting(torch.nn.Module):
    """One routed layer, top-1: each 4x4 token goes to the expert of its grey level's quarter."""

    size_multiple = 4

    def forward(self, x):
        grey = torch.nn.functional.avg_pool2d(x.mean(1), 4)  # (1, h, w)
        indices = (grey * 4).long().clamp(max=3).unsqueeze(-1)  # (1, h, w, 1)
        return SimpleNamespace(routing=[(indices, torch.ones_like(indices, dtype=torch.float))])


def test_routing_drivers_find_a_choice_fixed_by_brightness_and_none_by_weather():
    generator = torch.Generator().manual_seed(0)
    levels = torch.tensor([0.1, 0.35, 0.6, 0.85]).repeat(4)  # 16 tokens, each level 4 times
    items = []
    for weather in [0, 1, 2, 3, 0, 2]:  # every image has the same brightness histogram
        tokens = levels[torch.randperm(16, generator=generator)].reshape(1, 1, 4, 4)
        image = torch.nn.functional.interpolate(tokens, scale_factor=4.0)[0].expand(3, -1, -1)
        items.append({"input": image, "target": image, "weather": weather})
    result = analysis.routing_drivers(BrightnessRouting(), items)
    assert result["brightness"] == pytest.approx([1.0])
    assert result["weather"] == pytest.approx([0.0], abs=1e-9)


def test_routing_drivers_weather_nmi_is_the_studys_routing_nmi():
    torch.manual_seed(0)
    model = create_model("restorer_tiny", ffn="mofme", num_experts=4, top_k=2).eval()
    side = 2 * model.size_multiple + 3  # padded like the model pads it
    items = [
        {"input": torch.rand(3, side, side), "target": torch.rand(3, side, side), "weather": w}
        for w in [0, 1, 1, 2, 3, 3, 0]
    ]
    result = analysis.routing_drivers(model, items, bins=3)
    assert result["weather"] == pytest.approx(routing_nmi(expert_counts(model, items)), abs=1e-9)
    assert set(result) == {"weather", *analysis.TOKEN_PROPERTIES}
    assert all(len(values) == len(result["weather"]) > 0 for values in result.values())
