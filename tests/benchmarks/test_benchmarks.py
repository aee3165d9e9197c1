"""The benchmark scripts on tiny settings: every row present, FLOPs against closed forms, JSON and plot written."""

import argparse
import json
from pathlib import Path

import pytest
import torch

from mofme.benchmarks import fastpath, layers, render, restorer
from mofme.benchmarks.targets import load_limits
from mofme.data import SEVERITIES, WEATHER_TYPES


def test_layer_benchmark_rows_flops_and_json(tmp_path, capsys):
    out = tmp_path / "layers.json"
    dim, tokens = 16, 20
    args = [
        "--experts",
        "4",
        "--top-k",
        "1",
        "2",
        "--dim",
        str(dim),
        "--tokens",
        str(tokens),
        "--repeats",
        "1",
    ]
    args += ["--warmup", "0", "--router-experts", "4", "--router-top-k", "2", "--json", str(out)]
    assert layers.main(args) == 0
    result = json.loads(out.read_text())
    rows = {(r["layer"], r["top_k"]): r for r in result["rows"]}
    hidden = 4 * dim
    assert rows[("dense", 0)]["gflops"] == pytest.approx(2 * tokens * 2 * dim * hidden / 1e9)
    # sparse MoE at k: k expert FFNs per token plus the router
    router = 2 * tokens * dim * 4 / 1e9
    assert rows[("moe", 2)]["gflops"] == pytest.approx(2 * rows[("dense", 0)]["gflops"] + router)
    assert rows[("mofme-generator", 2)]["gflops"] < rows[("mofme-generator-reference", 2)]["gflops"]
    # low-rank r = D / 8: 3 D r = 0.375 D^2 multiply-adds per chosen expert instead of 2 D^2
    per_token = 2 * (2 - 0.375) * dim * dim * 2 / 1e9
    assert rows[("mofme-generator", 2)]["gflops"] - rows[("mofme-lowrank", 2)]["gflops"] == pytest.approx(
        tokens * per_token
    )
    assert rows[("moe", 1)]["gflops"] < rows[("moe", 2)]["gflops"]
    assert result["router_training"]["uar_vs_linear"] > 0
    assert "| mofme-static |" in capsys.readouterr().out


