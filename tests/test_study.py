"""`mofme study` on tiny settings: every variant and seed trained, summarised and reported."""

import json

import pytest

from mofme.apps.study import STUDY_VARIANTS, run_study

TINY = [
    "model.preset=tiny",
    "model.num_experts=4",
    "data.samples_per_epoch=8",
    "data.batch_size=4",
    "data.crop_size=32",
    "train.eval_every=1",
]


TRAINED = ["dense", "moe", "mofme", "mofme-uar"]  # every kind of result; all variants: below


@pytest.mark.parametrize("variant", STUDY_VARIANTS)
def test_every_study_variant_builds_the_ffn_it_names(tmp_path, variant):
    from mofme.apps.study import _config
    from mofme.nn import DenseFFN, MoFME, SparseMoE

    config = _config(variant, 0, tmp_path, TINY, 1)
    ffn = config.model.build().blocks[0].ffn
    expected = {"dense": DenseFFN, "moe": SparseMoE}.get(variant, MoFME)
    assert type(ffn) is expected
    if expected is MoFME:
        assert ffn.modulation.kind == ("lowrank" if "lowrank" in variant else "generator")
        assert type(ffn.router).__name__ == ("UncertaintyAwareRouter" if "uar" in variant else "TopKRouter")


@pytest.mark.slow
def test_study_on_tiny_settings(tmp_path):
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
    assert "uar_change" in summary["mofme-uar"] and "uar_change" not in summary["mofme"]
    assert all(0 <= m <= 1 for m, _ in summary["mofme-uar"]["uar_change"])
    report = (tmp_path / "report.md").read_text()
    assert "MoFME vs MoE" in report and "mofme-uar" in report
    for name in ("psnr.png", "routing_moe.png", "routing_mofme.png", "routing_mofme-uar.png"):
        assert (tmp_path / name).stat().st_size > 0
