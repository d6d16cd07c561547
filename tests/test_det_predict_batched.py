"""``cnnzoo predict`` with a detector runs images of one size as one batch (channels-last,
one decoding): every image gets the detections it gets alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from cnnzoo.families.detection import predict
from cnnzoo.families.detection.predict import predict_detection

SCENE = Path(__file__).resolve().parent.parent / "docs" / "img" / "examples" / "scene.png"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNZOO_HOME", str(tmp_path / "home"))


def test_batched_predictions_equal_one_image_at_a_time(tmp_path, monkeypatch):
    scene = Image.open(SCENE).convert("RGB")
    files = [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png", tmp_path / "d.png"]
    scene.save(files[0])
    scene.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(files[1])
    scene.resize((80, 64)).save(files[2])  # another size: a batch of its own
    scene.transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(files[3])
    calls = []
    detect = predict.detect
    monkeypatch.setattr(
        predict, "detect", lambda m, x, *a: calls.append(len(x)) or detect(m, x, *a)
    )
    together = predict_detection("yolov3.scenes", files, tmp_path / "all", conf=0.05)
    assert sorted(calls) == [1, 3]  # the three 96 px scenes went through together
    for path, batched in zip(files, together, strict=True):
        [alone] = predict_detection("yolov3.scenes", [path], tmp_path / path.stem, conf=0.05)
        assert [d["label"] for d in batched.detections] == [d["label"] for d in alone.detections]
        for mine, theirs in zip(batched.detections, alone.detections, strict=True):
            assert mine["box"] == pytest.approx(theirs["box"], abs=0.02)
            assert mine["score"] == pytest.approx(theirs["score"], abs=1e-3)
    assert sum(len(p.detections) for p in together) > 0
