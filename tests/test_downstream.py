"""The recognition comparison on tiny settings: runs, resumption of finished runs, the summary."""

from __future__ import annotations

import json
import statistics

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
    monkeypatch.setattr(
        downstream, "_test_set", lambda task: downstream.SceneDataset("test", crops_per_class=1)
    )
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
    assert "| mofme | 2 |" in (tmp_path / "report.md").read_text()
    assert downstream.main(args) == 0 and len(trained) == 4  # finished runs are read back, not retrained
