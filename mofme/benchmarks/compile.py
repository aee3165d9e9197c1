"""Does the restorer's training step compile? ``torch._dynamo.explain`` (graphs, graph breaks and
their reasons) on one forward, then the median training-step time eager vs ``torch.compile``.

    python -m mofme.benchmarks.compile [--preset paper] [--device cuda] [--amp bf16] [--json F]

Data-dependent expert groups (the sparse path's group sizes) are what typically breaks a graph;
the report lists every break with its reason so that the cost of each is visible.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from mofme.models import build_restorer
from mofme.timing import machine, time_side_by_side
from mofme.train.optim import adamw

from .restorer import train_step

__all__ = ["explain_forward", "main"]


def explain_forward(model: torch.nn.Module, image: torch.Tensor) -> dict:
    """Graphs and graph breaks dynamo finds in ``model(image)`` (nothing is compiled)."""
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(image)
    return {
        "graphs": explained.graph_count,
        "graph_breaks": explained.graph_break_count,
        "reasons": [_reason(b) for b in explained.break_reasons],
    }


def _reason(graph_break) -> str:
    """``"<first line of the reason> at <file>:<line>"`` (the innermost frame of the user code)."""
    text = str(getattr(graph_break, "reason", graph_break)).splitlines()[0]
    stack = getattr(graph_break, "user_stack", None)
    if stack:
        frame = stack[-1]
        text += f" at {Path(frame.filename).name}:{frame.lineno}"
    return text


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m mofme.benchmarks.compile", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--ffn", default="mofme")
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=["off", "auto", "bf16", "fp16"], default="off")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    image = torch.rand(args.batch, 3, args.size, args.size, device=device)
    eager = build_restorer(preset=args.preset, ffn=args.ffn).to(device).train()
    result: dict = {"machine": machine(), "settings": {k: str(v) for k, v in vars(args).items()}}
    result["explain"] = explain_forward(eager, image)
    compiled = build_restorer(preset=args.preset, ffn=args.ffn).to(device).train()
    compiled.load_state_dict(eager.state_dict())
    try:
        steps = {
            "eager": train_step(eager, image, adamw(eager.parameters(), lr=1e-6), args.amp),
            "compiled": train_step(
                torch.compile(compiled, backend=args.backend),
                image,
                adamw(compiled.parameters(), lr=1e-6),
                args.amp,
            ),
        }
        times = time_side_by_side(steps, warmup=3, repeats=args.repeats, device=device)
        result["train_step_ms"] = {name: seconds * 1e3 for name, seconds in times.items()}
        result["compiled_vs_eager"] = times["compiled"] / times["eager"]
    except Exception as error:  # what breaks compilation is the finding; report it
        result["compile_error"] = (
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        )
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
