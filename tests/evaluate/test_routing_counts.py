"""The routing counts behind the study's NMI: split by weather and severity, checked against a
recount of each item's own routing, and NMI against cases with a known answer."""

import numpy as np
import pytest
import torch

from mofme.data import SEVERITIES, WEATHER_TYPES
from mofme.evaluate.routing import condition_counts, expert_counts, routing_nmi
from mofme.models import create_model

EXPERTS, TOP_K = 4, 2


@pytest.fixture(scope="module")
def model_and_items():
    torch.manual_seed(0)
    model = create_model("restorer_tiny", ffn="mofme", num_experts=EXPERTS, top_k=TOP_K).eval()
    side = 2 * model.size_multiple
    conditions = [(0, 1), (0, 3), (2, 2), (3, 1), (3, 1), (-1, 0)]  # (weather, severity); -1: clean
    items = [{"input": torch.rand(3, side, side), "weather": w, "severity": s} for w, s in conditions]
    return model, items


def test_condition_counts_recount_each_items_routing(model_and_items):
    model, items = model_and_items
    counts = condition_counts(model, items)
    expected = np.zeros_like(counts)
    with torch.no_grad():
        for item in items[:-1]:  # the clean item is not counted
            routing = [i for i, _ in model(item["input"][None]).routing if i is not None]
            for layer, indices in enumerate(routing):
                for expert in indices.flatten().tolist():
                    expected[layer, item["weather"], SEVERITIES.index(item["severity"]), expert] += 1
    assert counts.shape == (len(expected), len(WEATHER_TYPES), len(SEVERITIES), EXPERTS)
    np.testing.assert_array_equal(counts, expected)
    assert counts[:, 3, 0].sum() == 2 * counts[:, 0, 0].sum() > 0  # two items in that cell
    np.testing.assert_array_equal(counts.sum(2), expert_counts(model, items))


def test_routing_nmi_is_one_for_a_choice_fixed_by_the_label_and_zero_for_independence():
    determined = np.zeros((1, 3, 3), dtype=np.int64)
    determined[0, [0, 1, 2], [2, 0, 1]] = 50  # each label sends all its tokens to its own expert
    independent = np.full((1, 3, 4), 7, dtype=np.int64)
    assert routing_nmi(determined) == pytest.approx([1.0])
    assert routing_nmi(independent) == pytest.approx([0.0], abs=1e-12)
