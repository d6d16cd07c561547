"""``cnnzoo eval`` of a detection run: COCO mAP@[.5:.95], mAP@0.5, mAP@0.75, a per-class AP
table and, as an option, the Pascal VOC2007 11-point mAP."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from cnnzoo.data.det_datamodule import DetectionData
from cnnzoo.errors import CnnzooError
from cnnzoo.families.assemble import flush_denormals
from cnnzoo.families.measure import match_training_data, run_test
from cnnzoo.rundir import RunDir
from cnnzoo.tasks.detection import DetectionTask
from cnnzoo.tasks.voc_ap import pr_curves, voc_ap


@dataclass
class ClassAP:
    """One row of the per-class table (None: no ground truth of the class)."""

    name: str
    objects: int  # ground-truth boxes of the class in the split
    ap: float | None  # COCO AP, IoU 0.50:0.95
    ap_50: float | None  # VOC AP at IoU 0.5 (all-point, or 11-point with voc07)


@dataclass
class DetEvalResult:
    """What ``cnnzoo eval`` measured on a detection run."""

    map: float
    map_50: float
    map_75: float
    voc_map_50: float  # mean of the per-class VOC AP@0.5 (11-point with voc07)
    voc07: bool
    per_class: list[ClassAP]
    images: int
    pngs: list[Path] = field(default_factory=list)


def _mean(values: list[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return sum(present) / len(present) if present else math.nan


def evaluate_detection(
    run_or_weights: str | Path,
    data: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    batch_size: int = 16,
    accelerator: str = "auto",
    plot: bool = True,
    voc07: bool = False,
    images_dir: str | None = None,
    model: nn.Module | None = None,
) -> DetEvalResult:
    """Evaluate a detection run on a dataset split.

    Images are resized to the run's input size when it was trained with one, exactly as in
    training; the held-out validation split is the same (same fraction and seed). Detections
    are post-processed with the training's defaults (score > 0.01, NMS 0.5, 100 per image).

    Args:
        data: a detection data spec; defaults to the training data.
        split: "test" or "val".
        voc07: per-class AP@0.5 with VOC2007's 11-point interpolation instead of all points.
        images_dir: ``coco:`` data: the images folder (default: the training's ``--images``
            when the data is the training data).
        model: evaluate this model of the detection interface instead of the run's (its
            ONNX export, wrapped by :class:`~cnnzoo.families.detection.export.GraphDetector`).

    Returns:
        COCO mAP, mAP@0.5, mAP@0.75 (torchmetrics / pycocotools), the VOC mAP@0.5 and the
        per-class table; with ``plot``, ``plots/class_ap_{split}.png``,
        ``plots/pr_curves_{split}.png`` (each class's precision-recall curve at IoU 0.5
        and 0.75) and ``plots/detections_{split}.png`` in the run.

    Raises:
        CnnzooError: for a run that is not a detection run, a dataset with another number of
            classes, or a split the dataset does not have.
    """
    flush_denormals()
    run = RunDir.open(run_or_weights)
    own, spec = run.load_model()
    model = own if model is None else model
    if spec.get("task") != "detection":
        raise CnnzooError(f"{run.label} is not a detection run")
    trained_on = spec["data"]
    config = run.read_config()
    data = data or trained_on["name"]
    same = data == trained_on["name"]
    dm = DetectionData(
        data,
        data_dir=data_dir if data_dir is not None else config.get("data_dir"),
        batch_size=batch_size,
        input_size=spec.get("resize_to"),
        augment=False,
        val_fraction=config.get("val_fraction", 0.1) if same else 0.1,
        seed=config.get("seed", 0) if same else 0,
        channels=trained_on["in_channels"],
        images_dir=images_dir if images_dir is not None or not same else config.get("images"),
    )
    names = match_training_data(dm, data, split, trained_on)
    task = DetectionTask(model, num_classes=len(names))
    task.kept = []
    metrics = run_test(task, dm, accelerator)
    preds = [p for p, _ in task.kept]
    targets = [t for _, t in task.kept]
    voc = voc_ap(preds, targets, len(names), 0.5, eleven_point=voc07)
    coco = task.last_class_ap or [math.nan] * len(names)
    rows = []
    for c, name in enumerate(names):
        objects = sum(int((t["labels"] == c).sum()) for t in targets)
        rows.append(
            ClassAP(
                name,
                objects,
                None if math.isnan(coco[c]) else coco[c],
                None if math.isnan(voc[c]) else voc[c],
            )
        )
    pngs: list[Path] = []
    if plot:
        from cnnzoo.families.detection.job import save_detections
        from cnnzoo.viz.bars import plot_class_bars

        title = f"{spec['model']} on {data} ({split})"
        pngs.append(plot_class_bars(coco, names, run.plots / f"class_ap_{split}.png",
                                    f"{title}: AP@[.5:.95]", xlabel="AP"))  # fmt: skip
        from cnnzoo.viz.pr_curves import plot_pr_curves

        curves = {iou: pr_curves(preds, targets, len(names), iou) for iou in (0.5, 0.75)}
        pngs.append(plot_pr_curves(curves, names, run.plots / f"pr_curves_{split}.png",
                                   f"{title}: precision-recall"))  # fmt: skip
        view = dm.splits[split]
        pngs.append(save_detections(task, dm, view, 4, run.plots / f"detections_{split}.png",
                                    names, title))  # fmt: skip
    return DetEvalResult(
        map=float(metrics["test/map"]),
        map_50=float(metrics["test/map_50"]),
        map_75=float(metrics["test/map_75"]),
        voc_map_50=_mean(voc),
        voc07=voc07,
        per_class=rows,
        images=len(targets),
        pngs=pngs,
    )
