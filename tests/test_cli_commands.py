"""``mofme bench <benchmark>`` and ``mofme study {run,downstream}`` hand their arguments to the right
``main``; the previous release's spellings still do, with a FutureWarning."""

import argparse
import importlib
import inspect

import pytest

import mofme.studies.downstream
import mofme.studies.study
from mofme.cli import build_parser, main
from mofme.cli.bench import BENCHMARKS


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(commands.choices)


def _record(monkeypatch, module, calls: list) -> None:
    """Replace ``module.main`` by one that records ``(argv, prog)`` and succeeds."""

    def fake_main(argv=None, prog=None) -> int:
        calls.append((argv, prog))
        return 0

    monkeypatch.setattr(module, "main", fake_main)


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_every_benchmark_names_a_module_with_a_main_taking_argv_and_prog(name):
    module, help = BENCHMARKS[name]
    parameters = list(inspect.signature(importlib.import_module(module).main).parameters)
    assert parameters[:2] == ["argv", "prog"], module
    assert help.strip()


def test_mofme_help_lists_every_command_and_bench_help_every_benchmark(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listed = capsys.readouterr().out
    for command in ("demo", "train", "eval", "restore", "serve", "masks", "synth", "bench", "study"):
        assert f"\n    {command} " in listed, command
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    assert exit_.value.code == 0
    listed = capsys.readouterr().out
    assert all(f"\n    {name} " in listed for name in BENCHMARKS)
    assert set(_choices(_choices(build_parser())["bench"])) == set(BENCHMARKS)
    assert set(_choices(_choices(build_parser())["study"])) == {"run", "downstream"}


def test_bench_layers_help_is_the_benchmarks_own(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "layers", "--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: mofme bench layers [-h] [--experts EXPERTS")
    assert "--reference-max-experts" in shown and "--mixtral" in shown


@pytest.mark.filterwarnings("error::FutureWarning")
def test_bench_forwards_the_rest_of_the_arguments(monkeypatch):
    calls = []
    _record(monkeypatch, importlib.import_module("mofme.benchmarks.serve_memory"), calls)
    assert main(["bench", "serve-memory", "--size", "64x64", "--json", "out.json", "-h"]) == 0
    assert calls == [(["--size", "64x64", "--json", "out.json", "-h"], "mofme bench serve-memory")]


def test_bench_layers_old_spelling_warns_and_forwards(monkeypatch):
    calls = []
    _record(monkeypatch, importlib.import_module("mofme.benchmarks.layers"), calls)
    with pytest.warns(FutureWarning, match="mofme bench-layers is deprecated.*write mofme bench layers"):
        assert main(["bench-layers", "--help"]) == 0
    with pytest.warns(FutureWarning):
        assert main(["bench-layers", "--experts", "4", "--dim", "32"]) == 0
    assert calls == [
        (["--help"], "mofme bench layers"),
        (["--experts", "4", "--dim", "32"], "mofme bench layers"),
    ]


def test_bench_with_options_and_no_benchmark_runs_the_restorer_one_with_a_warning(monkeypatch):
    calls = []
    _record(monkeypatch, importlib.import_module("mofme.benchmarks.restorer"), calls)
    with pytest.warns(FutureWarning, match="write mofme bench restorer"):
        assert main(["bench", "--experts", "4", "--size", "32"]) == 0
    with pytest.warns(FutureWarning):
        assert main(["bench"]) == 0
    assert calls == [
        (["--experts", "4", "--size", "32"], "mofme bench restorer"),
        ([], "mofme bench restorer"),
    ]


@pytest.mark.filterwarnings("error::FutureWarning")
def test_study_downstream_forwards_its_arguments(monkeypatch):
    calls = []
    _record(monkeypatch, mofme.studies.downstream, calls)
    assert main(["study", "downstream", "--task", "scenes", "--output", "out", "model.top_k=1"]) == 0
    assert calls == [(["--task", "scenes", "--output", "out", "model.top_k=1"], "mofme study downstream")]


@pytest.mark.filterwarnings("error::FutureWarning")  # but the old spelling
def test_study_without_a_study_warns_and_runs_run(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(mofme.studies.study, "run_study", lambda output, **kw: calls.append((output, kw)))
    with pytest.warns(FutureWarning, match="write mofme study run"):
        assert main(["study", "--output", str(tmp_path), "--seeds", "2", "model.num_experts=8"]) == 0
    assert main(["study", "run", "--output", str(tmp_path), "--seeds", "2", "model.num_experts=8"]) == 0
    (old_output, old), (new_output, new) = calls
    assert old_output == new_output == str(tmp_path)
    assert old == new and new["seeds"] == 2 and new["overrides"] == ["model.num_experts=8"]
    assert new["command"] == f"mofme study run --output {tmp_path} --seeds 2 model.num_experts=8"
