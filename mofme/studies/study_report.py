"""The study's summary, report and figure: what ``mofme study`` writes once its runs are done
(``study.json``, ``report.md``, ``psnr.png``), apart from the orchestration that trains them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from mofme.data import WEATHER_TYPES
from mofme.studies.paired import PairedDifference, paired_difference, seeds_for_halfwidth, weather_weights

__all__ = [
    "PAIRS",
    "expert_scaling",
    "paired_comparisons",
    "plot_nmi_curves",
    "plot_psnr",
    "plot_scaling",
    "plot_specialisation",
    "report_markdown",
    "setting_pairs",
    "specialisation_points",
    "summarise",
    "write_study",
]

Pair = tuple[str, str, float, str]  # (A, B, the claimed gain of A over B in dB, what the pair asks)
PAIRS: tuple[Pair, ...] = (
    ("mofme", "moe", 0.1, "MoFME vs MoE (paper: +0.1 to +0.2 dB)"),
    ("mofme", "dense", 0.0, "MoFME vs dense"),
    ("mofme-uar", "mofme", 0.0, "UaR vs linear router (both MoFME)"),
    ("mofme-lowrank", "mofme", 0.0, "low-rank vs full generator"),
    ("mofme-static", "mofme", 0.0, "static vs generated modulation"),
)
ROUTING_FIELDS = ("nmi", "nmi_severity", "nmi_condition", "uar_change")  # per-layer lists of a run
SCALING_REFERENCE = 16  # E of the study's recipe: the scaling table's ratios are relative to it
TARGET_HALFWIDTH = 0.1  # dB: issue 12's precision; the report sizes the next study for it
SPECIALISED_NMI = 0.2  # issue 12's specialisation target: NMI(weather; expert) in some layer ...
AFFORDABLE_LOSS = 0.1  # ... without losing more than this many dB against the variant it changes


def _pm(pair: tuple[float, float], seeds: int, digits: int = 2) -> str:
    """``mean +- std`` over seeds; the mean alone for one seed (no spread to show)."""
    mean, std = pair
    return f"{mean:.{digits}f}" if seeds == 1 else f"{mean:.{digits}f} +- {std:.{digits}f}"


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
        for key in ROUTING_FIELDS:  # per layer, mean and std over seeds; left out unless every run has it
            values = [r.get(key) for r in mine]
            if all(values):
                entry[key] = [_mean_std(list(layer)) for layer in zip(*values, strict=True)]
        summary[variant] = entry
    return summary


def _psnr_matrix(runs: list[dict], variant: str, seeds: list[int], names: list[str]) -> np.ndarray:
    """(seeds, images) restored PSNR of ``variant``'s runs, in the given seed and image order."""
    by_seed = {
        r["seed"]: {i["name"]: i["psnr"] for i in r["images"]} for r in runs if r["variant"] == variant
    }
    return np.array([[by_seed[s][n] for n in names] for s in seeds])


SCALED_NAME = re.compile(r"(.+)-e(\d+)")  # a scaling study's run name: <variant>-e<E> (mofme.studies.study)


def setting_pairs(settings: list[str], baseline: str = "mofme") -> list[Pair]:
    """Each named setting (``mofme study run --settings``) against the variant it changes."""
    return [(name, baseline, 0.0, f"setting {name} vs {baseline}") for name in settings if name != baseline]


def _reference_experts(counts: list[int]) -> int:
    """The E a variant's scaling comparisons are relative to: :data:`SCALING_REFERENCE` when it
    ran, else the smallest of ``counts``."""
    return SCALING_REFERENCE if SCALING_REFERENCE in counts else min(counts)


