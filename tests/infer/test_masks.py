"""``mofme masks`` end to end: an (untrained) degradation segmenter on two rendered photos of different
sizes; the mask and overlay PNGs, the palette, and the class fractions against the segmenter's argmax."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mofme.cli import main
from mofme.data import read_image, write_image
from mofme.data.builtin_tasks import DEGRADATION_CLASSES
from mofme.data.transforms import to_tensor
from mofme.data.weather import render_weather
from mofme.infer.masks import MASK_COLOURS
from mofme.infer.segment import segment_logits
from mofme.models import create_model, load_model


@pytest.fixture
def photos(tmp_path):
    """A rainy 70 x 90 PNG in a folder and a hazy 50 x 130 JPEG given as a file."""
    paths = []
    for name, weather, (h, w) in (("album/rain.png", "rain", (70, 90)), ("haze.jpg", "haze", (50, 130))):
        yy, xx = np.mgrid[0:h, 0:w]
        clean = np.stack([yy / h, xx / w, np.full((h, w), 0.5)], axis=2)
        paths.append(
            write_image(tmp_path / name, render_weather(clean, weather, severity=3, seed=1).degraded)
        )
    return paths


@pytest.fixture
def segmenter(tmp_path):
    create_model("segmenter_tiny", num_classes=len(DEGRADATION_CLASSES)).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def _argmax(checkpoint, photo) -> np.ndarray:
    model = load_model(checkpoint)
    with torch.no_grad():
        return segment_logits(model, to_tensor(read_image(photo)), tile=64, overlap=16).argmax(0).numpy()


def test_masks_writes_palette_masks_overlays_and_fractions(tmp_path, photos, segmenter):
    out = tmp_path / "out"
    args = ["masks", str(photos[0].parent), str(photos[1]), "--checkpoint", str(segmenter)]
    assert main([*args, "--output", str(out)]) == 0
    report = json.loads((out / "masks.json").read_text())
    assert report["classes"] == list(DEGRADATION_CLASSES) and report["failed"] == {}
    palette = {tuple(c) for c in MASK_COLOURS.values()}
    assert len(palette) == len(DEGRADATION_CLASSES)
    seen = set()
    for photo, stem in zip(photos, ("rain", "haze"), strict=True):
        image = read_image(photo)
        labels = _argmax(segmenter, photo)
        entry = report["photos"][str(photo)]
        assert (entry["mask"], entry["overlay"]) == (f"{stem}_mask.png", f"{stem}_overlay.png")
        with Image.open(out / entry["mask"]) as mask:
            assert mask.size == (image.shape[1], image.shape[0]) and mask.mode == "P"
            np.testing.assert_array_equal(np.asarray(mask), labels)  # pixel values: the classes
            colours = np.asarray(mask.convert("RGB")).reshape(-1, 3)
        assert {tuple(c) for c in np.unique(colours, axis=0)} <= palette
        overlay = read_image(out / entry["overlay"])
        assert overlay.shape == image.shape
        np.testing.assert_array_equal(overlay[labels == 0], image[labels == 0])  # clean pixels unchanged
        assert not np.array_equal(overlay[labels > 0], image[labels > 0])
        expected = np.bincount(labels.ravel(), minlength=len(DEGRADATION_CLASSES)) / labels.size
        fractions = entry["fractions"]
        assert list(fractions) == list(DEGRADATION_CLASSES) and sum(fractions.values()) == pytest.approx(1.0)
        assert list(fractions.values()) == pytest.approx(expected.tolist(), abs=1e-12)
        seen |= {c for c, share in fractions.items() if share > 0}
    assert len(seen) > 1  # the masks are not a single class


def test_masks_refuses_other_models_and_names_unreadable_files(tmp_path, photos, segmenter, capsys):
    create_model("restorer_tiny").save_pretrained(tmp_path / "restorer")
    create_model("classifier_tiny", num_classes=5).save_pretrained(tmp_path / "classifier")
    create_model("segmenter_tiny", num_classes=19).save_pretrained(tmp_path / "cityscapes")
    out = tmp_path / "out"
    for name, message in (
        ("restorer", "got a Restorer"),
        ("classifier", "got a ViTClassifier"),
        ("cityscapes", "predicts 19 classes"),
    ):
        assert (
            main(["masks", str(photos[1]), "--checkpoint", str(tmp_path / name), "--output", str(out)]) == 2
        )
        assert message in capsys.readouterr().err
    assert not out.exists()
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    assert (
        main(["masks", str(notes), str(photos[1]), "--checkpoint", str(segmenter), "--output", str(out)]) == 1
    )
    assert f"failed: {notes}: " in capsys.readouterr().err
    report = json.loads((out / "masks.json").read_text())
    assert list(report["failed"]) == [str(notes)] and list(report["photos"]) == [str(photos[1])]
    assert (out / "haze_mask.png").is_file() and not (out / "notes_mask.png").exists()
    with pytest.raises(SystemExit):  # --checkpoint is required: no weights ship for this yet
        main(["masks", str(photos[1]), "--output", str(out)])
    assert "--checkpoint" in capsys.readouterr().err
