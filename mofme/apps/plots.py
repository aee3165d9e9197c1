"""Figures a person looks at: restoration comparisons, expert usage per weather type, and
restore-then-recognise scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mofme.evaluate.recognition import RecognitionReport

__all__ = ["comparison_grid", "plot_restore_then_recognise", "pyplot", "routing_heatmaps"]


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def comparison_grid(rows: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: str | Path) -> Path:
    """One row per (label, degraded, restored, clean) HxWx3 float image in [0, 1]: a grid of
    degraded | restored | clean, saved as PNG."""
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for r, (label, *images) in enumerate(rows):
        for c, (title, image) in enumerate(zip(("degraded", "restored", "clean"), images, strict=True)):
            ax = axes[r][c]
            ax.imshow(np.clip(image, 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title)
            if c == 0:
                ax.set_ylabel(label)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def routing_heatmaps(usage: np.ndarray, weathers: Sequence[str], path: str | Path) -> Path:
    """``usage`` (layers, weathers, experts): fraction of each weather type's (or other label's,
    e.g. weather x severity) token assignments sent to each expert. One heatmap per layer, PNG."""
    plt = pyplot()
    layers = usage.shape[0]
    fig, axes = plt.subplots(
        layers,
        1,
        figsize=(
            max(6, 0.35 * usage.shape[2] + 2),
            1.0 + min(0.6, 3.0 / len(weathers) + 0.1) * len(weathers) * layers,
        ),
        squeeze=False,
    )
    for layer in range(layers):
        ax = axes[layer][0]
        image = ax.imshow(usage[layer], aspect="auto", cmap="viridis", vmin=0)
        ax.set_yticks(range(len(weathers)), weathers)
        ax.set_xlabel("expert")
        ax.set_title(f"layer {layer}: share of assignments per expert")
        fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_restore_then_recognise(
    degraded: RecognitionReport, restored: RecognitionReport, path: str | Path
) -> Path:
    """A grouped bar chart per weather type: clean / degraded / restored score (%), saved as PNG."""
    from mofme.evaluate.recognition import restoration_rows

    rows = restoration_rows(degraded, restored)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 * max(len(rows), 2) + 2, 3.6))
    x = np.arange(len(rows))
    for k, (label, color) in enumerate(
        (("clean", "0.6"), ("degraded", "tab:red"), ("restored", "tab:green"))
    ):
        heights = [100 * r[2 + k] for r in rows]
        ax.bar(x + (k - 1) * 0.27, np.nan_to_num(heights), width=0.27, label=label, color=color)
    ax.set_xticks(x, [r[0] for r in rows])
    ax.set_ylabel(f"{degraded.metric} (%)")
    ax.set_title(f"{degraded.task}: restore, then recognise")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
