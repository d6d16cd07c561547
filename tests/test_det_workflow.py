"""Detection end to end: train into a run directory, eval (COCO + VOC AP), predict, anchors,
conversion from the command line, and the errors of bad options."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cnnzoo.cli import app
from cnnzoo.data.scenes import generate_scenes
from cnnzoo.errors import CnnzooError
from cnnzoo.families.detection.evaluate import evaluate_detection
from cnnzoo.families.detection.predict import predict_detection
from cnnzoo.tasks.voc_ap import interpolated_ap, voc_ap
from cnnzoo.workflows.anchors import fit_anchors
from cnnzoo.workflows.train import TrainConfig, train

TINY_YOLO = {"backbone": "convnet", "widths": [8, 16, 16], "neck_channels": 16}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_scenes(tmp_path_factory.mktemp("s") / "scenes", n_train=24, n_test=6, size=48)


def _cfg(scenes: Path, out: Path, **overrides) -> TrainConfig:
    base = dict(
        model="yolov3",
        data=f"scenes:{scenes}",
        out=str(out),
        epochs=3,
        batch_size=8,
        lr=3e-3,
        val_fraction=0.25,
        model_kwargs=dict(TINY_YOLO),
        progress=False,
        accelerator="cpu",
        snapshots=2,
    )
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def yolo_run(scenes: Path, tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    return train(_cfg(scenes, tmp_path_factory.mktemp("runs") / "yolo"))


def test_training_fills_the_run_directory(yolo_run) -> None:
    run = yolo_run.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "detection" and metrics["model"] == "yolov3"
    assert len(metrics["class_ap"]) == 10
    # COCO mAP is the mean of the per-class APs (None: no ground truth), and a stricter IoU
    # threshold cannot raise it
    scores = metrics["metrics"]
    class_ap = [ap for ap in metrics["class_ap"].values() if ap is not None]
    assert class_ap and scores["test/map"] == pytest.approx(np.mean(class_ap), abs=1e-5)
    assert scores["test/map"] <= scores["test/map_50"] + 1e-6
    assert scores["test/map_75"] <= scores["test/map_50"] + 1e-6
    spec = json.loads((run / "model.json").read_text())
    assert spec["task"] == "detection" and spec["kwargs"]["num_classes"] == 10
    assert spec["kwargs"]["backbone"] == "convnet"
    for png in ("curves.png", "class_ap.png", "test_detections.png", "detections/epoch_003.png"):
        assert (run / "plots" / png).stat().st_size > 1000, png
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == ["epoch", "step", "seconds", "lr", "train/loss", "val/loss",
                                  "val/map", "val/map_50"]  # fmt: skip
    assert len(rows) == 4
    config = (run / "config.yaml").read_text()
    assert "optimizer: adamw" in config and "weight_decay: 0.0005" in config


def test_training_lowers_the_loss(yolo_run) -> None:
    rows = (yolo_run.run_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    column = header.index("train/loss")
    losses = [float(r.split(",")[column]) for r in rows[1:]]
    assert losses[-1] < losses[0]


def test_eval_reproduces_the_test_metrics_of_training(yolo_run) -> None:
    result = evaluate_detection(yolo_run.run_dir, accelerator="cpu")
    assert result.map == pytest.approx(yolo_run.metrics["test/map"], abs=1e-6)
    assert result.map_50 == pytest.approx(yolo_run.metrics["test/map_50"], abs=1e-6)
    assert result.images == 6
    assert sum(row.objects for row in result.per_class) > 0
    assert all(p.is_file() for p in result.pngs)
    assert {p.name for p in result.pngs} >= {"class_ap_test.png", "pr_curves_test.png"}
    eleven = evaluate_detection(yolo_run.run_dir, accelerator="cpu", voc07=True, plot=False)
    assert eleven.voc07 and eleven.map == pytest.approx(result.map)


def test_predict_writes_a_drawing_and_json(yolo_run, scenes: Path, tmp_path: Path) -> None:
    image = scenes / "images" / "test" / "00000.png"
    big = tmp_path / "big.png"
    Image.open(image).resize((96, 72)).save(big)  # another size: boxes scaled back to it
    out = tmp_path / "preds"
    [pred] = predict_detection(yolo_run.run_dir, [big], out, conf=0.0, iou=0.5)
    record = json.loads(pred.json_file.read_text())
    assert record["width"] == 96 and record["height"] == 72
    assert len(record["detections"]) == len(pred.detections) > 0
    for d in record["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 96 and 0 <= y1 <= y2 <= 72
        assert 0 <= d["label"] < 10 and d["score"] > 0
    scores = [d["score"] for d in record["detections"]]
    drawn = np.asarray(Image.open(pred.boxes_png))
    assert drawn.shape == (72 * 4, 96 * 4, 3)  # small images are drawn 4x (captions readable)
    enlarged = np.asarray(Image.open(big).convert("RGB")).repeat(4, 0).repeat(4, 1)
    assert not np.array_equal(drawn, enlarged)
    assert (drawn == enlarged).all(axis=-1).mean() > 0.5  # the image itself, boxes drawn on it
    with pytest.raises(CnnzooError, match="exists"):
        predict_detection(yolo_run.run_dir, [big], out)
    cut = sorted(scores)[len(scores) // 2]
    [strict] = predict_detection(yolo_run.run_dir, [big], out, conf=cut, overwrite=True)
    kept = [d["score"] for d in strict.detections]
    assert min(kept) >= cut - 1e-4 and len(kept) >= len([s for s in scores if s > cut + 1e-4])


def test_cli_eval_predict_anchors_convert(yolo_run, scenes: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(yolo_run.run_dir)])
    assert result.exit_code == 0, result.output
    assert "mAP@0.5" in result.output and "Dress" in result.output
    image = scenes / "images" / "test" / "00001.png"
    result = runner.invoke(
        app, ["predict", str(yolo_run.run_dir), str(image), "--out", str(tmp_path / "p")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p" / "00001_boxes.png").is_file()
    assert (tmp_path / "p" / "00001.json").is_file()
    result = runner.invoke(app, ["anchors", "--data", f"scenes:{scenes}", "-k", "4"])
    assert result.exit_code == 0, result.output
    assert "k-means" in result.output and "anchors=[[" in result.output
    coco = tmp_path / "c" / "annotations" / "instances_train.json"
    args = ["data", "convert", "--from", f"scenes:{scenes}", "--to", f"coco:{coco}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    written = json.loads(coco.read_text())
    source = json.loads((scenes / "annotations" / "instances_train.json").read_text())
    assert len(written["annotations"]) == len(source["annotations"])
    result = runner.invoke(app, args)  # the second time it would replace them
    assert result.exit_code == 2 and "exists" in result.output


def test_kmeans_anchors_fit_the_scenes_better_than_uniform(scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "anchors.json"
    result = fit_anchors(f"scenes:{scenes}", k=6, out=out)
    assert len(result.anchors) == 6
    areas = [w * h for w, h in result.anchors]
    assert areas == sorted(areas)
    assert result.mean_iou > result.uniform_iou
    assert 0.5 < result.mean_iou <= 1.0
    assert json.loads(out.read_text())["model_arg"].startswith("anchors=[[")
    with pytest.raises(CnnzooError, match="exists"):
        fit_anchors(f"scenes:{scenes}", k=6, out=out)
    scaled = fit_anchors(f"scenes:{scenes}", k=6, input_size=[96, 96])  # boxes scaled x2
    assert scaled.anchors[0][0] == pytest.approx(2 * result.anchors[0][0], rel=0.05)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"classes": [0, 1]}, "--classes is a classification option"),
        ({"class_weights": [1.0] * 10}, "--class-weights is a segmentation option"),
        ({"dice_weight": 0.5}, "compound loss"),
        ({"images": "/tmp/x"}, "--images is for coco"),
        ({"data": "masks:/nowhere"}, "is not understood"),
        ({"input_size": [16, 16]}, "at least 32x32"),
    ],
)
def test_bad_options_are_clear_errors(scenes: Path, tmp_path: Path, overrides, message) -> None:
    out = tmp_path / "run"
    with pytest.raises(CnnzooError, match=message):
        train(_cfg(scenes, out, **overrides))
    assert not out.exists()  # no empty run directory left behind


def test_voc_ap_hand_made_example() -> None:
    # One class, 2 objects in one image (the second difficult) and 1 in another; detections:
    # a hit (0.9), a false positive (0.8), a hit on the difficult object (0.7: ignored),
    # a hit in the second image (0.6), a duplicate of the first (0.5: false positive).
    targets = [
        {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]),
         "labels": torch.tensor([0, 0]), "difficult": torch.tensor([0, 1])},
        {"boxes": torch.tensor([[5.0, 5, 15, 15]]), "labels": torch.tensor([0])},
    ]  # fmt: skip
    preds = [
        {"boxes": torch.tensor([[0.0, 0, 10, 10], [40, 40, 50, 50], [20, 20, 30, 30],
                                [1, 1, 10, 10]]),
         "scores": torch.tensor([0.9, 0.8, 0.7, 0.5]), "labels": torch.tensor([0, 0, 0, 0])},
        {"boxes": torch.tensor([[5.0, 5, 15, 15]]), "scores": torch.tensor([0.6]),
         "labels": torch.tensor([0])},
    ]  # fmt: skip
    # ranked: TP (P 1, R .5), FP (P .5, R .5), TP (P 2/3, R 1), FP (P .5, R 1)
    [all_point] = voc_ap(preds, targets, 1, eleven_point=False)
    assert all_point == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    [eleven] = voc_ap(preds, targets, 1, eleven_point=True)
    assert eleven == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    [missing, _] = voc_ap(preds, [dict(t, labels=t["labels"] + 1) for t in targets], 2)
    assert math.isnan(missing)  # class 0 has no ground truth any more
    assert interpolated_ap(torch.tensor([]), torch.tensor([]), True) == 0.0
    with pytest.raises(CnnzooError, match="images"):
        voc_ap(preds[:1], targets, 1)
