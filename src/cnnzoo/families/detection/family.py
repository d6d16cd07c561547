"""The detection family: boxes and classes (scenes, COCO, VOC, YOLO), evaluated by COCO mAP
and per-class AP, used by ``predict`` (boxes drawn and a JSON per image)."""

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
from cnnzoo.families.detection.recipe import DETECTION_RECIPES
from cnnzoo.rundir import RunDir

_COMPOUND = (
    "detectors train with their own compound loss: set its weights with "
    "--model-arg cls_weight=... / box_weight=..."
)


class DetectionFamily(Family):
    """Object detectors (``task="detection"``)."""

    name = "detection"
    tasks = ("detection",)
    defaults = {
        "detection": {"batch_size": 16, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 5e-4,
                      "aux_weight": 0.0},
    }  # fmt: skip
    options = frozenset({"backbone", "backbone_weights", "input_size", "images", "snapshots",
                         "det_augment", "autoanchor"})  # fmt: skip
    option_hints = {
        "image_size": "use --input-size H W",
        "weights": "use --backbone-weights for the backbone",
        **dict.fromkeys(("loss", "label_smoothing", "dice_weight"), _COMPOUND),
    }
    exports = True
    compress_methods = frozenset({"int8"})
    metrics = ("map", "map_50", "map_75")
    recipes = DETECTION_RECIPES

    def export_plan(self, model: torch.nn.Module, spec: dict[str, Any], label: str) -> ExportPlan:
        from cnnzoo.families.base import input_shape
        from cnnzoo.families.detection.export import (
            BOXES,
            SCORES,
            candidate_graph,
            finish,
            postprocessing,
        )

        _, h, w = input_shape(spec)
        graph = candidate_graph(model, spec.get("model", label), (h, w))
        o = PredictOptions()
        return ExportPlan(graph, ("boxes", "scores"), (BOXES, SCORES),
                          postprocessing(o.conf, o.iou), finish((h, w), o.conf, o.iou),
                          float_tail=True)  # fmt: skip

    def calibration_images(self, run: RunDir, spec: dict[str, Any], n: int) -> Tensor:
        from cnnzoo.data.det_datamodule import DetectionData
        from cnnzoo.families.export_inputs import run_train_images

        images = run.read_config().get("images")
        return run_train_images(DetectionData, run, spec, n, images_dir=images)

    def score(
        self, run: RunDir, graph: Graph | None = None, data_dir: str | None = None
    ) -> dict[str, float]:
        from cnnzoo.families.detection.evaluate import evaluate_detection
        from cnnzoo.families.detection.export import GraphDetector

        model = None if graph is None else GraphDetector(graph)
        r = evaluate_detection(run, data_dir=data_dir, accelerator="cpu", plot=False,
                               model=model)  # fmt: skip
        return {"map": r.map, "map_50": r.map_50, "map_75": r.map_75}

    def check_images(self, run: RunDir, spec: dict[str, Any], n: int) -> tuple[Tensor, str]:
        from cnnzoo.data.det_datamodule import DetectionData
        from cnnzoo.families.export_inputs import run_test_images

        images = run.read_config().get("images")
        found = run_test_images(DetectionData, run, spec, n, images_dir=images)
        return found or super().check_images(run, spec, n)

    def job(self, cfg: TrainConfig) -> Job:
        from cnnzoo.families.detection.job import detection_job

        return detection_job(cfg)

    def write_plots(self, run: RunDir, cfg: TrainConfig, result: TrainResult, job: Job) -> None:
        from cnnzoo.families.detection.job import write_detection_plots

        write_detection_plots(run, cfg, result, job)

    def evaluate(self, run: RunDir, options: EvalOptions) -> Evaluation:
        from cnnzoo.families.detection.evaluate import evaluate_detection

        o = options
        r = evaluate_detection(run, o.data, o.data_dir, o.split, o.batch_size or 16,
                               voc07=o.voc07, images_dir=o.images)  # fmt: skip
        voc = "VOC07 11-point" if r.voc07 else "VOC all-point"
        return Evaluation(
            title=(f"mAP@[.5:.95] {r.map:.4f}  mAP@0.5 {r.map_50:.4f}  mAP@0.75 {r.map_75:.4f}  "
                   f"{voc} mAP@0.5 {r.voc_map_50:.4f}  ({o.split}, {r.images} images)"),
            metrics={"map": r.map, "map_50": r.map_50, "map_75": r.map_75,
                     "voc_map_50": r.voc_map_50},
            columns=("class", "objects", "AP@[.5:.95]", f"AP@0.5 ({voc})"),
            rows=[(c.name, str(c.objects), "-" if c.ap is None else f"{c.ap:.4f}",
                   "-" if c.ap_50 is None else f"{c.ap_50:.4f}") for c in r.per_class],
            files=[("figure", png) for png in r.pngs],
        )  # fmt: skip

    def predict(self, run: RunDir, files: list[str], options: PredictOptions) -> list[str]:
        from cnnzoo.families.detection.predict import predict_detection

        o = options
        folder = o.out or str(run.predictions)
        lines = []
        for p in predict_detection(run, files, folder, conf=o.conf, iou=o.iou,
                                   overwrite=o.overwrite):  # fmt: skip
            found = "\t".join(f"{d['class']} {d['score']:.3f}" for d in p.detections[: o.topk])
            lines.append(f"{p.file}\t{p.boxes_png}\t{p.json_file}\t{len(p.detections)}\t{found}")
        return lines
