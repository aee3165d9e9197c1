"""The command line end to end on tiny settings: demo, restore, eval, synth."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mofme.apps.demo import run_demo
from mofme.cli import main
from mofme.data import read_image

TINY_TRAINING = [
    "model.name=restorer_tiny",
    "model.num_experts=4",
    "data.samples_per_epoch=16",
    "data.batch_size=4",
    "data.crop_size=32",
    "train.epochs=2",
    "train.eval_every=1",
    "train.progress=false",
]


def _demo(output, **kwargs) -> dict:
    """``mofme demo`` on 64-pixel test photos (the split itself: 96 renders), without progress bars."""
    run_demo(output, progress=False, test_size=64, **kwargs)
    return json.loads((output / "metrics.json").read_text())


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """``mofme demo --train`` shrunk to seconds: tiny model, 8 steps; it still writes every artefact."""
    output = tmp_path_factory.mktemp("demo")
    _demo(output, train=True, overrides=TINY_TRAINING)
    return output


def test_demo_train_writes_metrics_figures_and_a_checkpoint(demo_dir, capsys):
    names = {p.name for p in demo_dir.iterdir()}
    assert {"metrics.json", "metrics.md", "comparison.png", "routing.png", "model"} <= names
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    assert set(metrics["per_weather"]) == {"rain", "snow", "haze", "raindrop"}
    assert set(metrics["per_weather_severity"]) == {
        f"{w}/s{s}" for w in metrics["per_weather"] for s in (1, 2, 3)
    }
    assert len(metrics["images"]) == 2 * 4 * 3 * 4
    test_names = {row["name"].split("_")[0] for row in metrics["images"]}
    assert test_names == {"rocket", "china"}  # the held-out photos, never the training ones
    assert metrics["meta"]["train_steps"] == 2 * 16 // 4  # a step count, not a time budget
    assert set(metrics["meta"]["clean_psnr"]) == {"rocket", "china"}
    assert sorted(p.name for p in (demo_dir / "model").iterdir()) == ["config.json", "model.safetensors"]
    usage = np.array(json.loads((demo_dir / "routing.json").read_text())["expert_usage"])
    np.testing.assert_allclose(usage.sum(axis=-1), 1.0)


def test_demo_gives_the_same_numbers_every_run(demo_dir, tmp_path):
    """Without --train the demo only restores: two runs write identical metrics; --train with the same
    seed trains to the same weights and metrics (a step count, whatever the speed of the machine)."""
    checkpoint = demo_dir / "model"
    first = _demo(tmp_path / "a", checkpoint=checkpoint)
    second = _demo(tmp_path / "b", checkpoint=checkpoint)
    assert first == second and first["meta"]["train_steps"] == 0
    assert (tmp_path / "a" / "comparison.png").is_file() and not (tmp_path / "a" / "model").exists()
    retrained = _demo(tmp_path / "c", train=True, overrides=TINY_TRAINING)
    original = json.loads((demo_dir / "metrics.json").read_text())
    assert retrained["images"] == original["images"]


def test_demo_cli_refuses_overrides_without_train(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path), "model.name=restorer_tiny"]) == 2
    assert "only apply with --train" in capsys.readouterr().err


def test_restore_cli_writes_good_files_and_reports_bad_ones(demo_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((37, 53), 120, np.uint8), "L").save(photos / "gray.png")
    Image.fromarray(np.zeros((20, 30, 4), np.uint8), "RGBA").save(photos / "alpha.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    code = main(["restore", str(photos), "--output", str(out), "--checkpoint", str(demo_dir / "model")])
    assert code == 1  # something failed, and the exit status says so
    assert read_image(out / "gray.png").shape == (37, 53, 3)
    assert read_image(out / "alpha.png").shape == (20, 30, 3)
    assert not (out / "broken.jpg").exists()


def test_synth_then_eval_on_the_written_dataset(demo_dir, tmp_path):
    photos = tmp_path / "clean"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(photos / "noise.png")
    data = tmp_path / "synth"
    assert main(["synth", str(photos), "--output", str(data), "--severities", "2"]) == 0
    assert (data / "allweather.txt").is_file()
    report = tmp_path / "report"
    code = main(
        [
            "eval",
            "--checkpoint",
            str(demo_dir / "model"),
            "--data",
            str(data / "allweather.txt"),
            "--output",
            str(report),
        ]
    )
    assert code == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["per_weather"]) == {"rain", "snow", "haze", "raindrop"}


def test_errors_are_reported_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mofme", "train", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "missing.yaml" in result.stderr and "Traceback" not in result.stderr


def test_study_names_an_unknown_variant_and_a_bad_settings_file(tmp_path, capsys):
    assert main(["study", "run", "--output", str(tmp_path / "s"), "--variants", "mofme-huge"]) == 2
    assert "unknown study variant(s) ['mofme-huge']" in capsys.readouterr().err
    bad = tmp_path / "sweep.yaml"
    bad.write_text("- model.ffn=mofme\n")
    assert main(["study", "run", "--output", str(tmp_path / "s"), "--settings", str(bad)]) == 2
    assert f"{bad}: expected a mapping" in capsys.readouterr().err


def test_eval_builtin_val_split_with_renders_and_seed(demo_dir, tmp_path):
    def scored(*flags) -> dict:
        output = tmp_path / "-".join(flags)
        args = ["eval", "--checkpoint", str(demo_dir / "model"), "--data", "builtin", *flags]
        assert main([*args, "--output", str(output)]) == 0
        return json.loads((output / "metrics.json").read_text())

    first = scored("--split", "val", "--renders", "2", "--seed", "7")
    assert first["mean_over_weather"]["images"] == 1 * 4 * 3 * 2  # one val photo x weathers x severities
    again, other = (
        scored("--split", "val", "--renders", "2", "--seed", "7"),
        scored("--split", "val", "--seed", "8"),
    )
    assert again["per_weather"] == first["per_weather"]
    assert other["mean_over_weather"]["images"] == 12
    assert other["mean_over_weather"]["input_psnr"] != first["mean_over_weather"]["input_psnr"]
    base = ["eval", "--checkpoint", str(demo_dir / "model"), "--output", str(tmp_path / "bad")]
    assert main([*base, "--data", "builtin", "--split", "train"]) == 2
    assert main([*base, "--data", str(tmp_path / "list.txt"), "--renders", "2"]) == 2


def test_synth_and_eval_by_renderer_family(demo_dir, tmp_path, capsys):
    """--family in synth writes a folder per family whose weather is read back from its name; in eval
    it scores the built-in split drawn by each family, the classic family giving the default renders."""
    photos = tmp_path / "clean"
    photos.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((40, 56, 3)) * 255).astype(np.uint8)).save(photos / "noise.png")
    data = tmp_path / "families"
    families = ["rain-classic", "haze-classic"]
    assert (
        main(["synth", str(photos), "--output", str(data), "--severities", "1", "--family", *families]) == 0
    )
    listed = (data / "allweather.txt").read_text().split()
    assert listed == ["input/rain-classic/noise_s1.png", "input/haze-classic/noise_s1.png"]
    assert json.loads((data / "synth.json").read_text())["families"] == families
    assert main(["synth", "--list-families"]) == 0
    assert "rain-classic" in capsys.readouterr().out

    def scored(*flags) -> dict:
        output = tmp_path / "-".join(flags)
        args = ["eval", "--checkpoint", str(demo_dir / "model"), "--data", "builtin", "--split", "val"]
        assert main([*args, *flags, "--output", str(output)]) == 0
        return json.loads((output / "metrics.json").read_text())

    by_family = scored("--family", "rain-classic", "snow-classic")
    assert list(by_family["per_weather"]) == ["rain-classic", "snow-classic"]
    default = scored()
    for family, weather in (("rain-classic", "rain"), ("snow-classic", "snow")):
        assert by_family["per_weather"][family] == default["per_weather"][weather]
    bad = ["eval", "--checkpoint", str(demo_dir / "model"), "--output", str(tmp_path / "bad")]
    assert main([*bad, "--data", "builtin", "--family", "rain-nope"]) == 2
    assert main([*bad, "--data", str(data / "allweather.txt"), "--family", "rain-classic"]) == 2


def test_eval_scores_a_recipes_validation_set_as_training_does(demo_dir, tmp_path):
    """--data RECIPE.yaml: the recipe's held-out families on its validation photos and its clean photos,
    scored as the training's validation scores them; --seed redraws the renders."""
    from mofme.models import load_model
    from mofme.train.config import load_config
    from mofme.train.data import build_datasets
    from mofme.train.recipes.restoration import validate

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(2)
    for name in ("a", "b"):
        Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(photos / f"{name}.png")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"data:\n  type: folder\n  folders: [{{path: {photos}}}]\n  weathers: [haze]\n  families: [haze-classic]\n"
        f"  val_families: [haze-fractal]\n  val_folders: [{photos}]\n  val_long_side: 48\n"
        f"  clean_folder: {photos}\n  clean_long_side: 48\ntrain:\n  seed: 5\n"
    )

    def scored(*flags) -> dict:
        output = tmp_path / ("out" + "-".join(flags))
        args = ["eval", "--checkpoint", str(demo_dir / "model"), "--data", str(recipe), "--no-fast"]
        assert main([*args, *flags, "--output", str(output)]) == 0
        return json.loads((output / "metrics.json").read_text())

    default = scored()
    assert sorted(default["per_weather"]) == ["clean", "haze-fractal"]
    config = load_config(recipe)
    expected = validate(load_model(demo_dir / "model"), build_datasets(config.data, seed=5)[1], config)
    assert default["per_weather"]["haze-fractal"]["psnr"] == pytest.approx(expected["haze-fractal"], abs=1e-6)
    assert scored("--seed", "5")["per_weather"] == default["per_weather"]
    other = scored("--seed", "6")["per_weather"]["haze-fractal"]
    assert other["input_psnr"] != default["per_weather"]["haze-fractal"]["input_psnr"]
