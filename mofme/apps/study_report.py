"""The study's summary, report and figure: what ``mofme study`` writes once its runs are done
(``study.json``, ``report.md``, ``psnr.png``), apart from the orchestration that trains them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mofme.data import WEATHER_TYPES

__all__ = ["plot_psnr", "report_markdown", "summarise", "write_study"]


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


def report_markdown(summary: dict, protocol: dict) -> str:
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
    if {"mofme", "moe", "dense"} <= summary.keys():
        gap_moe = summary["mofme"]["mean_psnr"][0] - summary["moe"]["mean_psnr"][0]
        gap_dense = summary["mofme"]["mean_psnr"][0] - summary["dense"]["mean_psnr"][0]
        verdicts.append(
            f"- MoFME vs MoE: {gap_moe:+.2f} dB (claim: >= +0.1 dB) -> {'holds' if gap_moe >= 0.1 else 'does NOT hold'}."
        )
        verdicts.append(
            f"- MoFME vs dense: {gap_dense:+.2f} dB (claim: >= 0) -> {'holds' if gap_dense >= 0 else 'does NOT hold'}."
        )
    if {"mofme-uar", "mofme"} <= summary.keys():
        gap_uar = summary["mofme-uar"]["mean_psnr"][0] - summary["mofme"]["mean_psnr"][0]
        verdicts.append(f"- UaR vs linear router (both MoFME): {gap_uar:+.2f} dB.")
    lines += ["## Verdict", "", *verdicts, "", "## Routing", ""]
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
    (output / "study.json").write_text(
        json.dumps({"protocol": protocol, "summary": summary, "runs": runs}, indent=2)
    )
    (output / "report.md").write_text(report_markdown(summary, protocol))
    plot_psnr(summary, output / "psnr.png")
    return summary
