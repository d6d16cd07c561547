"""``cnnzoo eval`` of a segmentation run: mean IoU, pixel accuracy and a per-class IoU table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnzoo.data.seg_datamodule import SegmentationData
from cnnzoo.errors import CnnzooError
from cnnzoo.families.assemble import flush_denormals
from cnnzoo.families.measure import match_training_data, run_test
from cnnzoo.rundir import RunDir
from cnnzoo.tasks.segmentation import SegmentationTask


@dataclass
class ClassIoU:
    """One row of the per-class table."""

    name: str
    iou: float | None  # None: the class is neither in the labels nor predicted
    pixels: int  # labelled pixels of this class
    accuracy: float | None  # share of those pixels predicted as the class (recall)


@dataclass
class SegEvalResult:
    """What ``cnnzoo eval`` measured on a segmentation run."""

    miou: float
    pixel_accuracy: float
    loss: float
    per_class: list[ClassIoU]
    confusion: torch.Tensor
    pngs: list[Path] = field(default_factory=list)


def class_table(confusion: torch.Tensor, iou: torch.Tensor, names: list[str]) -> list[ClassIoU]:
    """Return the per-class rows from a (true, predicted) confusion matrix and its IoU."""
    pixels = confusion.sum(1)
    rows = []
    for i, name in enumerate(names):
        support = int(pixels[i])
        rows.append(
            ClassIoU(
                name=name,
                iou=None if torch.isnan(iou[i]) else float(iou[i]),
                pixels=support,
                accuracy=float(confusion[i, i]) / support if support else None,
            )
        )
    return rows


def evaluate_segmentation(
    run_or_weights: str | Path,
    data: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    batch_size: int = 16,
    accelerator: str = "auto",
    plot: bool = True,
    model: torch.nn.Module | None = None,
) -> SegEvalResult:
    """Evaluate a segmentation run on a dataset split.

    Images are resized to the run's input size when it was trained with one, exactly as in
    training; the held-out validation split is the same (same fraction and seed).

    Args:
        data: a segmentation data spec; defaults to the training data.
        split: "test" or "val".
        model: evaluate this model instead of the run's (its ONNX export, wrapped by
            :class:`~cnnzoo.families.deployed.GraphLogits`).

    Returns:
        mIoU, pixel accuracy, loss, the per-class table and confusion matrix; with ``plot``,
        ``plots/class_iou_{split}.png`` and ``plots/overlays_{split}.png`` in the run.

    Raises:
        CnnzooError: for a run that is not a segmentation run, a dataset with another number
            of classes, or a split the dataset does not have.
    """
    flush_denormals()
    run = RunDir.open(run_or_weights)
    own, spec = run.load_model()
    model = own if model is None else model
    if spec.get("task") != "segmentation":
        raise CnnzooError(f"{run.label} is not a segmentation run")
    trained_on = spec["data"]
    config = run.read_config()
    data = data or trained_on["name"]
    same = data == trained_on["name"]
    dm = SegmentationData(
        data,
        data_dir=data_dir if data_dir is not None else config.get("data_dir"),
        batch_size=batch_size,
        input_size=spec.get("resize_to"),
        augment=False,
        val_fraction=config.get("val_fraction", 0.1) if same else 0.1,
        seed=config.get("seed", 0) if same else 0,
        channels=trained_on["in_channels"],
    )
    names = match_training_data(dm, data, split, trained_on)
    task = SegmentationTask(model, num_classes=len(names))
    metrics: dict[str, Any] = run_test(task, dm, accelerator)
    assert task.last_confusion is not None and task.last_iou is not None
    pngs: list[Path] = []
    if plot:
        from cnnzoo.families.segmentation.job import save_overlays
        from cnnzoo.viz.bars import plot_class_bars

        title = f"{spec['model']} on {data} ({split})"
        pngs.append(
            plot_class_bars(
                torch.nan_to_num(task.last_iou), names, run.plots / f"class_iou_{split}.png", title
            )
        )
        pngs.append(
            save_overlays(
                model, dm, dm.splits[split], 4, run.plots / f"overlays_{split}.png", names, title
            )
        )
    return SegEvalResult(
        miou=float(metrics["test/miou"]),
        pixel_accuracy=float(metrics["test/pixel_accuracy"]),
        loss=float(metrics["test/loss"]),
        per_class=class_table(task.last_confusion, task.last_iou, names),
        confusion=task.last_confusion,
        pngs=pngs,
    )
