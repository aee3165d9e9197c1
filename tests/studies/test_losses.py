"""The study's routing losses (mofme.studies.losses) and their trainer hook (loss.extra)."""

import math

import pytest
import torch

from mofme.nn import TopKRouter
from mofme.studies.losses import label_expert_mutual_information, label_group_loss
from tests.deprecation import deprecation_message


def test_label_expert_mutual_information_matches_scikit_learn():
    from sklearn.metrics import mutual_info_score

    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 2, 2, 2, -1, 1])
    hard = torch.randint(0, 5, (8,), generator=generator)
    kept = labels >= 0
    expected = mutual_info_score(labels[kept].numpy(), hard[kept].numpy())  # hard assignments
    got = label_expert_mutual_information(torch.nn.functional.one_hot(hard, 5).float(), labels, 3)
    assert float(got) == pytest.approx(expected, abs=1e-6)
    # soft probabilities in tenths, so that the expected contingency table x 10 is whole (scikit-learn's form)
    tenths = torch.nn.functional.one_hot(torch.randint(0, 5, (8, 10), generator=generator), 5).sum(dim=1)
    soft = tenths.float() / 10
    contingency = torch.nn.functional.one_hot(labels[kept], 3).T @ tenths[kept]
    expected = mutual_info_score(None, None, contingency=contingency.numpy())
    assert float(label_expert_mutual_information(soft, labels, 3)) == pytest.approx(expected, abs=1e-6)
    assert float(label_expert_mutual_information(soft, torch.full((8,), -1), 3)) == 0.0


def test_maximising_label_expert_information_teaches_a_router_to_separate_labels():
    from sklearn.metrics import normalized_mutual_info_score

    torch.manual_seed(0)
    centres = torch.randn(4, 16)  # four labels, each a noisy cluster of tokens; four experts
    labels = torch.arange(4).repeat_interleave(64)
    tokens = centres[labels] + 1.0 * torch.randn(256, 16)
    router = TopKRouter(16, 4, 2)

    def nmi() -> float:
        with torch.no_grad():
            chosen = router(tokens).indices[:, 0]
        return normalized_mutual_info_score(labels.numpy(), chosen.numpy())

    before = nmi()
    optimizer = torch.optim.Adam(router.parameters(), lr=0.05)
    for _ in range(100):
        loss = -label_expert_mutual_information(router(tokens).probs, labels, 4)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert before < 0.3 and nmi() > 0.95


def test_label_group_loss_is_the_cross_entropy_of_the_labels_expert_group():

    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(5, 3, 8, generator=generator), -1)  # 5 samples, 3 tokens, 8 experts
    labels = torch.tensor([0, 3, -1, 1, 3])
    terms = []
    for i, label in enumerate(labels.tolist()):
        if label >= 0:  # four labels: experts {0,1}, {2,3}, {4,5}, {6,7}
            terms += [-math.log(float(probs[i, t, 2 * label] + probs[i, t, 2 * label + 1])) for t in range(3)]
    assert float(label_group_loss(probs, labels, 4)) == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    uniform = torch.full((2, 3, 8), 1 / 8)
    assert float(label_group_loss(uniform, torch.tensor([0, 2]), 4)) == pytest.approx(math.log(4))
    inside = torch.nn.functional.one_hot(torch.tensor([[4, 5]]), 8).float()  # label 2's experts only
    assert float(label_group_loss(inside, torch.tensor([2]), 4)) == pytest.approx(0.0, abs=1e-9)
    assert float(label_group_loss(probs, torch.full((5,), -1), 4)) == 0.0
    with pytest.raises(ValueError, match="one expert per label"):
        label_group_loss(probs[..., :3], labels, 4)


def test_old_layer_library_names_still_import_with_a_warning_and_nn_knows_no_weather():
    message = deprecation_message(
        "from mofme.nn import label_group_loss",
        "from mofme.nn import label_group_loss as old\nfrom mofme.studies.losses import label_group_loss as new\n"
        "assert old is new",
    )
    assert "mofme.nn.label_group_loss moved to mofme.studies.losses.label_group_loss" in message
    from pathlib import Path

    import mofme.nn

    for path in Path(mofme.nn.__file__).parent.rglob("*.py"):
        assert "weather" not in path.read_text().lower(), path


def test_an_extra_loss_nothing_registered_is_named_before_training():
    from mofme.train.config import load_config
    from mofme.train.hooks import extra_loss

    config = load_config(None, ["loss.extra={no_such_term: 0.5}"])
    assert config.loss.extra == {"no_such_term": 0.5}
    with pytest.raises(ValueError, match=r"no extra loss .no_such_term. is registered.*weather_groups"):
        extra_loss("no_such_term")


def test_old_flat_weather_fields_are_read_as_extra_terms_with_a_warning():
    from mofme.train.config import load_config

    with pytest.warns(FutureWarning, match=r"write loss.extra: \{weather_mi: 0.1\}"):
        old = load_config(None, ["loss.weather_mi=0.1", "loss.weather_groups=0.0"])
    assert old.loss.extra == {"weather_mi": 0.1}  # a zero weight (as saved runs wrote it) is no term
    assert old.same_as(load_config(None, ["loss.extra={weather_mi: 0.1}"]).to_yaml())