def _pairs(variants: set[str], extra: list[Pair]) -> list[Pair]:
    """:data:`PAIRS` and ``extra``, and for a scaling study (``<variant>-e<E>`` names) each pair of
    :data:`PAIRS` at every E (``dense`` has no E) and each variant at every E against itself at
    :data:`SCALING_REFERENCE` experts (its smallest E when that did not run), the scaling table's
    reference: what the quality gains or loses with E."""
    scaled = [(m.group(1), int(m.group(2))) for v in variants if (m := SCALED_NAME.fullmatch(v))]
    counts = sorted({count for _, count in scaled})
    pairs = [*PAIRS, *extra]
    for count in counts:
        for a, b, claim, title in PAIRS:
            b_name = b if b == "dense" else f"{b}-e{count}"
            pairs.append((f"{a}-e{count}", b_name, claim, f"{title}, E={count}"))
    for base in sorted({base for base, _ in scaled}):
        mine = sorted(count for b, count in scaled if b == base)
        reference = _reference_experts(mine)
        for count in mine:
            if count != reference:
                title = f"{base}: E={count} vs E={reference}"
                pairs.append((f"{base}-e{count}", f"{base}-e{reference}", 0.0, title))
    return pairs


def paired_comparisons(runs: list[dict], extra: list[Pair] = ()) -> dict[str, dict]:
    """For each pair of :data:`PAIRS` (at every E of a scaling study) and ``extra`` whose variants
    both ran (with per-image scores): the paired difference of the mean-over-weather PSNR over the seeds both have
    (:mod:`mofme.studies.paired`, two-way t-interval, 95 %) and its decision in words."""
    out = {}
    for a, b, claim, title in _pairs({r["variant"] for r in runs}, list(extra)):
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
            "seeds_for_target": _seeds_for_target(result),
            "decision": result.decision(claim=claim),
        }
    return out


def _seeds_for_target(result: PairedDifference) -> int | None:
    """Seeds for a +-:data:`TARGET_HALFWIDTH` interval at ``result``'s per-seed sd and image
    variance (None: one seed, or more than 1,000)."""
    if not np.isfinite(result.seed_sd):
        return None
    try:
        return seeds_for_halfwidth(result.seed_sd, TARGET_HALFWIDTH, image_variance=result.image_variance)
    except ValueError:
        return None


def _title(variants: list[str]) -> str:
    return " vs ".join(variants) if len(variants) <= 4 else f"{len(variants)} variants"


def _reuse_note(protocol: dict) -> str:
    """How many of the study's runs this invocation trained, when it reused others."""
    trained, seeds = protocol.get("runs_trained"), protocol["seeds"]
    total = seeds * len(protocol.get("variants", {}))
    if trained is None or trained == total:
        return ""
    return f" (this invocation trained {trained} of the {total} runs; the others were found finished, trained earlier)"


def _results_section(summary: dict, protocol: dict) -> list[str]:
    lines = [
        f"# mofme study: {_title(list(summary))} at an equal budget",
        "",
        f"Command: `{protocol['command']}`  ",
        f"Machine: {protocol['machine']}; date {protocol['date']}; wall time {protocol['minutes']:.1f} min"
        f"{_reuse_note(protocol)}.  ",
        f"Protocol: {protocol['text']}",
        "",
        "Restored PSNR (dB) on the held-out test photos, mean +- std over seeds (RGB, 8-bit outputs, full resolution).",
        "",
        "| variant | params | latency ms | " + " | ".join(WEATHER_TYPES) + " | mean PSNR | mean SSIM |",
        "|---|---:|---:|" + "---:|" * (len(WEATHER_TYPES) + 2),
    ]
    for variant, s in summary.items():
        cells = [_pm(s[f"{w}_psnr"], s["seeds"]) for w in WEATHER_TYPES]
        lines.append(
            f"| {variant} | {s['params']:,} | {s['latency_ms']:.1f} | "
            + " | ".join(cells)
            + f" | **{_pm(s['mean_psnr'], s['seeds'])}** | {_pm(s['mean_ssim'], s['seeds'], 4)} |"
        )
    first = next(iter(summary.values()))
    return [*lines, "", f"Degraded input: mean PSNR {first['input_psnr']:.2f} dB.", ""]


