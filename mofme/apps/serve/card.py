"""The model's name and figures for the page: its ``config.json`` and its model card.

The card is ``README.md`` beside the weights; when that card has no ``## Metrics`` table it may link to
the full model card (the shipped weights link to ``docs/model_card.md`` of a source checkout), whose
first ``## Metrics`` table is used. Cards are Markdown; only plain text goes to the page.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from mofme.models.hub import read_config

__all__ = ["metrics_table", "model_info"]

CARD_NAME = "README.md"
_CONFIG_FIGURES = (
    "architecture",
    "ffn",
    "num_experts",
    "top_k",
    "router",
    "modulation",
    "embed_dim",
    "depth",
)


def _plain(cell: str) -> str:
    return re.sub(r"[*`]", "", cell).strip()


def metrics_table(markdown: str) -> dict | None:
    """``{"columns": [...], "rows": [[...], ...]}`` of the first table in the ``## Metrics`` section."""
    section = re.search(r"^## Metrics\s*$(.*?)(?=^## |\Z)", markdown, flags=re.M | re.S)
    if section is None:
        return None
    lines = [line.strip() for line in section.group(1).splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        return None
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [_plain(cell) for cell in line.strip("|").split("|")]
        if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
            table.append(cells)
    return {"columns": table[0], "rows": table[1:]} if len(table) > 1 else None


def _cards(folder: Path) -> list[tuple[Path, str]]:
    """The card beside the weights, then the Markdown cards it links to that exist."""
    card = folder / CARD_NAME
    if not card.is_file():
        return []
    text = card.read_text(encoding="utf-8", errors="replace")
    found = [(card, text)]
    for link in re.findall(r"\]\(([^)\s]+\.md)\)", text):
        linked = (folder / link).resolve()
        if linked.is_file():
            found.append((linked, linked.read_text(encoding="utf-8", errors="replace")))
    return found


def _title_and_summary(text: str) -> tuple[str | None, str | None]:
    body = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)  # YAML front matter
    title = re.search(r"^# (.+)$", body, flags=re.M)
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body[title.end() :] if title else body)]
    summary = next((p for p in paragraphs if p and not p.startswith(("#", "|", "```"))), None)
    plain = re.sub(r"\[([^]]*)\]\([^)]*\)", r"\1", summary).replace("`", "") if summary else None
    return (title.group(1).strip() if title else None), (" ".join(plain.split()) if plain else None)


def model_info(model: nn.Module, *, checkpoint: str | Path) -> dict:
    """Name, figures of the config (parameters, experts, top-k ...) and the card's metrics table."""
    info: dict = {"name": Path(str(checkpoint)).name or str(checkpoint), "checkpoint": str(checkpoint)}
    info["parameters"] = sum(p.numel() for p in model.parameters())
    folder = None
    try:
        config, config_path = read_config(checkpoint)
        folder = config_path.parent
    except (FileNotFoundError, ValueError):
        config = getattr(model, "config_dict", dict)()
    info["config"] = {key: config[key] for key in _CONFIG_FIGURES if config.get(key) is not None}
    info["title"] = info["summary"] = info["metrics"] = info["metrics_source"] = None
    for path, text in _cards(folder) if folder else []:
        title, summary = _title_and_summary(text)
        info["title"] = info["title"] or title
        info["summary"] = info["summary"] or summary
        if info["metrics"] is None and (table := metrics_table(text)) is not None:
            info["metrics"], info["metrics_source"] = table, path.name
    return info
