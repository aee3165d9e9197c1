"""The study's orchestration without training: the variant grid, settings files, reuse and
resume of finished and stopped runs, the scaling and NMI-curve reports."""

import json

import numpy as np
import pytest

from mofme.apps import study
from mofme.studies.study import STUDY_VARIANTS, load_settings, study_grid
from mofme.studies.study_report import (
    _scaling_section,
    expert_scaling,
    paired_comparisons,
    plot_nmi_curves,
    plot_scaling,
)


def test_study_grid_runs_each_routed_variant_at_every_expert_count_and_dense_once():
    grid = study_grid(["dense", "moe", "mofme"], experts=[4, 64])
    assert list(grid) == ["dense", "moe-e4", "moe-e64", "mofme-e4", "mofme-e64"]
    assert grid["dense"] == STUDY_VARIANTS["dense"]
    assert grid["mofme-e64"] == [*STUDY_VARIANTS["mofme"], "model.num_experts=64"]
    assert study_grid(["moe"]) == {"moe": STUDY_VARIANTS["moe"]}
    with pytest.raises(ValueError, match="unknown study variant"):
        study_grid(["mofme-nonsense"])


def test_settings_files_add_named_variants_and_bad_ones_are_named(tmp_path):
    good = tmp_path / "sweep.yaml"
    good.write_text('bal0: [model.ffn=mofme, "model.router_kwargs={balance_coef: 0.0}"]\n')
    settings = load_settings(good)
    assert settings == {"bal0": ["model.ffn=mofme", "model.router_kwargs={balance_coef: 0.0}"]}
    table = {**STUDY_VARIANTS, **settings}
    assert study_grid(["bal0", "moe"], table=table)["bal0"] == settings["bal0"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("bal0: model.ffn=mofme\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*bal0"):
        load_settings(bad)
    bad.write_text("'a b': [model.ffn=mofme]\n")
    with pytest.raises(ValueError, match="setting name"):
        load_settings(bad)
    bad.write_text("mofme-e4: [model.num_experts=4]\n")  # would read as a scaling study's run at E=4
    with pytest.raises(ValueError, match="scaling run"):
        load_settings(bad)


def _tiny_config(tmp_path, overrides=()):
    tiny = [
        "model.name=restorer_tiny",
        "model.num_experts=4",
        "data.samples_per_epoch=8",
        "data.batch_size=4",
    ]
    return study._config(STUDY_VARIANTS["mofme"], 0, tmp_path / "run", [*tiny, *overrides], 1)


def test_a_stopped_run_is_resumed_and_a_changed_one_restarted(tmp_path, monkeypatch):
    calls = []

    class Result:
        best_dir, steps = tmp_path / "run" / "best", 2

    def fake_train(config, *, resume=False):
        calls.append(resume)
        return Result()

    monkeypatch.setattr(study, "train", fake_train)
    config = _tiny_config(tmp_path)
    run_dir = tmp_path / "run"
    study._trained(config)  # nothing there yet
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(config.to_yaml())
    study._trained(config)  # same configuration, with checkpoints: continue
    changed = _tiny_config(tmp_path, ["optim.lr=0.5"])
    study._trained(changed)  # another configuration: start again, the old run removed
    assert calls == [False, True, False]
    assert not (run_dir / "checkpoints").exists()


def test_a_finished_run_is_reused_only_with_the_same_configuration(tmp_path, monkeypatch):
    tiny = [
        "model.name=restorer_tiny",
        "model.num_experts=4",
        "data.samples_per_epoch=8",
        "data.batch_size=4",
    ]
    config = study._config(STUDY_VARIANTS["mofme"], 0, tmp_path / "runs" / "mofme-seed0", tiny, 1)
    (tmp_path / "runs" / "mofme-seed0").mkdir(parents=True)
    # result.json alone: no weights, as when a study continues from copies of it
    # saved under another name (a run copied from another study): named by this study's grid
    saved = {"variant": "mofme-e4", "seed": 0, "metrics": {"mean": {"psnr": 1.0}}, "expert_counts": None}
    (tmp_path / "runs" / "mofme-seed0" / "result.json").write_text(
        json.dumps({"config": config.to_yaml(), "run": saved})
    )
    trained = []
    monkeypatch.setattr(study, "_train_and_score", lambda config, *a, **k: trained.append(config) or saved)

    def grid(extra):
        return study._run_grid(
            {"mofme": STUDY_VARIANTS["mofme"]},
            [],
            recipe=study.RECIPE,
            seeds=1,
            epochs=1,
            output=tmp_path,
            overrides=[*tiny, *extra],
        )

    runs, _, count = grid([])
    assert runs == [{**saved, "variant": "mofme"}] and count == 0 and trained == []
    _, _, count = grid(["optim.lr=0.5"])  # another configuration in the same folder: trained again
    assert count == 1 and trained[0].optim.lr == 0.5


def test_a_run_copied_to_another_folder_is_the_same_run(tmp_path):
    # the scaling study reuses the main comparison's E=16 runs by copying their folders
    config = _tiny_config(tmp_path)
    moved = study._config(
        STUDY_VARIANTS["mofme"],
        0,
        tmp_path / "elsewhere" / "mofme-e4-seed0",
        ["model.name=restorer_tiny", "model.num_experts=4", "data.samples_per_epoch=8", "data.batch_size=4"],
        1,
    )
    assert moved.train.output_dir != config.train.output_dir
    assert moved.same_as(config.to_yaml())
    assert not _tiny_config(tmp_path, ["train.seed=1"]).same_as(config.to_yaml())


def test_a_field_added_later_at_its_default_keeps_a_finished_run(tmp_path):
    config = _tiny_config(tmp_path)
    saved = config.to_yaml()
    older = saved.replace("  particle_weight: 0.0\n", "")  # written before loss.particle_weight existed
    assert older != saved and config.same_as(older)
    assert not _tiny_config(tmp_path, ["loss.particle_weight=2"]).same_as(older)
    assert not config.same_as(saved.replace("lr:", "lr_typo:"))  # no longer a valid configuration
    assert not config.same_as("{unclosed")


def test_nmi_curve_keeps_one_point_per_step_from_the_log(tmp_path):
    lines = [
        {"step": 4, "kind": "routing", "nmi_layer1": 0.2, "nmi_layer0": 0.1},
        {"step": 4, "kind": "val", "psnr_mean": 20.0},
        {"step": 8, "kind": "routing", "nmi_layer0": 0.3, "nmi_layer1": 0.4},
        {"step": 8, "kind": "routing", "nmi_layer0": 0.5, "nmi_layer1": 0.6},  # logged again after a resume
    ]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    assert study._nmi_curve(tmp_path) == [{"step": 4, "nmi": [0.1, 0.2]}, {"step": 8, "nmi": [0.5, 0.6]}]
    assert study._nmi_curve(tmp_path / "missing") == []


def _summary_entry(params, latency, psnr):
    return {"params": params, "latency_ms": latency, "mean_psnr": (psnr, 0.1), "seeds": 2}


def test_expert_scaling_rows_are_sorted_by_expert_count_and_plotted(tmp_path):
    summary = {
        "dense": _summary_entry(100, 1.0, 20.0),
        "moe-e64": _summary_entry(6400, 3.0, 21.0),
        "moe-e4": _summary_entry(400, 2.0, 20.5),
        "mofme-e4": _summary_entry(150, 1.5, 20.7),
    }
    scaling = expert_scaling(summary)
    assert list(scaling) == ["moe", "mofme"]
    assert [r["experts"] for r in scaling["moe"]] == [4, 64]
    assert scaling["moe"][1] == {
        "experts": 64,
        "params": 6400,
        "latency_ms": 3.0,
        "mean_psnr": (21.0, 0.1),
        "seeds": 2,
    }
    assert expert_scaling({"dense": summary["dense"]}) == {}
    table = "\n".join(
        _scaling_section({**scaling, "moe": [*scaling["moe"], {**scaling["moe"][0], "experts": 16}]})
    )
    # ratios to the row at E=16 where it ran (moe), else to the smallest E (mofme)
    assert "| moe | 64 | 6,400 | 16.00x | 3.0 | 1.50x | 21.00 +- 0.10 |" in table
    assert "| mofme | 4 | 150 | 1.00x | 1.5 | 1.00x | 20.70 +- 0.10 |" in table
    plot_scaling(scaling, tmp_path / "scaling.png", dense=summary["dense"])
    assert (tmp_path / "scaling.png").stat().st_size > 0


def test_a_scaling_study_pairs_variants_at_the_same_expert_count():
    rng = np.random.default_rng(0)

    def run(variant, seed, offset):
        images = [
            {"name": f"i{i}", "weather": w, "psnr": 20 + offset + rng.normal(0, 0.01)}
            for i, w in enumerate("rrss")
        ]
        return {"variant": variant, "seed": seed, "images": images}

    runs = [
        run(v, s, o)
        for s in (0, 1)
        for v, o in (("moe-e4", 0), ("mofme-e4", 1), ("moe-e16", 0), ("dense", 0))
    ]
    paired = paired_comparisons(runs)
    assert set(paired) == {"mofme-e4 - moe-e4", "mofme-e4 - dense", "moe-e4 - moe-e16"}
    assert paired["mofme-e4 - moe-e4"]["mean"] == pytest.approx(1.0, abs=0.05)


def test_a_scaling_study_pairs_each_variant_with_itself_at_the_reference_expert_count():
    """E=16 (the recipe's) is the reference when it ran, else the smallest E; the difference is
    the known offset between the expert counts."""
    rng = np.random.default_rng(1)
    offsets = {4: 0.0, 16: 0.5, 128: -0.3}

    def run(variant, seed, offset):
        images = [
            {"name": f"i{i}", "weather": w, "psnr": 20 + offset + rng.normal(0, 0.01)}
            for i, w in enumerate("rrss")
        ]
        return {"variant": variant, "seed": seed, "images": images}

    runs = [run(f"moe-e{e}", s, o) for s in (0, 1, 2) for e, o in offsets.items()]
    runs += [run(f"mofme-e{e}", s, offsets[e]) for s in (0, 1, 2) for e in (4, 128)]
    paired = paired_comparisons(runs)
    across = {"mofme-e4 - moe-e4", "mofme-e128 - moe-e128"}  # PAIRS at each E both ran
    assert set(paired) == across | {"moe-e4 - moe-e16", "moe-e128 - moe-e16", "mofme-e128 - mofme-e4"}
    assert paired["moe-e128 - moe-e16"]["mean"] == pytest.approx(-0.8, abs=0.05)
    assert paired["moe-e4 - moe-e16"]["mean"] == pytest.approx(-0.5, abs=0.05)
    assert paired["mofme-e128 - mofme-e4"]["mean"] == pytest.approx(-0.3, abs=0.05)
    assert paired["moe-e128 - moe-e16"]["title"] == "moe: E=128 vs E=16"


def test_nmi_curves_are_plotted_only_when_runs_logged_them(tmp_path):
    runs = [{"variant": "mofme", "nmi_curve": []}]
    assert not plot_nmi_curves(runs, tmp_path / "none.png") and not (tmp_path / "none.png").exists()
    runs = [
        {"variant": "mofme", "nmi_curve": [{"step": 4, "nmi": [0.1, 0.3]}, {"step": 8, "nmi": [0.2, 0.1]}]}
    ]
    assert plot_nmi_curves(runs, tmp_path / "nmi.png") and (tmp_path / "nmi.png").stat().st_size > 0


def test_every_shipped_specialisation_setting_builds_a_routed_model():
    import torch

    from mofme.nn import MoFME

    settings = load_settings("specialisation")
    assert len(settings) >= 6
    for name, overrides in settings.items():
        config = study._config(overrides, 0, "unused", [], 1)
        with torch.device("meta"):
            ffn = config.model.build().blocks[0].ffn
        assert isinstance(ffn, MoFME), name
        assert config.train.log_routing  # every study run logs its routing over training


def test_a_study_can_run_on_another_recipe():
    paper = study._config(STUDY_VARIANTS["moe"], 1, "unused", [], 2, recipe="allweather_paper_mofme")
    assert (paper.model.name, paper.model.ffn, paper.train.seed, paper.train.epochs) == (
        "restorer_paper",
        "moe",
        1,
        2,
    )
    assert study._config(STUDY_VARIANTS["moe"], 1, "unused", [], 2).model.name == "restorer_small"


def test_settings_are_paired_with_the_variant_they_change():
    from mofme.studies.study_report import setting_pairs

    def run(variant, seed, offset):
        images = [
            {"name": f"i{i}", "weather": w, "psnr": 20.0 + offset + 0.01 * i} for i, w in enumerate("rrss")
        ]
        return {"variant": variant, "seed": seed, "images": images}

    runs = [run("mofme", s, 0) for s in (0, 1)] + [run("mofme-k1", s, -0.3) for s in (0, 1)]
    assert paired_comparisons(runs) == {}  # a setting is no pair of PAIRS
    paired = paired_comparisons(runs, setting_pairs(["mofme", "mofme-k1"]))
    assert set(paired) == {"mofme-k1 - mofme"}
    assert paired["mofme-k1 - mofme"]["mean"] == pytest.approx(-0.3)


def test_a_routed_run_saved_before_the_severity_analysis_gets_it_from_its_weights(tmp_path, monkeypatch):
    import torch

    from mofme.models import create_model

    torch.manual_seed(0)
    model = create_model("restorer_tiny", ffn="mofme", num_experts=4, top_k=2)
    side = 2 * model.size_multiple
    test = [{"input": torch.rand(3, side, side), "weather": w, "severity": s} for w, s in [(0, 1), (1, 3)]]
    monkeypatch.setattr(study, "load_restorer", lambda path: model)
    old = {"variant": "mofme", "seed": 0, "nmi": [0.5], "expert_counts": [[[1, 0, 0, 0]] * 4]}
    for name, run in (("old", old), ("dense", {**old, "nmi": [], "expert_counts": None})):
        (tmp_path / name / "best").mkdir(parents=True)
        (tmp_path / name / "result.json").write_text(json.dumps({"config": "c", "run": run}))
    updated = study._with_severity_routing(
        json.loads((tmp_path / "old" / "result.json").read_text()), tmp_path / "old" / "result.json", test
    )
    counts = np.asarray(updated["condition_counts"])  # (layers, weathers, severities, experts)
    assert counts.shape[1:] == (4, 3, 4) and counts[:, 0, 0].sum() == counts[:, 1, 2].sum() > 0
    assert counts[:, 2:].sum() == 0 and counts[:, :, 1].sum() == 0  # no item there
    assert updated["expert_counts"] == counts.sum(2).tolist()
    assert len(updated["nmi_severity"]) == len(updated["nmi_condition"]) == len(counts)
    assert json.loads((tmp_path / "old" / "result.json").read_text())["run"] == updated  # written back
    dense = json.loads((tmp_path / "dense" / "result.json").read_text())
    assert study._with_severity_routing(dense, tmp_path / "dense" / "result.json", test) == dense["run"]


def test_routing_heatmap_rows_are_weather_x_severity_when_the_run_has_them(tmp_path, monkeypatch):
    captured = {}
    monkeypatch.setattr(
        study, "routing_heatmaps", lambda usage, labels, path: captured.update(u=usage, l=labels)
    )
    counts = np.random.default_rng(0).integers(
        1, 9, size=(2, 4, 3, 5)
    )  # layers, weathers, severities, experts
    study._routing_heatmap(
        {"condition_counts": counts.tolist(), "expert_counts": counts.sum(2).tolist()}, tmp_path
    )
    assert captured["u"].shape == (2, 12, 5) and captured["l"][:4] == [
        "rain s1",
        "rain s2",
        "rain s3",
        "snow s1",
    ]
    np.testing.assert_allclose(captured["u"][1, 4], counts[1, 1, 1] / counts[1, 1, 1].sum())  # snow s2
    study._routing_heatmap({"expert_counts": counts.sum(2).tolist()}, tmp_path)  # saved before severities
    assert captured["u"].shape == (2, 4, 5) and captured["l"] == list(study.WEATHER_TYPES)


def test_specialisation_points_take_each_routed_pairs_best_layer_and_say_which_meets_the_target(tmp_path):
    from mofme.studies.study_report import plot_specialisation, specialisation_points

    def entry(nmi):
        return {"nmi": [(value, 0.01) for value in nmi]} if nmi else {}

    summary = {
        "mofme": entry([0.03, 0.06]),
        "mofme-groups": entry([0.25, 0.21]),
        "mofme-labels": entry([0.1, 0.4]),
        "mofme-image": entry([0.3, 0.2]),
        "mofme-k1": entry([0.15, 0.1]),
        "mofme-once": entry([0.25, 0.21]),
        "dense": entry([]),
    }
    paired = {
        "mofme-groups - mofme": {"mean": -0.02, "low": -0.08, "high": 0.04, "seeds": 5},
        "mofme-labels - mofme": {"mean": -0.15, "low": -0.3, "high": 0.0, "seeds": 5},
        "mofme-image - mofme": {"mean": -0.4, "low": -0.5, "high": -0.3, "seeds": 5},
        "mofme-k1 - mofme": {"mean": 0.1, "low": 0.0, "high": 0.2, "seeds": 5},
        "mofme-once - mofme": {"mean": -0.02, "low": -0.08, "high": 0.04, "seeds": 1},
        "mofme - dense": {"mean": 0.5, "low": 0.4, "high": 0.6, "seeds": 5},  # dense has no routing: no point
    }
    points = specialisation_points(summary, paired)
    assert list(points) == ["mofme-groups", "mofme-labels", "mofme-image", "mofme-k1", "mofme-once"]
    assert points["mofme-labels"]["nmi"] == 0.4 and points["mofme-labels"]["baseline_nmi"] == 0.06
    assert points["mofme-groups"]["target"] == "met"
    assert "not excluded" in points["mofme-labels"]["target"]
    assert "loses more" in points["mofme-image"]["target"]
    assert "below" in points["mofme-k1"]["target"]
    assert "no decision" in points["mofme-once"]["target"]  # one seed: its interval covers images only
    plot_specialisation(points, tmp_path / "specialisation.png")
    assert (tmp_path / "specialisation.png").stat().st_size > 0
    assert (
        specialisation_points(
            {"mofme": entry([0.1]), "dense": {}}, {"mofme - dense": paired["mofme - dense"]}
        )
        == {}
    )
