"""`mofme study` on tiny settings: every variant and seed trained, summarised and reported."""

import functools
import json

import numpy as np
import pytest

from mofme.studies import study
from mofme.studies.study import STUDY_VARIANTS, run_study

TINY = [
    "model.name=restorer_tiny",
    "model.num_experts=4",
    "data.samples_per_epoch=8",
    "data.batch_size=4",
    "data.crop_size=32",
    "train.eval_every=1",
]


TRAINED = ["dense", "moe", "mofme", "mofme-uar"]  # every kind of result; all variants: below


@pytest.mark.parametrize("variant", STUDY_VARIANTS)
def test_every_study_variant_builds_the_ffn_it_names(tmp_path, variant):
    from mofme.nn import DenseFFN, MoFME, SparseMoE
    from mofme.studies.study import _config

    config = _config(STUDY_VARIANTS[variant], 0, tmp_path, TINY, 1)
    ffn = config.model.build().blocks[0].ffn
    expected = {"dense": DenseFFN, "moe": SparseMoE}.get(variant, MoFME)
    assert type(ffn) is expected
    if expected is MoFME:
        kind = next((k for k in ("lowrank", "static") if k in variant), "generator")
        assert ffn.modulation.kind == kind
        assert type(ffn.router).__name__ == ("UncertaintyAwareRouter" if "uar" in variant else "TopKRouter")


@pytest.mark.slow
def test_study_on_tiny_settings(tmp_path, monkeypatch):
    # one render per condition at 128 px (24 test images, not 96 at 256 px): the pipeline, not the protocol
    small_test_split = functools.partial(study.BuiltinWeatherDataset, renders=1, long_side=128)
    monkeypatch.setattr(study, "BuiltinWeatherDataset", small_test_split)
    result = run_study(tmp_path, seeds=2, steps=2, overrides=TINY, variants=TRAINED)
    summary = json.loads((tmp_path / "study.json").read_text())["summary"]
    assert list(summary) == TRAINED
    assert len(result.runs) == 2 * len(TRAINED)
    for variant, entry in summary.items():
        mean, std = entry["mean_psnr"]
        runs = [r["metrics"]["mean"]["psnr"] for r in result.runs if r["variant"] == variant]
        assert mean == pytest.approx(sum(runs) / 2) and std == pytest.approx(abs(runs[0] - runs[1]) / 2**0.5)
        assert entry["params"] > 0 and entry["latency_ms"] > 0
    assert "nmi" not in summary["dense"] and len(summary["moe"]["nmi"]) == 1  # tiny preset: depth 1
    assert all(0 <= m <= 1 for m, _ in summary["mofme"]["nmi"])
    counts = np.asarray(next(r for r in result.runs if r["variant"] == "mofme")["condition_counts"])
    assert counts.shape[1:3] == (4, 3)  # weathers x severities
    assert len(np.unique(counts.sum(-1))) == 1  # the test split renders every condition equally often
    assert len(summary["mofme"]["nmi_severity"]) == len(summary["mofme"]["nmi_condition"]) == 1
    assert "uar_change" in summary["mofme-uar"] and "uar_change" not in summary["mofme"]
    assert all(0 <= m <= 1 for m, _ in summary["mofme-uar"]["uar_change"])
    report = (tmp_path / "report.md").read_text()
    assert "NMI(severity; expert)" in report and "this invocation trained" not in report
    assert "Paired differences" in report and "| mofme - moe | 2 |" in report and "mofme-uar" in report
    paired = json.loads((tmp_path / "study.json").read_text())["paired"]
    assert set(paired) == {"mofme - moe", "mofme - dense", "mofme-uar - mofme"}  # no low-rank run here
    specialisation = json.loads((tmp_path / "study.json").read_text())["specialisation"]
    assert set(specialisation) == {"mofme", "mofme-uar"}  # the routed pairs; dense has no routing
    assert "| mofme-uar - mofme |" in report.split("## Specialisation target")[1]
    for name in (
        "psnr.png",
        "routing_moe.png",
        "routing_mofme.png",
        "routing_mofme-uar.png",
        "nmi_training.png",
        "specialisation.png",
    ):
        assert (tmp_path / name).stat().st_size > 0
    curves = {r["variant"]: r["nmi_curve"] for r in result.runs if r["seed"] == 0}
    assert curves["dense"] == [] and [p["step"] for p in curves["mofme"]] == [2]  # validated once, at the end
    # run again: every finished run is reused, none trained again
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/result.json")}
    again = run_study(tmp_path, seeds=2, steps=2, overrides=TINY, variants=TRAINED)
    assert [r["metrics"] for r in again.runs] == [r["metrics"] for r in result.runs]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/result.json")} == stamps
    assert "this invocation trained 0 of the 8 runs" in (tmp_path / "report.md").read_text()


def test_paired_comparisons_use_the_same_seeds_and_images_and_weigh_weathers_equally():
    from mofme.studies.study_report import paired_comparisons

    weathers = ["rain", "rain", "rain", "snow"]

    def run(variant, seed, psnrs):
        images = [
            {"name": f"img{i}", "weather": w, "psnr": p}
            for i, (w, p) in enumerate(zip(weathers, psnrs, strict=True))
        ]
        return {"variant": variant, "seed": seed, "images": images[::-1]}  # order must not matter

    runs = [
        run("moe", 0, [20, 21, 22, 30]),
        run("moe", 1, [20, 21, 22, 30]),
        run("mofme", 0, [21, 22, 23, 30.4]),  # +1 dB on rain, +0.4 on snow
        run("mofme", 1, [21, 22, 23, 30.6]),  # +1 dB on rain, +0.6 on snow
        run("mofme", 2, [0, 0, 0, 0]),  # a seed MoE lacks: left out of the pair
        run("dense", 0, [25, 25, 25, 25]),
    ]
    paired = paired_comparisons(runs)
    assert set(paired) == {"mofme - moe", "mofme - dense"}
    mofme_moe = paired["mofme - moe"]
    assert mofme_moe["seeds"] == 2 and mofme_moe["images"] == 4
    assert mofme_moe["mean"] == pytest.approx((1 + 0.5) / 2)  # each weather counts once
    assert mofme_moe["low"] <= mofme_moe["mean"] <= mofme_moe["high"] and mofme_moe["claim"] == 0.1
    assert mofme_moe["seed_sd"] == pytest.approx(np.std([0.7, 0.8], ddof=1))  # per-seed means 0.7, 0.8
    # rain +1 and snow +0.5 on average: (MS_image 0.125 - MS_resid 0.005) / 2 seeds x sum(w^2) 1/3
    assert mofme_moe["image_variance"] == pytest.approx(0.02)
    assert mofme_moe["seeds_for_target"] is None  # 1.96 x sqrt(0.02) > 0.1: no seed count suffices
    assert paired["mofme - dense"]["seeds"] == 1
