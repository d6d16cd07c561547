"""The detector-cost experiment, with tiny settings: one pass is far cheaper than windows."""

from __future__ import annotations

import json

import pytest
from torchmetrics.detection import MeanAveragePrecision

from cnnzoo.experiments import list_experiments, run_experiment

TINY = {"backbone": "convnet", "widths": (8, 16, 16)}


@pytest.fixture(scope="module")
def tiny_scenes(tmp_path_factory):
    from cnnzoo.data.scenes import generate_scenes

    root = tmp_path_factory.mktemp("scenes") / "tiny"
    generate_scenes(root, n_train=16, n_test=4, size=48)
    return "scenes:" + str(root)


def test_detector_cost_experiment_end_to_end(tmp_path, monkeypatch, tiny_scenes):
    import cnnzoo.experiments.detector_cost as cost

    tiny = cost.DetCostSettings(
        models={
            "sliding_window": {**TINY, "crop_size": 16},
            "fast_rcnn": {**TINY, "head_channels": 32, "anchor_sizes": (12, 24)},
            "yolov3": {**TINY, "neck_channels": 16},
        },
        train_seconds=1.0, batch_size=8, test_images=4, infer_images=2, infer_repeats=1,
        precision="32-true", channels_last=False,
    )  # fmt: skip
    monkeypatch.setattr(cost, "QUICK", tiny)
    monkeypatch.setattr(cost, "_dataset", lambda: tiny_scenes)
    tested = []  # per model: the (detections, ground truth) of each test image
    fit_and_test = cost.fit_and_test

    def fit_and_keep_test_detections(task, *args, **kwargs):
        task.kept = []
        metrics = fit_and_test(task, *args, **kwargs)
        tested.append(task.kept)
        return metrics

    monkeypatch.setattr(cost, "fit_and_test", fit_and_keep_test_detections)
    assert "detector-cost" in [e.name for e in list_experiments()]
    result = run_experiment("detector-cost", out=tmp_path / "dc", quick=True)
    by = {r["model"]: r for r in result.rows}
    assert list(by) == ["sliding_window", "fast_rcnn", "yolov3"]
    for row, kept in zip(result.rows, tested, strict=True):
        # the row's mAPs are COCO's, recomputed from the model's detections on the 4 test images
        assert len(kept) == 4
        coco = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
        coco.update([p for p, _ in kept], [t for _, t in kept])
        expected = coco.compute()
        assert row["test_map_50"] == pytest.approx(float(expected["map_50"]), abs=1e-4)
        assert row["test_map"] == pytest.approx(float(expected["map"]), abs=1e-4)
        assert row["test_map"] <= row["test_map_50"]
        assert row["steps"] >= 1 and row["inference_ms_per_image"] > 0 and row["latency_ms"] > 0
    # every window of a 48x48 image is one CNN evaluation
    windows = cost.create_model("sliding_window", num_classes=10, **TINY).num_windows((48, 48))
    assert by["sliding_window"]["evaluations_per_image"] == windows > 100
    assert by["yolov3"]["evaluations_per_image"] == 1
    assert 1 < by["fast_rcnn"]["evaluations_per_image"] <= 101
    assert by["sliding_window"]["macs_per_image"] > 10 * by["yolov3"]["macs_per_image"]
    payload = json.loads((tmp_path / "dc" / "results.json").read_text())
    assert payload["rows"] == result.rows
    assert (tmp_path / "dc" / "detector_cost.png").stat().st_size > 5000
    assert "windows per image" in result.notes and "single image" in result.notes
