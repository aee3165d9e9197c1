"""The study's summary, report and figure: what ``mofme study`` writes once its runs are done
(``study.json``, ``report.md``, ``psnr.png``), apart from the orchestration that trains them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mofme.apps.paired import PairedDifference, paired_difference, weather_weights
from mofme.data import WEATHER_TYPES

__all__ = ["PAIRS", "paired_comparisons", "plot_psnr", "report_markdown", "summarise", "write_study"]

# (A, B, the claimed gain of A over B in dB, what the pair asks)
PAIRS: tuple[tuple[str, str, float, str], ...] = (
    ("mofme", "moe", 0.1, "MoFME vs MoE (paper: +0.1 to +0.2 dB)"),
    ("mofme", "dense", 0.0, "MoFME vs dense"),
    ("mofme-uar", "mofme", 0.0, "UaR vs linear router (both MoFME)"),
    ("mofme-lowrank", "mofme", 0.0, "low-rank vs full generator"),
)


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def summarise(runs: list[dict], variants: list[str]) -> dict:
    summary = {}
    for variant in variants:
        mine = [r for r in runs if r["variant"] == variant]
        entry = {"params": mine[0]["params"], "latency_ms": mine[0]["latency_ms"], "seeds": len(mine)}
        for group in [*WEATHER_TYPES, "mean"]:
            for metric in ("psnr", "ssim"):
                entry[f"{group}_{metric}"] = _mean_std([r["metrics"][group][metric] for r in mine])
        entry["input_psnr"] = mine[0]["metrics"]["mean"]["input_psnr"]
        if mine[0]["nmi"]:
            entry["nmi"] = [_mean_std(list(layer)) for layer in zip(*(r["nmi"] for r in mine), strict=True)]
        if mine[0]["uar_change"]:
            entry["uar_change"] = [
                _mean_std(list(layer)) for layer in zip(*(r["uar_change"] for r in mine), strict=True)
            ]
        summary[variant] = entry
    return summary


def _psnr_matrix(runs: list[dict], variant: str, seeds: list[int], names: list[str]) -> np.ndarray:
    """(seeds, images) restored PSNR of ``variant``'s runs, in the given seed and image order."""
    by_seed = {
        r["seed"]: {i["name"]: i["psnr"] for i in r["images"]} for r in runs if r["variant"] == variant
    }
    return np.array([[by_seed[s][n] for n in names] for s in seeds])


def paired_comparisons(runs: list[dict]) -> dict[str, dict]:
    """For each pair of :data:`PAIRS` whose variants both ran (with per-image scores): the paired
    difference of the mean-over-weather PSNR over the seeds both have (:mod:`mofme.apps.paired`,
    two-way t-interval, 95 %) and its decision in words."""
    out = {}
    for a, b, claim, title in PAIRS:
        mine = [r for r in runs if r["variant"] in (a, b) and "images" in r]
        seeds = sorted(
            {r["seed"] for r in mine if r["variant"] == a} & {r["seed"] for r in mine if r["variant"] == b}
        )
        if not seeds:
            continue
        images = next(r["images"] for r in mine)
        names = [i["name"] for i in images]
        result: PairedDifference = paired_difference(
            _psnr_matrix(mine, a, seeds, names),
            _psnr_matrix(mine, b, seeds, names),
            weights=weather_weights([i["weather"] for i in images]),
        )
        out[f"{a} - {b}"] = {
            "title": title,
            "claim": claim,
            **result.to_dict(),
            "decision": result.decision(claim=claim),
        }
    return out


