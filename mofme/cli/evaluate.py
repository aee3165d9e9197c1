"""The ``mofme`` command line: demo | train | eval | restore | serve | masks | synth | bench | study | bench-layers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_WEIGHTS = (
    "mofme-small-weather-gated"  # = mofme.models.DEFAULT_WEIGHTS; the CLI starts without importing torch
)


def _demo(args: argparse.Namespace) -> int:
    from mofme.apps.demo import run_demo

    result = run_demo(
        args.output, checkpoint=args.checkpoint, train=args.train, seed=args.seed, overrides=args.overrides
    )
    gain = result.report.mean_over_weather.gain
    print(f"mean PSNR gain over the degraded input on the held-out photos: {gain:+.2f} dB")
    return 0


def _train(args: argparse.Namespace) -> int:
    from mofme.configs import recipe_path
    from mofme.train.config import load_config
    from mofme.train.trainer import train

    config = load_config(recipe_path(args.config), args.overrides)
    result = train(config, resume=args.resume)
    best = "n/a" if result.best_score is None else f"{result.best_score:.4g}"
    unit = " dB" if result.metric == "psnr" and result.best_score is not None else ""
    print(
        f"trained {result.steps} steps in {result.minutes:.1f} min; best validation {result.metric} "
        f"{best}{unit}; best model: {result.best_dir}"
    )
    return 0


def _read_eval_data(location: str, root: str | None):
    from mofme.data import paired_folder, read_pair_list

    path = Path(location)
    if path.is_dir():
        return paired_folder(path)
    return read_pair_list(path, root)


RECOGNITION_TASK = {  # --data of the recognition models -> the task it evaluates
    "scenes": "classification",
    "degradation": "segmentation",
    "cityscapes": "segmentation",
    "acdc": "segmentation",
}
RECOGNITION_DATA = tuple(RECOGNITION_TASK)


def _eval(args: argparse.Namespace) -> int:
    from mofme.evaluate.restoration import evaluate
    from mofme.models import ViTClassifier, ViTSegmenter, load_model

    model = load_model(args.checkpoint, device=args.device)
    if isinstance(model, ViTClassifier | ViTSegmenter):
        return _eval_recognition(args, model)
    if args.restore_with is not None or args.data in RECOGNITION_DATA:
        raise ValueError(
            f"{args.checkpoint} holds a restorer: --restore-with and --data {'/'.join(RECOGNITION_DATA)} "
            "are for recognition models (a ViTClassifier or ViTSegmenter checkpoint)"
        )
    if args.data != "builtin" and ((args.renders, args.seed) != (None, None) or args.family):
        raise ValueError("--renders, --seed and --family apply to --data builtin only")
    data = _builtin_eval_data(args) if args.data == "builtin" else _read_eval_data(args.data, args.root)
    report = evaluate(
        model,
        data,
        y_channel=args.y_channel,
        crop_border=args.crop_border,
        tile=args.tile,
        overlap=args.overlap,
        save_images=args.save_images,
        fast=args.fast,
    )
    report.meta.update({"checkpoint": str(args.checkpoint), "data": args.data})
    json_path, md_path = report.save(args.output)
    print(report.to_markdown())
    print(f"wrote {json_path} and {md_path}")
    return 0


def _builtin_eval_data(args: argparse.Namespace):
    """The built-in weather split ``--split`` (test unless said; val for model selection) with
    ``--renders`` renders per photo, weather and severity drawn from ``--seed``."""
    from mofme.data import BuiltinWeatherDataset
    from mofme.data.builtin import builtin_family_items

    split = args.split or "test"
    if split not in ("val", "test"):
        raise ValueError(f"--data builtin scores the val or test split, got --split {split}")
    if not args.family:
        return BuiltinWeatherDataset(split, renders=args.renders, seed=args.seed or 0)
    return builtin_family_items(split, args.family, renders=args.renders, seed=args.seed or 0)


def _segmentation_data(args: argparse.Namespace):
    """The whole images of ``--split`` of the Cityscapes / ACDC tree at ``--root``."""
    from mofme.data import SegmentationDataset
    from mofme.train.data import segmentation_pairs

    if args.root is None:
        raise ValueError(f"--data {args.data} needs --root, the dataset's folder")
    if args.variant is not None and args.data != "cityscapes":
        raise ValueError("--variant applies to --data cityscapes only")
    split = args.split or "val"
    pairs = segmentation_pairs(args.data, args.root, split, variant=args.variant or "clean")
    return SegmentationDataset(pairs)


def _recognition_data(args: argparse.Namespace, task: str):
    """The test split of the built-in task ``--data`` names, a Cityscapes / ACDC split (segmentation) or
    an ImageFolder tree (classification)."""
    wanted = RECOGNITION_TASK.get(args.data)
    if wanted is not None and wanted != task:
        raise ValueError(f"--data {args.data} is a {wanted} task; {args.checkpoint} holds a {task} model")
    from mofme.train.data import SEGMENTATION_DATASETS

    if args.data in SEGMENTATION_DATASETS:
        return _segmentation_data(args)
    if args.data == "scenes":
        from mofme.data.builtin_tasks import SceneDataset

        return SceneDataset("test")
    if args.data == "degradation":
        from mofme.data.builtin_tasks import DegradationDataset

        return DegradationDataset("test")
    if task != "classification":
        raise ValueError(
            f"a segmenter evaluates on --data degradation, cityscapes or acdc, got {args.data!r}"
        )
    if not Path(args.data).is_dir():
        raise FileNotFoundError(
            f"--data: no such folder (ImageFolder layout root/<class>/<image>): {args.data}"
        )
    from mofme.data import ClassificationDataset, image_folder

    return ClassificationDataset(image_folder(args.data), crop_size=args.crop_size)


def _eval_recognition(args: argparse.Namespace, model) -> int:
    """``mofme eval`` of a classifier or segmenter, optionally also on images restored first."""
    from mofme.evaluate.recognition import evaluate_classifier, evaluate_segmenter, task_of
    from mofme.models import DEFAULT_WEIGHTS as SHIPPED
    from mofme.models import load_restorer

    task = task_of(model)
    if args.restore_with is not None and args.data == "degradation":
        raise ValueError(
            "--restore-with does not apply to the degradation task: its labels are the weather itself, "
            "which restoration removes from the image"
        )
    restorer = None
    if args.restore_with is not None:
        restorer = load_restorer(
            SHIPPED if args.restore_with == "default" else args.restore_with, device=args.device
        )
    data = _recognition_data(args, task)
    options = {
        "device": args.device,
        "progress": True,
        "restore_tile": args.tile,
        "restore_overlap": args.overlap,
    }
    if task == "segmentation":
        options.update(tile=args.seg_tile, overlap=args.seg_overlap)
    meta = {"checkpoint": str(args.checkpoint), "data": args.data}
    if restorer is None:
        evaluate = evaluate_classifier if task == "classification" else evaluate_segmenter
        report = evaluate(model, data, **options)
        report.meta.update(meta)
        json_path, md_path = report.save(args.output)
        print(report.to_markdown())
        print(f"wrote {json_path} and {md_path}")
        return 0
    return _restore_then_recognise(args, model, data, restorer, {**options, "task": task}, meta)


def _restore_then_recognise(args, model, data, restorer, options: dict, meta: dict) -> int:
    """Evaluate on the degraded and on the restored images; write both reports, the table and the figure."""
    from mofme.apps.plots import plot_restore_then_recognise
    from mofme.atomic import write_text_atomic
    from mofme.evaluate.recognition import compare_with_restoration, restoration_table_markdown

    degraded, restored = compare_with_restoration(model, data, restorer, **options)
    output = Path(args.output)
    for name, report in (("degraded", degraded), ("restored", restored)):
        report.meta.update(meta, restore_with=None if name == "degraded" else args.restore_with)
        report.save(output / name)
    table = restoration_table_markdown(degraded, restored)
    write_text_atomic(output / "restore_then_recognise.md", table)
    figure = plot_restore_then_recognise(degraded, restored, output / "restore_then_recognise.png")
    print(table)
    print(
        f"wrote {output / 'degraded'}, {output / 'restored'}, {output / 'restore_then_recognise.md'} and {figure}"
    )
    return 0


def _restore(args: argparse.Namespace) -> int:
    from mofme.data.io import IMAGE_EXTENSIONS
    from mofme.infer.restore import plan_outputs, restore_paths
    from mofme.models import load_restorer

    if not plan_outputs(args.inputs, Path(args.output)):  # before loading the model
        raise ValueError(
            f"no images to restore in {', '.join(args.inputs)} (looked for {' '.join(IMAGE_EXTENSIONS)} "
            "files, sub-folders included)"
        )
    model = load_restorer(args.checkpoint, device=args.device)
    result = restore_paths(
        model, args.inputs, args.output, tile=args.tile, overlap=args.overlap, fast=args.fast
    )
    print(f"restored {len(result.written)} image(s) into {args.output}")
    return _report_failed(result.failed)


def _serve(args: argparse.Namespace) -> int:
    from mofme.apps.serve import ServeSettings, run_server

    settings = ServeSettings(
        max_upload_bytes=round(args.max_upload_mb * 1e6),
        max_pixels=round(args.max_megapixels * 1e6),
        tile=args.tile,
        overlap=args.overlap,
        max_queue=args.max_queue,
    )
    run_server(
        checkpoint=args.checkpoint,
        host=args.host,
        port=args.port,
        settings=settings,
        device=args.device,
        token=args.token,
    )
    return 0


def _report_failed(failed: list) -> int:
    """Name each ``(path, reason)`` that could not be processed on stderr; the exit status."""
    for path, reason in failed:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    return 1 if failed else 0


def _masks(args: argparse.Namespace) -> int:
    from mofme.infer.masks import weather_masks
    from mofme.models import load_model

    model = load_model(args.checkpoint, device=args.device)
    result = weather_masks(model, args.inputs, args.output, tile=args.tile, overlap=args.overlap)
    print(f"wrote the weather masks of {len(result.fractions)} photo(s) and {result.report}")
    return _report_failed(result.failed)


def _synth(args: argparse.Namespace) -> int:
    from mofme.data import synthesize_dataset
    from mofme.data.families import FAMILIES

    if args.list_families:
        for name, family in sorted(FAMILIES.items()):
            print(f"{name:24s} {family.description}")
        return 0
    if args.source is None or args.output is None:
        raise ValueError("mofme synth needs a source folder of clean photos and --output")

    pairs = synthesize_dataset(
        args.source,
        args.output,
        weathers=tuple(args.weathers),
        severities=tuple(args.severities),
        seed=args.seed,
        families=args.family,
    )
    print(f"wrote {len(pairs)} pairs (Allweather layout, list files included) to {args.output}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from mofme.benchmarks.restorer import run

    run(args)
    return 0


def _study(args: argparse.Namespace) -> int:
    from mofme.apps.study import load_settings, run_study

    command = "mofme study " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["study"] else "mofme study"
    run_study(
        args.output,
        minutes_per_run=args.minutes_per_run,
        seeds=args.seeds,
        variants=args.variants,
        settings=load_settings(args.settings) if args.settings else None,
        experts=args.experts,
        recipe=args.recipe,
        steps=args.steps or None,
        overrides=args.overrides,
        command=command.strip(),
    )
    return 0


def _bench_layers(args: argparse.Namespace) -> int:
    from mofme.benchmarks.layers import main as bench_main

    return bench_main(args.rest)


Subcommands = argparse._SubParsersAction  # what ArgumentParser.add_subparsers returns


def build_parser() -> argparse.ArgumentParser:
    """The ``mofme`` command line: one sub-command per ``_add_<command>`` below."""
    parser = argparse.ArgumentParser(
        prog="mofme", description="Mixture of Feature-Modulated Experts: restoration toolkit"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_demo,
        _add_train,
        _add_eval,
        _add_restore,
        _add_serve,
        _add_masks,
        _add_synth,
        _add_bench,
        _add_study,
        _add_bench_layers,
    ):
        add(commands)
    return parser


def _tiled_arguments(p: argparse.ArgumentParser) -> None:
    """--checkpoint, --tile, --overlap, --device of the commands that restore whole photos."""
    p.add_argument(
        "--checkpoint",
        default=DEFAULT_WEIGHTS,
        help=f"a save_pretrained directory (config.json + model.safetensors) or a shipped model "
        f"(default: {DEFAULT_WEIGHTS}, the weights in the package)",
    )
    p.add_argument(
        "--tile", type=int, default=256, help="tiled-inference window (pixels; default %(default)s)"
    )
    p.add_argument(
        "--overlap", type=int, default=32, help="overlap of the windows (pixels; default %(default)s)"
    )
    p.add_argument(
        "--device", default="cpu", help="where the model runs: cpu, cuda, cuda:1, ... (default cpu)"
    )


def _fast_path_argument(p: argparse.ArgumentParser) -> None:
    """--no-fast of the commands that restore on the CPU."""
    p.add_argument(
        "--no-fast",
        dest="fast",
        action="store_false",
        help="restorers on the CPU: run the plain modules instead of the inference fast path "
        "(oneDNN, channels-last; the same outputs to float32 rounding)",
    )


def _add_demo(commands: Subcommands) -> None:
    """mofme demo."""
    demo = commands.add_parser(
        "demo", help="restore and score the built-in test split with the shipped weights (or --train)"
    )
    demo.add_argument("--output", default="mofme-demo", help="output folder (default: mofme-demo)")
    demo.add_argument("--checkpoint", default=None, help="a saved model instead of the shipped weights")
    demo.add_argument(
        "--train", action="store_true", help="first train a small restorer from scratch (fixed step count)"
    )
    demo.add_argument("--seed", type=int, default=0, help="training seed (with --train)")
    demo.add_argument("overrides", nargs="*", help="recipe overrides with --train, e.g. model.router=uar")
    demo.set_defaults(func=_demo)


def _add_train(commands: Subcommands) -> None:
    """mofme train."""
    train = commands.add_parser("train", help="train a restorer from a YAML recipe")
    train.add_argument("config", help="YAML file, or the name of a shipped recipe (e.g. demo_cpu)")
    train.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. optim.lr=2e-4")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    train.set_defaults(func=_train)


def _add_eval(commands: Subcommands) -> None:
    """mofme eval."""
    ev = commands.add_parser(
        "eval",
        help="restorers: PSNR/SSIM per weather type on full-resolution test pairs; classifiers and "
        "segmenters: accuracy / mIoU per weather condition",
    )
    _tiled_arguments(ev)
    _fast_path_argument(ev)
    _eval_data_arguments(ev)
    ev.add_argument("--output", default="eval", help="where metrics.json and metrics.md go")
    ev.add_argument("--y-channel", action="store_true", help="metrics on BT.601 Y instead of RGB")
    ev.add_argument(
        "--crop-border", type=int, default=0, help="pixels left out of the metrics at each border"
    )
    ev.add_argument("--save-images", default=None, help="also write the restored images here")
    ev.add_argument(
        "--restore-with",
        default=None,
        metavar="CHECKPOINT",
        help="recognition models: also score the images restored first by this restorer ('default': the "
        "shipped weights); writes degraded/, restored/ and the restore_then_recognise comparison",
    )
    ev.add_argument("--seg-tile", type=int, default=64, help="segmenters: tiled-inference window (pixels)")
    ev.add_argument("--seg-overlap", type=int, default=16, help="segmenters: overlap of the windows")
    ev.add_argument(
        "--crop-size",
        type=int,
        default=None,
        help="ImageFolder data: centre crops of this size (default: whole)",
    )
    ev.set_defaults(func=_eval)


def _eval_data_arguments(ev: argparse.ArgumentParser) -> None:
    """mofme eval's choice of data: --data and what reads it (--root, --split, --renders, --seed,
    --variant)."""
    ev.add_argument(
        "--data",
        required=True,
        help="restorers: a list file (input/... lines), a folder with input/ and gt/, or 'builtin'; "
        "recognition models: 'scenes' (classifiers), 'degradation', 'cityscapes' or 'acdc' (segmenters; "
        "the last two read --root) or an ImageFolder folder (classifiers)",
    )
    ev.add_argument(
        "--root",
        default=None,
        help="a list file's paths are relative to this folder (default: the list's folder); "
        "--data cityscapes / acdc: the dataset's folder",
    )
    ev.add_argument(
        "--split",
        default=None,
        help="--data cityscapes / acdc: the split scored (default: val); --data builtin: val (for "
        "choosing a model) or test (default)",
    )
    ev.add_argument(
        "--renders",
        type=int,
        default=None,
        help="--data builtin: renders per photo, weather and severity (default: 4 for test, 1 for val)",
    )
    ev.add_argument(
        "--seed",
        type=int,
        default=None,
        help="--data builtin: the seed the renders are drawn from (default 0, the published split)",
    )
    ev.add_argument(
        "--family",
        nargs="+",
        default=None,
        metavar="NAME",
        help="--data builtin: render the split with these renderer families instead (a report group "
        "each; `mofme synth --list-families` lists them)",
    )
    ev.add_argument(
        "--variant",
        default=None,
        choices=["clean", "foggy", "rain"],
        help="--data cityscapes: leftImg8bit (default), Foggy or Rain Cityscapes images",
    )


def _add_restore(commands: Subcommands) -> None:
    """mofme restore."""
    restore = commands.add_parser("restore", help="restore your own photos (files or folders, any size)")
    restore.add_argument("inputs", nargs="+", help="image files and folders (searched recursively)")
    restore.add_argument(
        "--output", required=True, help="folder the restored images go to (same names and sub-folders)"
    )
    _tiled_arguments(restore)
    _fast_path_argument(restore)
    restore.set_defaults(func=_restore)


def _add_serve(commands: Subcommands) -> None:
    """mofme serve."""
    serve = commands.add_parser(
        "serve",
        help="restore photos from a local web page (needs the serve extra: pip install 'mofme[serve]')",
    )
    _tiled_arguments(serve)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: this machine only)"
    )
    serve.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    serve.add_argument("--max-upload-mb", type=float, default=50.0, help="largest file accepted (MB)")
    serve.add_argument(
        "--max-megapixels", type=float, default=25.0, help="largest image accepted, width x height (MP)"
    )
    serve.add_argument("--max-queue", type=int, default=32, help="photos queued or restoring at once")
    serve.add_argument(
        "--token",
        default=None,
        help="the access token a server bound beyond this machine requires (default: a random one, printed "
        "at start); a server on 127.0.0.1 needs none",
    )
    serve.set_defaults(func=_serve, tile=128, overlap=16)  # ServeSettings' defaults (measured there)


def _add_masks(commands: Subcommands) -> None:
    """mofme masks."""
    masks = commands.add_parser(
        "masks",
        help="weather masks of your own photos (files or folders, any size) by a degradation segmenter: "
        "colour-coded mask and overlay PNGs, masks.json with each class's share of the pixels",
    )
    masks.add_argument("inputs", nargs="+", help="image files and folders (searched recursively)")
    masks.add_argument("--output", required=True, help="folder the masks, overlays and masks.json go to")
    masks.add_argument(
        "--checkpoint", required=True, help="a segmenter trained on data.type: degradation (save_pretrained)"
    )
    masks.add_argument("--tile", type=int, default=64, help="tiled-inference window (pixels)")
    masks.add_argument("--overlap", type=int, default=16, help="overlap of the windows")
    masks.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, ... (default cpu)")
    masks.set_defaults(func=_masks)


def _add_synth(commands: Subcommands) -> None:
    """mofme synth."""
    synth = commands.add_parser(
        "synth", help="render weather on your photos into an Allweather-style dataset"
    )
    synth.add_argument("source", nargs="?", help="folder of clean photos")
    synth.add_argument("--output", help="the dataset's folder (input/, gt/, mask/, lists)")
    synth.add_argument(
        "--weathers",
        nargs="+",
        default=["rain", "snow", "haze", "raindrop"],
        help="weather types drawn by the classic renderer (default: all four)",
    )
    synth.add_argument(
        "--family",
        nargs="+",
        default=None,
        metavar="NAME",
        help="renderer families to draw instead (e.g. rain-noise snow-bokeh; `mofme synth --list-families`)",
    )
    synth.add_argument("--list-families", action="store_true", help="print the renderer families and exit")
    synth.add_argument("--severities", nargs="+", type=int, default=[1, 2, 3], help="1 light .. 3 heavy")
    synth.add_argument("--seed", type=int, default=0, help="renders are drawn from this seed (default 0)")
    synth.set_defaults(func=_synth)


def _add_bench(commands: Subcommands) -> None:
    """mofme bench."""
    from mofme.benchmarks.restorer import add_arguments as add_bench_arguments

    whole = commands.add_parser(
        "bench", help="whole-restorer parameters, FLOPs, latency, memory, training step"
    )
    add_bench_arguments(whole)
    whole.set_defaults(func=_bench)


def _add_study(commands: Subcommands) -> None:
    """mofme study."""
    from mofme.apps.study import DEFAULT_STEPS, RECIPE, STUDY_VARIANTS

    study = commands.add_parser(
        "study", help="dense vs MoE vs MoFME (linear, UaR) at an equal budget, with routing analysis"
    )
    study.add_argument("--output", default="mofme-study", help="the study's folder (default: mofme-study)")
    study.add_argument(
        "--minutes-per-run", type=float, default=4.0, help="with --steps 0: the slowest variant's budget"
    )
    study.add_argument("--seeds", type=int, default=3, help="runs per variant, seeds 0.. (default 3)")
    study.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help=f"variants to run (default: all of {', '.join(STUDY_VARIANTS)} and those of --settings)",
    )
    study.add_argument(
        "--recipe",
        default=RECIPE,
        help="every run's base recipe, a shipped name or YAML path (e.g. allweather_paper_mofme on a GPU)",
    )
    study.add_argument(
        "--settings", help="YAML file of more named variants, name: [override, ...] (e.g. a routing sweep)"
    )
    study.add_argument(
        "--experts",
        nargs="+",
        type=int,
        help="scaling study: run every routed variant once per number of experts (same k), e.g. 4 16 64 128",
    )
    study.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help="optimiser steps of every run (0: fit them to --minutes-per-run on this machine)",
    )
    study.add_argument(
        "overrides", nargs="*", help="recipe overrides for every run, e.g. model.num_experts=8"
    )
    study.set_defaults(func=_study)


def _add_bench_layers(commands: Subcommands) -> None:
    """mofme bench-layers."""
    bench = commands.add_parser("bench-layers", help="layer benchmark (python -m mofme.benchmarks.layers)")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the benchmark")
    bench.set_defaults(func=_bench_layers)


SERVE_MODULES = ("fastapi", "uvicorn", "starlette", "multipart", "python_multipart")


def _missing(error: ModuleNotFoundError) -> int:
    """The layer-only install lacks the pipeline's libraries: say which extra brings them."""
    serve = (error.name or "").split(".")[0] in SERVE_MODULES
    needs = "mofme serve needs the serve" if serve else "the command line needs the restoration"
    extra = "serve" if serve else "restoration"
    print(
        f"mofme: error: {error.name} is not installed; {needs} extras: pip install 'mofme[{extra}]'",
        file=sys.stderr,
    )
    return 2


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except ModuleNotFoundError as error:
        return _missing(error)
    except (FileNotFoundError, ValueError, FileExistsError) as error:
        print(f"mofme {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