def _paired_section(paired: dict) -> list[str]:
    lines = [
        "## Paired differences",
        "",
        "Mean over weather of the per-image PSNR difference A - B, same seeds and images for both;",
        "95 % two-way random-effects t-interval over seeds x images (mofme.studies.paired). Per-seed sd:",
        "standard deviation of the per-seed mean difference; seeds for +-0.1: how many seeds would give a",
        "+-0.1 dB interval at that sd (`mofme.studies.paired.seeds_for_halfwidth`), the next study's size.",
        "",
        "| A - B | seeds | images | mean dB | 95 % interval | +- | per-seed sd | seeds for +-0.1 | decision |",
        "|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for name, p in paired.items():
        sd = f"{p['seed_sd']:.3f}" if np.isfinite(p["seed_sd"]) else "-"  # nan: one seed
        needed = p.get("seeds_for_target") or "-"
        lines.append(
            f"| {name} | {p['seeds']} | {p['images']} | {p['mean']:+.3f} | [{p['low']:+.3f}, {p['high']:+.3f}] "
            f"| {(p['high'] - p['low']) / 2:.3f} | {sd} | {needed} | {p['decision']} |"
        )
    return [*lines, ""]


def _unpaired_verdicts(summary: dict) -> list[str]:
    """Gaps of means, for runs stored without per-image scores (older studies)."""
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
    return ["## Verdict", "", *verdicts, ""] if verdicts else []


def _scaling_section(scaling: dict[str, list[dict]]) -> list[str]:
    """One row per variant and E; latency and parameters also relative to the variant's row at
    :data:`SCALING_REFERENCE` experts (its smallest E when that did not run)."""
    lines = [
        "## Scaling with the number of experts (same k)",
        "",
        f"| variant | E | params | params / E={SCALING_REFERENCE} | latency ms | latency / E={SCALING_REFERENCE} | mean PSNR |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for base, rows in scaling.items():
        reference_count = _reference_experts([r["experts"] for r in rows])
        reference = next(r for r in rows if r["experts"] == reference_count)
        for row in rows:
            lines.append(
                f"| {base} | {row['experts']} | {row['params']:,} | {row['params'] / reference['params']:.2f}x "
                f"| {row['latency_ms']:.1f} | {row['latency_ms'] / reference['latency_ms']:.2f}x "
                f"| {_pm(row['mean_psnr'], row['seeds'])} |"
            )
    return [*lines, "", "Figure: `scaling.png`.", ""]


def _routing_section(summary: dict, curves: bool) -> list[str]:
    lines = [
        "## Routing",
        "",
        "Normalised mutual information between a test token's expert and its weather type, severity, or",
        "both (12 conditions), per routed layer, mean +- std over seeds.",
        "",
        "| variant | NMI(weather; expert) | NMI(severity; expert) | NMI(weather x severity; expert) "
        "| UaR MC selection differs from deterministic |",
        "|---|---|---|---|---|",
    ]
    for variant, s in summary.items():
        nmi = [
            ", ".join(_pm(layer, s["seeds"], 3) for layer in s.get(k, [])) or "-" for k in ROUTING_FIELDS[:3]
        ]
        change = (
            ", ".join(_pm((100 * m, 100 * d), s["seeds"], 1) + "%" for m, d in s.get("uar_change", [])) or "-"
        )
        lines.append(f"| {variant} | {' | '.join(nmi)} | {change} |")
    figures = "Figures: `psnr.png` (per weather type, error bars = std over seeds), `routing_<variant>.png` (seed 0)"
    if curves:
        figures += ", `nmi_training.png` (validation NMI over training, best layer, mean over seeds)"
    return [*lines, "", figures + "."]


def report_markdown(
    summary: dict,
    protocol: dict,
    paired: dict | None = None,
    *,
    scaling: dict[str, list[dict]] | None = None,
    curves: bool = False,
    specialisation: dict[str, dict] | None = None,
) -> str:
    lines = _results_section(summary, protocol)
    lines += _paired_section(paired) if paired else _unpaired_verdicts(summary)
    if scaling:
        lines += _scaling_section(scaling)
    if specialisation:
        lines += _specialisation_section(specialisation)
    lines += _routing_section(summary, curves)
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


def expert_scaling(summary: dict) -> dict[str, list[dict]]:
    """Per base variant of a scaling study (``<variant>-e<E>``): rows ``{experts, params,
    latency_ms, mean_psnr: (mean, std), seeds}`` sorted by E; empty without such variants."""
    scaling: dict[str, list[dict]] = {}
    for name, entry in summary.items():
        if match := SCALED_NAME.fullmatch(name):
            row = {k: entry[k] for k in ("params", "latency_ms", "mean_psnr", "seeds")}
            scaling.setdefault(match.group(1), []).append({"experts": int(match.group(2)), **row})
    return {base: sorted(rows, key=lambda r: r["experts"]) for base, rows in scaling.items()}


def plot_scaling(scaling: dict[str, list[dict]], path: Path, dense: dict | None = None) -> None:
    """Restored PSNR (± std over seeds), parameters and latency against the number of experts,
    one line per base variant; ``dense`` (a summary entry) as a horizontal reference."""
    from mofme.apps.plots import pyplot

    plt = pyplot()
    panels = (("mean_psnr", "restored PSNR (dB)"), ("params", "parameters"), ("latency_ms", "latency (ms)"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for base, rows in scaling.items():
            experts = [r["experts"] for r in rows]
            if key == "mean_psnr":
                ax.errorbar(
                    experts, *zip(*(r[key] for r in rows), strict=True), marker="o", capsize=3, label=base
                )
            else:
                ax.plot(experts, [r[key] for r in rows], marker="o", label=base)
        if dense is not None:
            ax.axhline(
                dense[key][0] if key == "mean_psnr" else dense[key], color="grey", ls="--", label="dense"
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log" if key == "params" else "linear")
        ax.set_xlabel("experts E (same k)")
        ax.set_ylabel(label)
    seeds = min(r.get("seeds", 1) for rows in scaling.values() for r in rows)
    axes[0].set_title(
        "1 seed: no spread shown" if seeds == 1 else f"mean +- std over {seeds} seeds", fontsize="small"
    )
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_nmi_curves(runs: list[dict], path: Path) -> bool:
    """NMI(weather; expert) on the validation split over training, the largest over layers, mean
    over seeds, one line per variant (runs trained with ``train.log_routing``); False: no curves."""
    curves: dict[str, dict[int, list[float]]] = {}
    for run in runs:
        for point in run.get("nmi_curve") or []:
            curves.setdefault(run["variant"], {}).setdefault(point["step"], []).append(max(point["nmi"]))
    if not curves:
        return False
    from mofme.apps.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # a settings sweep has more than 10 lines
    for variant, by_step in curves.items():
        steps = sorted(by_step)
        ax.plot(steps, [np.mean(by_step[s]) for s in steps], marker=".", label=variant)
    ax.set_xlabel("step")
    ax.set_ylabel("NMI(weather; expert), best layer")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def specialisation_points(summary: dict, paired: dict) -> dict[str, dict]:
    """Per variant A of a pair ``A - B`` where both have routing NMI: ``baseline`` B, ``nmi`` and
    ``baseline_nmi`` (the largest over layers of the mean NMI(weather; expert) over seeds), the
    paired PSNR difference ``mean``, ``low``, ``high`` (95 %), and ``target``, issue 12's in words:
    "met" when NMI >= :data:`SPECIALISED_NMI` with a loss shown to be under :data:`AFFORDABLE_LOSS`
    (``low`` above minus it)."""
    points = {}
    for name, p in paired.items():
        a, b = name.split(" - ")
        if summary.get(a, {}).get("nmi") and summary.get(b, {}).get("nmi"):
            nmi, baseline_nmi = (max(mean for mean, _ in summary[v]["nmi"]) for v in (a, b))
            points[a] = {
                "baseline": b,
                "nmi": nmi,
                "baseline_nmi": baseline_nmi,
                **{k: p[k] for k in ("mean", "low", "high")},
                "target": _specialisation_verdict(nmi, p),
            }
    return points


def _specialisation_verdict(nmi: float, pair: dict) -> str:
    low, high = pair["low"], pair["high"]
    if nmi < SPECIALISED_NMI:
        return f"NMI below {SPECIALISED_NMI}"
    if pair["seeds"] == 1:  # the interval covers images only: no decision (as the paired table)
        return "met NMI; one seed: no decision on the loss"
    if high < -AFFORDABLE_LOSS:
        return f"met NMI; loses more than {AFFORDABLE_LOSS} dB"
    if low > -AFFORDABLE_LOSS:
        return "met"
    return f"met NMI; a loss over {AFFORDABLE_LOSS} dB not excluded"


def _specialisation_section(points: dict[str, dict]) -> list[str]:
    lines = [
        "## Specialisation target",
        "",
        f"Best layer's NMI(weather; expert) against the paired PSNR difference; target: NMI >= {SPECIALISED_NMI}"
        f" with the 95 % interval above -{AFFORDABLE_LOSS} dB (figure: `specialisation.png`).",
        "",
        "| A - B | NMI of A | NMI of B | mean dB | 95 % interval | target |",
        "|---|---:|---:|---:|---|---|",
    ]
    for variant, p in points.items():
        lines.append(
            f"| {variant} - {p['baseline']} | {p['nmi']:.3f} | {p['baseline_nmi']:.3f} | {p['mean']:+.3f} "
            f"| [{p['low']:+.3f}, {p['high']:+.3f}] | {p['target']} |"
        )
    return [*lines, ""]


def plot_specialisation(points: dict[str, dict], path: Path) -> None:
    """:func:`specialisation_points` as NMI against the PSNR difference (95 % interval), each
    baseline at 0, the target region shaded."""
    from mofme.apps.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    baselines = {p["baseline"]: p["baseline_nmi"] for p in points.values()}
    for (baseline, nmi), marker in zip(baselines.items(), "*XPDvs^<>ph", strict=False):  # one shape each
        ax.plot(0.0, nmi, "k" + marker, ms=10, ls="none", label=f"{baseline} (baseline)")
    for variant, p in points.items():
        ax.errorbar(
            p["mean"], p["nmi"], xerr=[[p["mean"] - p["low"]], [p["high"] - p["mean"]]], fmt="o", capsize=3
        )
        ax.annotate(
            variant, (p["mean"], p["nmi"]), fontsize="x-small", xytext=(4, 4), textcoords="offset points"
        )
    top = max(0.25, 1.15 * max(max(p["nmi"], p["baseline_nmi"]) for p in points.values()))
    left, right = ax.get_xlim()
    right = max(right, 0.1)
    ax.fill_between([-AFFORDABLE_LOSS, right], SPECIALISED_NMI, top, color="tab:green", alpha=0.12)
    ax.axhline(SPECIALISED_NMI, color="tab:green", ls="--", lw=1)
    ax.axvline(-AFFORDABLE_LOSS, color="tab:green", ls="--", lw=1, label="target region (issue 12)")
    ax.set_xlim(left, right)
    ax.set_ylim(0, top)
    ax.set_xlabel("PSNR difference to the baseline (dB), paired, 95 % interval")
    ax.set_ylabel("NMI(weather; expert), best layer")
    ax.legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_study(
    output: Path, *, protocol: dict, runs: list[dict], variants: list[str], pairs: list[Pair] = ()
) -> dict:
    """Summarise ``runs`` and write ``study.json``, ``report.md`` and ``psnr.png`` into ``output``;
    returns the summary (per variant: parameters, latency, mean and std over seeds per metric).
    ``pairs``: paired comparisons beyond :data:`PAIRS` (e.g. :func:`setting_pairs`)."""
    summary = summarise(runs, variants)
    paired = paired_comparisons(runs, pairs)
    scaling = expert_scaling(summary)
    points = {} if scaling else specialisation_points(summary, paired)  # a scaling study: too many baselines
    document = {"protocol": protocol, "summary": summary, "paired": paired, "scaling": scaling}
    (output / "study.json").write_text(
        json.dumps({**document, "specialisation": points, "runs": runs}, indent=2)
    )
    if scaling:
        plot_scaling(scaling, output / "scaling.png", dense=summary.get("dense"))
    curves = plot_nmi_curves(runs, output / "nmi_training.png")
    if points:
        plot_specialisation(points, output / "specialisation.png")
    (output / "report.md").write_text(
        report_markdown(summary, protocol, paired, scaling=scaling, curves=curves, specialisation=points)
    )
    plot_psnr(summary, output / "psnr.png")
    return summary