def report_markdown(summary: dict, protocol: dict, paired: dict | None = None) -> str:
    lines = [
        "# mofme study: dense vs MoE vs MoFME at an equal budget",
        "",
        f"Command: `{protocol['command']}`  ",
        f"Machine: {protocol['machine']}; date {protocol['date']}; wall time {protocol['minutes']:.1f} min.  ",
        f"Protocol: {protocol['text']}",
        "",
        "Restored PSNR (dB) on the held-out test photos, mean +- std over seeds (RGB, 8-bit outputs, full resolution).",
        "",
        "| variant | params | latency ms | " + " | ".join(WEATHER_TYPES) + " | mean PSNR | mean SSIM |",
        "|---|---:|---:|" + "---:|" * (len(WEATHER_TYPES) + 2),
    ]
    for variant, s in summary.items():
        cells = [f"{s[f'{w}_psnr'][0]:.2f} +- {s[f'{w}_psnr'][1]:.2f}" for w in WEATHER_TYPES]
        lines.append(
            f"| {variant} | {s['params']:,} | {s['latency_ms']:.1f} | "
            + " | ".join(cells)
            + f" | **{s['mean_psnr'][0]:.2f} +- {s['mean_psnr'][1]:.2f}** | {s['mean_ssim'][0]:.4f} +- {s['mean_ssim'][1]:.4f} |"
        )
    first = next(iter(summary.values()))
    lines += ["", f"Degraded input: mean PSNR {first['input_psnr']:.2f} dB.", ""]
    verdicts = []
    if paired:
        lines += [
            "## Paired differences",
            "",
            "Mean over weather of the per-image PSNR difference A - B, same seeds and images for both;",
            "95 % two-way random-effects t-interval over seeds x images (mofme.apps.paired).",
            "",
            "| A - B | seeds | images | mean dB | 95 % interval | decision |",
            "|---|---:|---:|---:|---|---|",
        ]
        for name, p in paired.items():
            lines.append(
                f"| {name} | {p['seeds']} | {p['images']} | {p['mean']:+.3f} | [{p['low']:+.3f}, {p['high']:+.3f}] | {p['decision']} |"
            )
        lines.append("")
    elif {"mofme", "moe", "dense"} <= summary.keys():
        gap_moe = summary["mofme"]["mean_psnr"][0] - summary["moe"]["mean_psnr"][0]
        gap_dense = summary["mofme"]["mean_psnr"][0] - summary["dense"]["mean_psnr"][0]
        verdicts.append(
            f"- MoFME vs MoE: {gap_moe:+.2f} dB (claim: >= +0.1 dB) -> {'holds' if gap_moe >= 0.1 else 'does NOT hold'}."
        )
        verdicts.append(
            f"- MoFME vs dense: {gap_dense:+.2f} dB (claim: >= 0) -> {'holds' if gap_dense >= 0 else 'does NOT hold'}."
        )
    if not paired and {"mofme-uar", "mofme"} <= summary.keys():
        gap_uar = summary["mofme-uar"]["mean_psnr"][0] - summary["mofme"]["mean_psnr"][0]
        verdicts.append(f"- UaR vs linear router (both MoFME): {gap_uar:+.2f} dB.")
    if verdicts:
        lines += ["## Verdict", "", *verdicts, ""]
    lines += ["## Routing", ""]
    lines += [
        "| variant | NMI(weather; expert) per layer | UaR MC selection differs from deterministic (per layer) |",
        "|---|---|---|",
    ]
    for variant, s in summary.items():
        nmi = ", ".join(f"{m:.3f} +- {d:.3f}" for m, d in s.get("nmi", [])) or "-"
        change = ", ".join(f"{100 * m:.1f}% +- {100 * d:.1f}" for m, d in s.get("uar_change", [])) or "-"
        lines.append(f"| {variant} | {nmi} | {change} |")
    lines += [
        "",
        "Figures: `psnr.png` (per weather type, error bars = std over seeds), `routing_<variant>.png` (seed 0).",
    ]
    return "\n".join(lines) + "\n"


def plot_psnr(summary: dict, path: Path) -> None:
    from mofme.apps.plots import pyplot

    plt = pyplot()

    groups = [*WEATHER_TYPES, "mean"]
    width = 0.8 / len(summary)
    fig, ax = plt.subplots(figsize=(9, 4))
    for i, (variant, s) in enumerate(summary.items()):
        means = [s[f"{g}_psnr"][0] for g in groups]
        stds = [s[f"{g}_psnr"][1] for g in groups]
        ax.bar(np.arange(len(groups)) + i * width, means, width, yerr=stds, capsize=3, label=variant)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
    ax.set_ylabel("restored PSNR (dB)")
    ax.set_ylim(bottom=min(s["mean_psnr"][0] for s in summary.values()) - 6)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_study(output: Path, *, protocol: dict, runs: list[dict], variants: list[str]) -> dict:
    """Summarise ``runs`` and write ``study.json``, ``report.md`` and ``psnr.png`` into ``output``;
    returns the summary (per variant: parameters, latency, mean and std over seeds per metric)."""
    summary = summarise(runs, variants)
    paired = paired_comparisons(runs)
    (output / "study.json").write_text(
        json.dumps({"protocol": protocol, "summary": summary, "paired": paired, "runs": runs}, indent=2)
    )
    (output / "report.md").write_text(report_markdown(summary, protocol, paired))
    plot_psnr(summary, output / "psnr.png")
    return summary
