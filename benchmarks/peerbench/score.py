"""One scorer for both sides, and the comparison table.

Predictions arrive as files from either side (``predictions.json`` of boxes,
``predictions.npz`` of label maps) and are scored here with the code cnnzoo's own evaluation
uses: :func:`cnnzoo.tasks.detection.map_metric` (torchmetrics' MeanAveragePrecision) and
the confusion matrix + :func:`cnnzoo.tasks.segmentation.iou_from_confusion` of its
segmentation task.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnzoo.errors import CnnzooError

METRICS: dict[str, list[tuple[str, str]]] = {
    "detection": [("map", "mAP@[.5:.95]"), ("map_50", "mAP@0.5")],
    "segmentation": [("miou", "mIoU"), ("pixel_accuracy", "pixel acc")],
}
"""Per task: the metrics compared, keyed as in a run's ``metrics.json``, and their titles."""


def read_box_predictions(path: Path, n_images: int) -> list[dict[str, torch.Tensor]]:
    """Read ``predictions.json`` (a list, one ``{"boxes", "scores", "labels"}`` per image).

    Raises:
        CnnzooError: if the file does not hold one entry per test image.
    """
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, list) or len(raw) != n_images:
        found = len(raw) if isinstance(raw, list) else type(raw).__name__
        raise CnnzooError(f"{path} holds {found} predictions: expected {n_images}, one per image")
    return [
        {
            "boxes": torch.tensor(p["boxes"], dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(p["scores"], dtype=torch.float32).reshape(-1),
            "labels": torch.tensor(p["labels"], dtype=torch.int64).reshape(-1),
        }
        for p in raw
    ]


def write_box_predictions(path: Path, predictions: Sequence[dict[str, torch.Tensor]]) -> None:
    """Write detections in the form :func:`read_box_predictions` reads."""
    rows = [{k: p[k].tolist() for k in ("boxes", "scores", "labels")} for p in predictions]
    Path(path).write_text(json.dumps(rows) + "\n")


def score_detection(
    predictions: Sequence[dict[str, torch.Tensor]], truth: Sequence[dict[str, Any]]
) -> dict[str, float]:
    """COCO mAP of the predictions against the ground truth (original pixels, xyxy).

    Returns:
        ``{"map", "map_50", "map_75"}``.
    """
    from cnnzoo.tasks.detection import map_metric, metric_preds, metric_targets

    if len(predictions) != len(truth):
        raise CnnzooError(f"{len(predictions)} predictions for {len(truth)} test images")
    metric = map_metric()
    metric.update(metric_preds(predictions), metric_targets(truth))
    result = metric.compute()
    return {k: float(result[k]) for k in ("map", "map_50", "map_75")}


def read_mask_predictions(path: Path, n_images: int) -> list[np.ndarray]:
    """Read ``predictions.npz`` (one label map per test image, keyed by its index)."""
    with np.load(path) as archive:
        missing = [str(i) for i in range(n_images) if str(i) not in archive.files]
        if missing:
            raise CnnzooError(f"{path} has no label map for test image(s) {', '.join(missing[:5])}")
        return [archive[str(i)] for i in range(n_images)]


def score_segmentation(
    predictions: Sequence[np.ndarray | torch.Tensor],
    truth: Sequence[torch.Tensor],
    num_classes: int,
) -> dict[str, float]:
    """Mean IoU and pixel accuracy over the test set (255 in the truth is ignored).

    Raises:
        CnnzooError: for a prediction whose size differs from its mask's, or with a label
            outside ``0..num_classes-1``.
    """
    from torchmetrics.classification import MulticlassConfusionMatrix

    from cnnzoo.data.segmentation import IGNORE_INDEX
    from cnnzoo.tasks.segmentation import iou_from_confusion

    if len(predictions) != len(truth):
        raise CnnzooError(f"{len(predictions)} predictions for {len(truth)} test images")
    confusion = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX)
    for index, (pred, mask) in enumerate(zip(predictions, truth, strict=True)):
        pred = torch.as_tensor(np.asarray(pred)).long()
        if pred.shape != mask.shape:
            raise CnnzooError(
                f"prediction {index} is {tuple(pred.shape)}: expected {tuple(mask.shape)}, "
                "its mask's size"
            )
        if pred.numel() and not 0 <= int(pred.min()) <= int(pred.max()) < num_classes:
            raise CnnzooError(
                f"prediction {index} has labels {int(pred.min())}..{int(pred.max())}: expected "
                f"0..{num_classes - 1}"
            )
        confusion.update(pred[None], mask.long()[None])
    matrix = confusion.compute()
    iou = iou_from_confusion(matrix)
    accuracy = matrix.diagonal().sum() / matrix.sum().clamp(min=1)
    return {"miou": float(iou.nanmean()), "pixel_accuracy": float(accuracy)}


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """``ours / theirs``, or None when either is missing, NaN, or ``theirs`` is not > 0."""
    if ours is None or theirs is None or math.isnan(ours) or math.isnan(theirs) or theirs <= 0:
        return None
    return ours / theirs


def ratios(task: str, ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    """cnnzoo / peer for each compared metric, the PyTorch speed and the ONNX speed."""
    out = {
        key: ratio(ours["metrics"].get(key), peer["metrics"].get(key)) for key, _ in METRICS[task]
    }
    for key in ("images_per_s", "onnx_images_per_s"):
        out[key] = ratio(ours.get(key), peer.get(key))
    return out


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def comparison_table(task: str, sides: Sequence[dict[str, Any]], peer: dict[str, Any]) -> str:
    """Markdown: every side's metrics, speed and training time; then cnnzoo / peer ratios.

    ``sides`` are cnnzoo's results (one per model) and ``peer`` the peer's, each
    ``{"model", "metrics", "images_per_s", "onnx_images_per_s", "train_seconds", "epochs"}``.
    """
    titles = [title for _, title in METRICS[task]]
    head = ["side", "model", *titles, "img/s (PyTorch)", "img/s (ONNX)", "train s", "epochs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for side, result in [*(("cnnzoo", s) for s in sides), ("peer", peer)]:
        values = [result["metrics"].get(key) for key, _ in METRICS[task]]
        cells = [side, result["model"], *(_cell(v) for v in values),
                 _cell(result.get("images_per_s"), 1), _cell(result.get("onnx_images_per_s"), 1),
                 _cell(result.get("train_seconds"), 1), _cell(result.get("epochs"), 2)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Ratios, cnnzoo / {peer['model']}:", ""]
    head = ["cnnzoo model", *titles, "img/s (PyTorch)", "img/s (ONNX)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for result in sides:
        r = ratios(task, result, peer)
        cells = [result["model"], *(_times(r[key]) for key, _ in METRICS[task]),
                 _times(r["images_per_s"]), _times(r["onnx_images_per_s"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
