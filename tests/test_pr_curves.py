"""Precision-recall curves of a detector (tasks/voc_ap.pr_curves) and their figure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from cnnzoo.tasks.voc_ap import pr_curves, voc_ap
from cnnzoo.viz.pr_curves import _area, plot_pr_curves, precision_envelope


def _image(boxes: list[list[float]], labels: list[int], scores: list[float] | None = None):
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
           "labels": torch.tensor(labels, dtype=torch.int64)}  # fmt: skip
    if scores is not None:
        out["scores"] = torch.tensor(scores)
    return out


def _scene():
    """Two images, class 0 has three objects, class 1 one, class 2 none. Detections of class
    0 in score order: hit (0.9), miss (0.8), hit (0.7), a duplicate of a taken object (0.6)."""
    targets = [
        _image([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0]),
        _image([[0, 0, 10, 10], [40, 40, 50, 50]], [0, 1]),
    ]
    preds = [
        _image([[0, 0, 10, 10], [60, 60, 70, 70], [0, 0, 10, 9]], [0, 0, 0], [0.9, 0.8, 0.6]),
        _image([[1, 1, 10, 10], [40, 40, 50, 50]], [0, 2], [0.7, 0.5]),
    ]
    return preds, targets


def test_curves_follow_the_detections_in_score_order() -> None:
    preds, targets = _scene()
    curves = pr_curves(preds, targets, 3, 0.5)
    recall, precision = curves[0]
    assert recall.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert precision.tolist() == pytest.approx([1.0, 0.5, 2 / 3, 0.5])
    recall1, precision1 = curves[1]
    assert recall1.numel() == 0 and precision1.numel() == 0  # an object, no detection
    assert curves[2] is None  # no ground truth


def test_a_stricter_threshold_turns_a_loose_box_into_a_miss() -> None:
    preds, targets = _scene()
    loose = pr_curves(preds, targets, 3, 0.5)[0][0]
    strict = pr_curves(preds, targets, 3, 0.85)[0][0]  # IoU of [1,1,10,10] vs [0,0,10,10]: 0.81
    assert float(strict[-1]) < float(loose[-1])


def test_the_envelope_area_is_the_all_point_ap() -> None:
    preds, targets = _scene()
    recall, precision = pr_curves(preds, targets, 3, 0.5)[0]
    envelope = precision_envelope(precision)
    assert envelope.tolist() == pytest.approx([1.0, 2 / 3, 2 / 3, 0.5])
    assert _area(recall, envelope) == pytest.approx(voc_ap(preds, targets, 3, 0.5, False)[0])
    assert _area(recall, envelope) == pytest.approx(1 / 3 + 1 / 3 * 2 / 3)


def test_the_figure_has_a_panel_per_class(tmp_path: Path) -> None:
    preds, targets = _scene()
    curves = {iou: pr_curves(preds, targets, 3, iou) for iou in (0.5, 0.75)}
    out = plot_pr_curves(curves, ["box", "disc", "ring"], tmp_path / "pr.png", "test")
    with Image.open(out) as image:
        width, height = image.size
    assert width > 2 * height  # three panels side by side
    with pytest.raises(ValueError, match="3 classes"):
        plot_pr_curves({0.5: curves[0.5][:2]}, ["box", "disc", "ring"], tmp_path / "x.png", "t")
    with pytest.raises(ValueError, match="one or two"):
        plot_pr_curves({}, ["box"], tmp_path / "y.png", "t")
