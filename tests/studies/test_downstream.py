"""The recognition comparison on tiny settings: runs, resumption of finished runs, the summary."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from mofme.apps import downstream


def test_summary_is_the_mean_and_std_over_seeds_of_each_runs_scores():
    runs = [
        {"variant": "dense", "params": 10, "overall": 0.5, "test": {"rain": 0.4, "snow": 0.6}},
        {"variant": "dense", "params": 10, "overall": 0.7, "test": {"rain": 0.8, "snow": 0.6}},
        {"variant": "moe", "params": 30, "overall": 0.9, "test": {"rain": 1.0, "snow": 0.8}},
    ]
    summary = downstream.summarise(runs)
    assert summary["dense"]["overall"]["mean"] == pytest.approx(0.6)
    assert summary["dense"]["overall"]["std"] == pytest.approx(statistics.stdev([0.5, 0.7]))
    assert summary["dense"]["rain"]["mean"] == pytest.approx(0.6) and summary["dense"]["snow"]["std"] == 0.0
    assert summary["moe"]["seeds"] == 1 and summary["moe"]["overall"]["std"] == 0.0
    assert summary["moe"]["params"] == 30


def test_comparison_runs_every_variant_and_seed_and_skips_finished_runs(tmp_path, monkeypatch):
    from mofme.train import data

    def small(split, **kwargs):  # one crop per class and condition in the val and test splits
        return downstream.SceneDataset(
            split, **kwargs, **({} if split == "train" else {"crops_per_class": 1})
        )

    monkeypatch.setattr(downstream, "_eval_set", lambda task, split: small(split))
    monkeypatch.setattr(data, "SceneDataset", small)
    trained = []
    real_train = downstream.train

    def counting_train(config, **kwargs):
        trained.append(config.train.output_dir)
        return real_train(config, **kwargs)

    monkeypatch.setattr(downstream, "train", counting_train)
    args = ["--task", "scenes", "--output", str(tmp_path), "--seeds", "2", "--steps", "2"]
    args += ["data.samples_per_epoch=16", "data.batch_size=8", "--variants", "dense", "mofme"]
    assert downstream.main(args) == 0
    assert len(trained) == 4
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["summary"]) == {"dense", "mofme"}
    for run in summary["runs"]:
        assert run["steps"] == 2  # one epoch of 16 / 8 steps
        assert set(run["test"]) == {"clean", "rain", "snow", "haze", "raindrop"}
    assert summary["summary"]["dense"]["params"] < summary["summary"]["mofme"]["params"]
    report = (tmp_path / "report.md").read_text()
    assert "| mofme | 2 |" in report and "Routing vs weather type" in report
    for run in summary["runs"]:  # the routing analysis of every routed run, one entry per layer
        if run["variant"] == "dense":
            assert "routing" not in run
        else:
            assert [layer["layer"] for layer in run["routing"]] == [0, 1]  # classifier_tiny: depth 2
            for layer in run["routing"]:
                assert (
                    0 <= layer["weather_accuracy"] <= 1 and 0 <= layer["ece"] <= 1 and 0 <= layer["nmi"] <= 1
                )
    assert downstream.main(args) == 0 and len(trained) == 4  # finished runs are read back, not retrained


def test_routing_calibration_against_a_hand_computation():
    from mofme.studies.analysis import routing_weather_calibration

    weathers = np.array([0, 1, 2, 3] * 3)
    experts = np.eye(4)[weathers][:, None, :]  # one layer; expert e serves weather e alone
    perfect = routing_weather_calibration((experts, weathers), (experts, weathers))
    assert perfect[0]["weather_accuracy"] == 1.0 and perfect[0]["ece"] == pytest.approx(0.0, abs=1e-6)
    uniform = np.full((12, 1, 4), 0.25)  # every image spreads its tokens evenly: p(w) = 1/4 each
    test_weathers = np.array([0, 0, 0, 1, 2, 3, 3, 1, 2, 0, 1, 2])
    result = routing_weather_calibration((experts, weathers), (uniform, test_weathers))[0]
    accuracy = np.mean(test_weathers == 0)  # ties resolve to the first class
    assert result["weather_accuracy"] == pytest.approx(accuracy)
    assert result["ece"] == pytest.approx(abs(accuracy - 0.25), abs=1e-6)  # one bin, confidence 1/4
