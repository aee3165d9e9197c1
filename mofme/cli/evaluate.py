"""``mofme eval``: parses the checkpoint, data and metric options and picks the data; the scoring is
:mod:`mofme.evaluate.restoration` (restorers) and :mod:`mofme.evaluate.recognition` (classifiers and
segmenters)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import Subcommands, fast_path_argument, tiled_arguments


def recognition_tasks() -> dict[str, str]:
    """``--data`` names of the recognition datasets -> their task (``mofme.train.config.TASK_DATA``;
    an ImageFolder is given by its path here, not by the name ``imagefolder``)."""
    from mofme.evaluate.recognition import TASKS
    from mofme.train.config import TASK_DATA

    return {data: task for task in TASKS for data in TASK_DATA[task] if data != "imagefolder"}


def run(args: argparse.Namespace) -> int:
    from mofme.evaluate.restoration import evaluate
    from mofme.models import ViTClassifier, ViTSegmenter, load_model

    model = load_model(args.checkpoint, device=args.device)
    if isinstance(model, ViTClassifier | ViTSegmenter):
        return _eval_recognition(args, model)
    named = recognition_tasks()
    if args.restore_with is not None or args.data in named:
        raise ValueError(
            f"{args.checkpoint} holds a restorer: --restore-with and --data {'/'.join(named)} "
            "are for recognition models (a ViTClassifier or ViTSegmenter checkpoint)"
        )
    recipe = Path(args.data).suffix in (".yaml", ".yml")
    if args.data != "builtin" and (
        args.renders is not None or args.family or (args.seed is not None and not recipe)
    ):
        raise ValueError("--renders and --family apply to --data builtin only, --seed to builtin or a recipe")
    if args.data == "builtin":
        data = _builtin_eval_data(args)
    elif recipe:
        data = _recipe_validation_data(args.data, args.seed)
    else:
        data = _read_eval_data(args.data, args.root)
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


def _read_eval_data(location: str, root: str | None):
    from mofme.data import paired_folder, read_pair_list

    path = Path(location)
    if path.is_dir():
        return paired_folder(path)
    return read_pair_list(path, root)


def _recipe_validation_data(path: str, seed: int | None):
    """What ``mofme train`` validates the recipe at ``path`` on (its held-out families on its
    validation photos, and its clean photos), rendered from ``seed`` (default: the recipe's
    ``data.val_seed``, else its ``train.seed``), so a checkpoint scores on a run's own renders."""
    from mofme.train.config import load_config
    from mofme.train.data import validation_set

    config = load_config(path)
    data = config.data if seed is None else config.data.model_copy(update={"val_seed": seed})
    return validation_set(data, seed=config.train.seed)


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
    wanted = recognition_tasks().get(args.data)
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


def add_parser(commands: Subcommands) -> None:
    """mofme eval."""
    ev = commands.add_parser(
        "eval",
        help="restorers: PSNR/SSIM per weather type on full-resolution test pairs; classifiers and "
        "segmenters: accuracy / mIoU per weather condition",
    )
    tiled_arguments(ev)
    fast_path_argument(ev)
    _data_arguments(ev)
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
    ev.set_defaults(func=run)


def _data_arguments(ev: argparse.ArgumentParser) -> None:
    """mofme eval's choice of data: --data and what reads it (--root, --split, --renders, --seed,
    --variant)."""
    ev.add_argument(
        "--data",
        required=True,
        help="restorers: a list file (input/... lines), a folder with input/ and gt/, 'builtin', or a "
        "training recipe (.yaml: its validation set, --seed its renders); "
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
        help="--data builtin: the seed the renders are drawn from (default 0, the published split); "
        "--data RECIPE.yaml: the seed of its validation renders (default: the recipe's)",
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