def test_layer_benchmark_training_mode_and_the_mixtral_baseline(tmp_path):
    pytest.importorskip("transformers")
    from mofme.benchmarks.mixtral import MixtralLayer, equal_flops_hidden, implementations

    dim, tokens = 16, 20
    common = ["--experts", "4", "--top-k", "2", "--dim", str(dim), "--tokens", str(tokens)]
    common += ["--repeats", "1", "--warmup", "0", "--router-experts", "0", "--mixtral"]
    for mode in ("forward", "train"):
        assert layers.main([*common, "--mode", mode, "--json", str(tmp_path / f"{mode}.json")]) == 0
    forward, train = (
        {r["layer"]: r for r in json.loads((tmp_path / f"{m}.json").read_text())["rows"]}
        for m in ("forward", "train")
    )
    assert {f"mixtral-{i}" for i in implementations()} <= forward.keys() and "mixtral-eager" in forward
    # backward: the weight gradients of both matmuls and the input gradient of the second
    assert train["dense"]["gflops"] == pytest.approx(2.5 * forward["dense"]["gflops"])
    # equal FLOPs: a SwiGLU expert of width 2H/3 costs what a GELU expert of width H does
    assert equal_flops_hidden(384) == 1024 and 3 * 384 * equal_flops_hidden(384) == 2 * 384 * 1536
    eager = MixtralLayer(dim, 4, 2, hidden=equal_flops_hidden(dim))
    x = torch.randn(tokens, dim)
    for implementation in implementations():  # every backend computes the same block
        other = MixtralLayer(dim, 4, 2, hidden=equal_flops_hidden(dim), implementation=implementation)
        other.load_state_dict(eager.state_dict())
        torch.testing.assert_close(other(x), eager(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not offered"):
        MixtralLayer(dim, 4, 2, hidden=8, implementation="nonsense")


def test_restorer_benchmark_rows_targets_json_and_plot(tmp_path):
    parser = argparse.ArgumentParser()
    restorer.add_arguments(parser)
    tiny = [
        "--preset",
        "tiny",
        "--experts",
        "2",
        "4",
        "--top-k",
        "1",
        "--size",
        "32",
        "--warmup",
        "0",
        "--repeats",
        "1",
    ]
    files = ["--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png")]
    limits = tmp_path / "targets.toml"
    limits.write_text('[restorer]\n"E=4: params: MoFME generator / MoE" = 0.5\n"E=8: never measured" = 1\n')
    files += ["--targets", str(limits)]
    args = parser.parse_args([*tiny, "--train-repeats", "1", "--device", "cpu", *files])
    result = restorer.run(args)
    rows = result["rows"]
    assert len(rows) == 14  # two groups of seven, each timed side by side
    assert [r["model"] for r in rows[7:]] == [
        "dense",
        "moe",
        "mofme-generator",
        "mofme-lowrank",
        "mofme-static",
        "moe-reference",
        "mofme-generator-reference",
    ]
    by = {(r["model"], r["experts"]): r for r in rows}
    assert by[("moe-reference", 4)]["params"] == by[("moe", 4)]["params"]
    assert by[("moe-reference", 4)]["gflops"] > by[("moe", 4)]["gflops"]  # k=1 of 4 experts
    assert by[("mofme-generator", 4)]["params"] < by[("moe", 4)]["params"]
    assert (
        by[("mofme-static", 4)]["params"]
        < by[("mofme-lowrank", 4)]["params"]
        < by[("mofme-generator", 4)]["params"]
    )
    assert all(
        r["memory_mb"] > 0 and r["train_step_ms"] > 0 for r in rows if not r["model"].endswith("reference")
    )
    ratio = by[("mofme-generator", 4)]["params"] / by[("moe", 4)]["params"]
    assert result["ratios"]["E=4: params: MoFME generator / MoE"] == pytest.approx(ratio)
    assert result["targets"] == [
        {
            "target": "E=4: params: MoFME generator / MoE",
            "measured": round(ratio, 3),
            "limit": 0.5,
            "ok": ratio <= 0.5,
        }
    ]
    assert json.loads((tmp_path / "b.json").read_text())["rows"] == rows
    assert (tmp_path / "b.png").stat().st_size > 0


def test_render_benchmark_times_every_weather_and_severity(tmp_path, capsys):
    output = tmp_path / "render.json"
    assert render.main(["--size", "32", "--repeats", "1", "--output", str(output)]) == 0
    seconds = json.loads(output.read_text())["seconds"]
    assert set(seconds) == set(WEATHER_TYPES)
    assert all(set(row) == {str(s) for s in SEVERITIES} and min(row.values()) > 0 for row in seconds.values())
    assert capsys.readouterr().out.count("\n") == 2 + len(WEATHER_TYPES)


def _restorer_row(model: str, value: float) -> restorer.Row:
    return restorer.Row(model, 128, 4, int(1000 * value), value, value, value, value, value)


def test_every_shipped_limit_names_a_ratio_the_benchmarks_measure():
    shipped = Path(__file__).parents[2] / "docs" / "results" / "targets.toml"
    names = ["dense", "moe", "mofme-generator", "mofme-lowrank", "mofme-static", "moe-reference"]
    measured = restorer.ratios([_restorer_row(name, i + 1.0) for i, name in enumerate(names)], 128)
    assert set(load_limits(shipped, "restorer")) == set(measured)
    rows = [
        layers.Row(layer, experts, k, 1, 1.0, 1.0, 1.0)
        for layer in ("dense", "moe", "mofme-generator", "mofme-lowrank", "mofme-static")
        for experts in (16, 128, 512)
        for k in (1, 2, 4)
    ]
    router = {"experts": 128, "top_k": 4, "uar_vs_linear": 1.0}
    assert set(load_limits(shipped, "layers")) == set(layers.ratios(rows, router))


def test_a_bad_targets_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.toml"):
        load_limits(tmp_path / "missing.toml", "layers")
    bad = tmp_path / "bad.toml"
    bad.write_text('[layers]\n"a" = "fast"\n')
    with pytest.raises(ValueError, match=r"bad.toml: needs a \[layers\] table"):
        load_limits(bad, "layers")


def test_segmenter_benchmark_memory_grows_with_the_tile_and_is_checked(tmp_path, capsys):
    from mofme.benchmarks import segmenter

    targets = tmp_path / "targets.toml"
    targets.write_text('[segmenter]\n"tiny tile=32: peak GiB" = 4.0\n"tiny tile=64: peak GiB" = 1e-9\n')
    out = tmp_path / "segmenter.json"
    args = ["--presets", "tiny", "--tiles", "32", "64", "--size", "96", "128", "--batch-size", "4"]
    assert segmenter.main([*args, "--json", str(out), "--targets", str(targets)]) == 0
    result = json.loads(out.read_text())
    rows = {r["tile"]: r for r in result["rows"]}
    assert rows[32]["params"] == rows[64]["params"] > 0
    assert 0 < rows[32]["peak_mib"] < 4096 and rows[64]["peak_mib"] > 0  # a process's resident peak
    assert [(c["target"], c["ok"]) for c in result["targets"]] == [
        ("tiny tile=32: peak GiB", True),
        ("tiny tile=64: peak GiB", False),
    ]
    assert "| tiny |" in capsys.readouterr().out


def test_fastpath_benchmark_times_both_paths_and_writes_json(tmp_path, capsys):
    out = tmp_path / "fastpath.json"
    args = ["--size", "72x40", "--preset", "tiny", "--tile", "32", "--overlap", "8"]
    assert fastpath.main([*args, "--warmup", "0", "--repeats", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["path"] for row in result["rows"]] == ["plain", "fast"]
    assert all(row["median_s"] > 0 and row["peak_rss_mb"] > 0 for row in result["rows"])
    assert result["settings"]["size"] == "72x40" and result["max_abs_diff"] < 1e-4
    assert "| fast |" in capsys.readouterr().out
    assert fastpath.parse_size("4000x3000") == (3000, 4000)
    with pytest.raises(argparse.ArgumentTypeError):
        fastpath.parse_size("4000")


def test_compile_report_finds_the_breaks_of_the_cpu_loop_and_none_in_a_dense_model(tmp_path):
    from mofme.benchmarks import compile as compile_check

    common = ["--preset", "tiny", "--size", "32", "--batch", "2", "--backend", "eager", "--repeats", "1"]
    for ffn in ("dense", "mofme"):
        assert compile_check.main([*common, "--ffn", ffn, "--json", str(tmp_path / f"{ffn}.json")]) == 0
    dense, mofme = (json.loads((tmp_path / f"{f}.json").read_text()) for f in ("dense", "mofme"))
    assert dense["explain"]["graph_breaks"] == 0 and dense["explain"]["graphs"] == 1
    assert mofme["explain"]["graph_breaks"] > 0  # the loop's per-expert group sizes come from the host
    assert all("dispatch.py" in reason for reason in mofme["explain"]["reasons"])
    assert dense["train_step_ms"]["compiled"] > 0 and "compile_error" not in dense


def test_restore_benchmark_s_per_mp_memory_and_the_compute_it_counts(tmp_path, capsys):
    from mofme.benchmarks import restore
    from mofme.infer.tiling import tile_windows
    from mofme.models import DEFAULT_WEIGHTS, load_restorer

    out = tmp_path / "restore.json"
    args = ["--size", "72x40", "96x64", "--tile", "32", "--overlap", "8", "--json", str(out)]
    assert restore.main([*args, "--paths", "plain", "fast"]) == 0
    result = json.loads(out.read_text())
    for size, (height, width) in zip(result["sizes"], [(40, 72), (64, 96)], strict=True):
        assert size["tiles"] == len(tile_windows(height, width, tile=32, overlap=8))
        assert size["gflops"] == pytest.approx(size["tiles"] * size["tile_gflops"])
        assert sum(size["by_part"].values()) == pytest.approx(size["tile_gflops"])  # each FLOP in one part
        assert {"head", "blocks", "tail", "drop_head"} <= set(size["by_part"])
        floor = size["gflops"] / result["matmul_gflops_per_s"] / (height * width / 1e6)
        assert size["floor_s_per_mp"] == pytest.approx(floor)
        plain, fast = size["paths"]["plain"], size["paths"]["fast"]
        assert plain["max_abs_diff"] == 0 and fast["max_abs_diff"] < 1e-4  # the fast path's rounding only
        assert fast["s_per_mp"] == pytest.approx(fast["median_s"] / (height * width / 1e6))
        assert fast["peak_rss_mb"] > 0
    assert set(result["median_s_per_mp"]) == {"plain", "fast"}
    assert "| 96x64 | fast |" in capsys.readouterr().out
    # attention is counted: a global-attention tile twice as wide costs more than 4x (quadratic term)
    model = load_restorer(DEFAULT_WEIGHTS)
    small, large = (restore.restore_gflops(model, n, n, tile=n, overlap=0)["tile_gflops"] for n in (64, 128))
    assert large > 4.2 * small


@pytest.mark.parametrize("modulation", ["generator", "lowrank"])
def test_roofline_counts_the_expert_gemms_and_the_bank_by_the_formula(tmp_path, modulation):
    from mofme.benchmarks import roofline

    dim, tokens, experts, k = 16, 40, 4, 2
    out = tmp_path / "roofline.json"
    args = ["--experts", str(experts), "--top-k", str(k), "--dim", str(dim), "--tokens", str(tokens)]
    assert (
        roofline.main(
            [*args, "--modulation", modulation, "--repeats", "1", "--warmup", "0", "--json", str(out)]
        )
        == 0
    )
    (row,) = json.loads(out.read_text())["rows"]
    rank = dim // 8
    per_row = 2 * dim * 2 * dim if modulation == "generator" else 2 * (dim * rank + rank * 2 * dim)
    assert row["gflops"]["experts"] == pytest.approx(tokens * k * per_row / 1e9)  # every assignment once
    assert row["gflops"]["dense"] == pytest.approx(2 * 2 * tokens * dim * 4 * dim / 1e9)
    maps = dim * 2 * dim if modulation == "generator" else dim * rank + rank * 2 * dim
    assert row["bank_mb"] == pytest.approx(experts * (maps + 2 * dim) * 4 / 2**20)
    ms = row["ms"]
    other = (row["gflops"]["layer"] - row["gflops"]["experts"]) / row["dense_gflops_per_s"] * 1e3
    assert row["predicted_ratio"] == pytest.approx((other + ms["experts"]) / ms["dense"])
    assert row["measured_ratio"] == pytest.approx(ms["layer"] / ms["dense"])
