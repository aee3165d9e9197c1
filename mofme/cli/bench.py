"""``mofme bench <benchmark> [args...]``: picks the benchmark and hands the rest of the arguments to its
module's ``main(argv, prog)`` (``mofme bench layers --help`` is the benchmark's own help).
``mofme bench-layers`` and ``mofme bench --opts`` (the whole-restorer benchmark) are still read, with a
FutureWarning."""

from __future__ import annotations

from ._common import Subcommands, add_forwarding, warn_old_spelling

BENCHMARKS = {  # mofme bench <name> -> (the module whose main it runs, what it measures)
    "restorer": (
        "mofme.benchmarks.restorer",
        "whole restorer: parameters, FLOPs, latency, memory, training step",
    ),
    "layers": ("mofme.benchmarks.layers", "DenseFFN / SparseMoE / MoFME layers: parameters, FLOPs, latency"),
    "serve": ("mofme.benchmarks.serve", "load check of `mofme serve`: concurrent clients uploading photos"),
    "serve-memory": ("mofme.benchmarks.serve_memory", "memory of `mofme serve` with a full queue"),
    "restore": (
        "mofme.benchmarks.restore",
        "`mofme restore` at photo sizes: s/MP, peak memory, compute against this CPU's matmul roof",
    ),
    "roofline": (
        "mofme.benchmarks.roofline",
        "a MoFME layer's expert GEMMs and weight bank against the DenseFFN's rate and the memory bandwidth",
    ),
    "fastpath": ("mofme.benchmarks.fastpath", "the CPU inference fast path against the plain modules"),
    "render": ("mofme.benchmarks.render", "weather renderer speed per weather type and severity"),
    "families": ("mofme.benchmarks.families", "every renderer family: PSNR, render time, a gallery"),
    "generalisation": (
        "mofme.benchmarks.generalisation",
        "restorers on held-out renderer families and clean photos; tiled vs whole",
    ),
    "segmenter": ("mofme.benchmarks.segmenter", "segmenter peak memory and time on a 1024x2048 image"),
    "compile": ("mofme.benchmarks.compile", "does the restorer's training step compile (torch.compile)"),
    "strength-oracle": (
        "mofme.benchmarks.strength_oracle",
        "the best per-image strength of a restorer's correction, known the target: a calibrated strength's ceiling",
    ),
}


def add_parser(commands: Subcommands) -> None:
    """mofme bench <benchmark>."""
    bench = commands.add_parser(
        "bench",
        help="the benchmarks: restorer, layers, serve, ... (`mofme bench <benchmark> --help`)",
        description="Run a benchmark; the arguments after its name are the benchmark's own.",
    )
    benchmarks = bench.add_subparsers(
        dest="benchmark", required=True, title="benchmarks", help="the benchmark run"
    )
    for name, (module, help) in BENCHMARKS.items():
        add_forwarding(benchmarks, name, module, help)


def current_spelling(argv: list[str]) -> list[str]:
    """``bench-layers ARGS`` -> ``bench layers ARGS`` and ``bench [--opts]`` -> ``bench restorer
    [--opts]``, with a FutureWarning; any other ``argv`` as it is."""
    if argv[:1] == ["bench-layers"]:
        warn_old_spelling("mofme bench-layers", "mofme bench layers")
        return ["bench", "layers", *argv[1:]]
    options_only = argv[1:2] == [] or (argv[1].startswith("-") and argv[1] not in ("-h", "--help"))
    if argv[:1] == ["bench"] and options_only:
        warn_old_spelling("mofme bench without a benchmark", "mofme bench restorer")
        return ["bench", "restorer", *argv[1:]]
    return argv
