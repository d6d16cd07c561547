"""The classification family: classifiers trained on labelled images (Fashion-MNIST, image
folders), evaluated by accuracy and a per-class table, used by ``predict`` (top-k classes); every
``compress`` technique applies to them."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cnnzoo.errors import CnnzooError
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
from cnnzoo.families.deployed import torch_graph
from cnnzoo.rundir import RunDir

FAST_RECIPE = {
    "batch_size": 256, "optimizer": "sgd", "lr": 0.1, "nesterov": True, "weight_decay": 5e-4,
    "scheduler": "onecycle", "label_smoothing": 0.1, "precision": "auto",
    "tta": True, "tta_shift": 1, "crop_padding": 2,
    "model_kwargs": {"head_norm": True, "init": "pytorch", "widths": (16, 64)},
}  # fmt: skip
"""``--recipe fast``: the demo's optimiser and schedule, bf16 autocast where the CPU runs it
fast (``--precision auto``) with the memory format that measures faster
(:mod:`cnnzoo.tasks.memory_format`), random crops with 2 px padding, flip test-time
augmentation with ±1 px shifts, and for the models that take them (``convnet``) BatchNorm in
the hidden layer, PyTorch's default init and a first stage of 16 channels instead of 32 (a
step in ~0.65 of the time: 12-15 epochs instead of 9-10 in five minutes on 2 cores). Each
ingredient's effect: ``benchmarks/fast_recipe.py`` and docs/benchmarks.md."""


class ClassificationFamily(Family):
    """Classifiers (``task="classification"``)."""

    name = "classification"
    tasks = ("classification",)
    defaults = {
        "classification": {"batch_size": 128, "optimizer": "sgd", "lr": 0.05,
                           "weight_decay": 5e-4, "aux_weight": 0.3},
    }  # fmt: skip
    options = frozenset({"loss", "label_smoothing", "aux_weight", "image_size", "classes",
                         "per_class", "weights", "strategy", "unfreeze", "backbone_lr_scale",
                         "unfreeze_every", "tta", "tta_shift", "crop_padding"})  # fmt: skip
    option_hints = {
        "backbone": "a classifier is its own backbone; start from a run or weight set with "
        "--weights",
        "backbone_weights": "start from a run or weight set with --weights",
    }
    exports = True
    compress_methods = frozenset({"prune", "distill", "lowbit", "int8", "qat"})
    metrics = ("accuracy",)
    recipes = {"standard": {}, "fast": FAST_RECIPE}

    def export_plan(self, model: torch.nn.Module, spec: dict[str, Any], label: str) -> ExportPlan:
        from cnnzoo.compress.export import CLASSIFIER_OUTPUT, OUTPUT_NAME
        from cnnzoo.tasks.tta import with_tta

        model = with_tta(model, spec)  # the graph averages the run's test-time views
        return ExportPlan(model, (OUTPUT_NAME,), (CLASSIFIER_OUTPUT,))

    def check_images(self, run: RunDir, spec: dict[str, Any], n: int) -> tuple[Tensor, str]:
        from cnnzoo.families.classification.evaluate import first_images, run_data

        try:
            dm, _ = run_data(run, spec, split="test", batch_size=max(n, 1))
        except CnnzooError:
            return super().check_images(run, spec, n)
        x = first_images(dm, "test", n)
        return x, f"the first {len(x)} test images of {spec['data']['name']}"

    def calibration_images(self, run: RunDir, spec: dict[str, Any], n: int) -> Tensor:
        from cnnzoo.families.classification.evaluate import first_images, run_data

        dm, _ = run_data(run, spec, split="test", batch_size=256)
        return first_images(dm, "train", n)

    def score(
        self, run: RunDir, graph: Graph | None = None, data_dir: str | None = None
    ) -> dict[str, float]:
        from cnnzoo.families.classification.evaluate import batch_accuracy, run_data

        spec = run.read_spec()
        dm, _ = run_data(run, spec, data_dir=data_dir, split="test", batch_size=256)
        if graph is None:  # the model as exported (with its test-time augmentation)
            model, _ = run.load_model()
            graph = torch_graph(self.export_plan(model, spec, run.label).module)
        return {"accuracy": batch_accuracy(lambda x: graph(x)[0].argmax(1), dm, "test")}

    def job(self, cfg: TrainConfig) -> Job:
        from cnnzoo.families.classification.job import classification_job

        return classification_job(cfg)

    def write_plots(self, run: RunDir, cfg: TrainConfig, result: TrainResult, job: Job) -> None:
        if result.confusion is None:
            return
        from cnnzoo.viz.confusion import plot_confusion_matrix

        plot_confusion_matrix(
            result.confusion, result.class_names, run.plots / "confusion.png",
            title=f"{cfg.model}: test confusion matrix",
        )  # fmt: skip

    def evaluate(self, run: RunDir, options: EvalOptions) -> Evaluation:
        from cnnzoo.families.classification.evaluate import evaluate

        o = options
        r = evaluate(run, data=o.data, data_dir=o.data_dir, split=o.split,
                     batch_size=o.batch_size or 256)  # fmt: skip
        return Evaluation(
            title=f"accuracy {r.accuracy:.4f}  loss {r.loss:.4f}  ({o.split})",
            metrics={"accuracy": r.accuracy, "loss": r.loss},
            columns=("class", "support", "accuracy (recall)", "precision"),
            rows=[
                (c.name, str(c.support), f"{c.recall:.4f}", f"{c.precision:.4f}")
                for c in r.per_class
            ],
            files=[("confusion matrix", r.confusion_png)] if r.confusion_png else [],
        )

    def predict(self, run: RunDir, files: list[str], options: PredictOptions) -> list[str]:
        from cnnzoo.families.classification.predict import predict

        lines = []
        for p in predict(run, files, topk=options.topk):
            ranked = "\t".join(f"{c} {q:.3f}" for c, q in zip(p.classes, p.probs, strict=True))
            lines.append(f"{p.file}\t{ranked}")
        return lines
