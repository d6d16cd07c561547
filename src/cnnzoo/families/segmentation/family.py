"""The segmentation family: a class per pixel (scenes, VOC, Cityscapes, mask folders),
evaluated by mIoU and a per-class IoU table, used by ``predict`` (label and overlay PNGs)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cnnzoo.families.base import (
    EvalOptions,
    Evaluation,
    ExportPlan,
    Family,
    Graph,
    Job,
    PredictOptions,
    TrainConfig,
    TrainResult,
)
from cnnzoo.rundir import RunDir

SEG_OUTPUT = (
    "logits: per-pixel class scores (N, C, H, W); argmax over axis 1 gives each pixel's "
    "class index into 'classes'"
)


class SegmentationFamily(Family):
    """Semantic segmentation models (``task="segmentation"``)."""

    name = "segmentation"
    tasks = ("segmentation",)
    defaults = {
        "segmentation": {"batch_size": 16, "optimizer": "adamw", "lr": 2e-3,
                         "weight_decay": 1e-4, "aux_weight": 0.4},
    }  # fmt: skip
    options = frozenset({"aux_weight", "backbone", "backbone_weights", "input_size", "dice_weight",
                         "class_weights", "snapshots"})  # fmt: skip
    option_hints = {
        "image_size": "use --input-size H W",
        "loss": "segmentation trains with pixel-wise cross-entropy (+ --dice-weight)",
        "label_smoothing": "segmentation trains with pixel-wise cross-entropy (+ --dice-weight)",
        "weights": "use --backbone-weights for the encoder",
    }
    exports = True
    compress_methods = frozenset({"int8"})
    metrics = ("miou", "pixel_accuracy")

    def export_plan(self, model: torch.nn.Module, spec: dict[str, Any], label: str) -> ExportPlan:
        return ExportPlan(model, ("logits",), (SEG_OUTPUT,))

    def calibration_images(self, run: RunDir, spec: dict[str, Any], n: int) -> Tensor:
        from cnnzoo.data.seg_datamodule import SegmentationData
        from cnnzoo.families.export_inputs import run_train_images

        return run_train_images(SegmentationData, run, spec, n)

    def score(
        self, run: RunDir, graph: Graph | None = None, data_dir: str | None = None
    ) -> dict[str, float]:
        from cnnzoo.families.deployed import GraphLogits
        from cnnzoo.families.segmentation.evaluate import evaluate_segmentation

        model = None if graph is None else GraphLogits(graph)
        r = evaluate_segmentation(run, data_dir=data_dir, accelerator="cpu", plot=False,
                                  model=model)  # fmt: skip
        return {"miou": r.miou, "pixel_accuracy": r.pixel_accuracy}

    def check_images(self, run: RunDir, spec: dict[str, Any], n: int) -> tuple[Tensor, str]:
        from cnnzoo.data.seg_datamodule import SegmentationData
        from cnnzoo.families.export_inputs import run_test_images

        found = run_test_images(SegmentationData, run, spec, n)
        return found or super().check_images(run, spec, n)

    def job(self, cfg: TrainConfig) -> Job:
        from cnnzoo.families.segmentation.job import segmentation_job

        return segmentation_job(cfg)

    def write_plots(self, run: RunDir, cfg: TrainConfig, result: TrainResult, job: Job) -> None:
        from cnnzoo.families.segmentation.job import write_segmentation_plots

        write_segmentation_plots(run, cfg, result, job)

    def evaluate(self, run: RunDir, options: EvalOptions) -> Evaluation:
        from cnnzoo.families.segmentation.evaluate import evaluate_segmentation

        o = options
        r = evaluate_segmentation(run, o.data, o.data_dir, o.split, o.batch_size or 16)
        return Evaluation(
            title=(f"mIoU {r.miou:.4f}  pixel accuracy {r.pixel_accuracy:.4f}  "
                   f"loss {r.loss:.4f}  ({o.split})"),
            metrics={"miou": r.miou, "pixel_accuracy": r.pixel_accuracy, "loss": r.loss},
            columns=("class", "IoU", "pixels", "pixel accuracy"),
            rows=[(c.name, "-" if c.iou is None else f"{c.iou:.4f}", f"{c.pixels:,}",
                   "-" if c.accuracy is None else f"{c.accuracy:.4f}") for c in r.per_class],
            files=[("figure", png) for png in r.pngs],
        )  # fmt: skip

    def predict(self, run: RunDir, files: list[str], options: PredictOptions) -> list[str]:
        from cnnzoo.families.segmentation.predict import predict_segmentation

        folder = options.out or str(run.predictions)
        lines = []
        for p in predict_segmentation(run, files, folder, overwrite=options.overwrite):
            areas = "\t".join(f"{c} {a:.3f}" for c, a in list(p.areas.items())[: options.topk])
            lines.append(f"{p.file}\t{p.label_png}\t{p.overlay_png}\t{areas}")
        return lines
