"""Figures a person looks at: restoration comparisons and expert usage per weather type."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["comparison_grid", "pyplot", "routing_heatmaps"]


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
    """``usage`` (layers, weathers, experts): fraction of each weather type's token assignments
    sent to each expert. One heatmap per layer, saved as PNG."""
    plt = pyplot()
    layers = usage.shape[0]
    fig, axes = plt.subplots(
        layers,
        1,
        figsize=(max(6, 0.35 * usage.shape[2] + 2), 1.0 + 0.6 * len(weathers) * layers),
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
