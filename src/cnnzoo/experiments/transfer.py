"""Transfer learning, measured: pre-train on some classes, fine-tune on others with few labels.

The lecture: "Feature extractor pre-training, a.k.a. transfer learning — 1. train on
ImageNet, 2. small dataset (C classes), 3. bigger dataset". Here, on Fashion-MNIST:

1. source: a ResNet-20 trained on classes 0-4 (T-shirt, Trouser, Pullover, Dress, Coat);
2. target: classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) with 10, 50, 250 and 1000
   labelled images per class, learned from scratch or from the source features with each
   fine-tuning strategy (``head``, ``partial`` = last stage + head, ``full`` with the backbone
   at 0.1x the learning rate); accuracy on the 5,000 target test images, mean ± std over seeds.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from cnnzoo.data.datamodule import ClassificationData
from cnnzoo.experiments import ExperimentResult, register_experiment
from cnnzoo.experiments import fashion_mnist_name as _dataset
from cnnzoo.registry import create_model
from cnnzoo.rundir import RunDir
from cnnzoo.tasks.classification import ClassificationTask
from cnnzoo.tasks.finetune import FineTunePlan, FineTuning, apply_plan
from cnnzoo.workflows.train import fit_and_test

SOURCE_CLASSES = [0, 1, 2, 3, 4]
TARGET_CLASSES = [5, 6, 7, 8, 9]
METHODS = ("scratch", "head", "partial", "full")


@dataclass(frozen=True)
class TransferSettings:
    """The knobs of the experiment; ``quick`` and default presets below."""

    model: str = "resnet20"
    sizes: tuple[int, ...] = (10, 50, 250, 1000)
    seeds: tuple[int, ...] = (0, 1, 2)
    source_steps: int = 600
    target_steps: int = 150
    batch_size: int = 64
    lr: float = 0.05
    backbone_lr_scale: float = 0.1
    precision: str = "bf16-mixed"


QUICK = TransferSettings(sizes=(10, 250), seeds=(0,), source_steps=300, target_steps=100)


def _task(model: torch.nn.Module, s: TransferSettings, scale: float = 1.0) -> ClassificationTask:
    return ClassificationTask(
        model, num_classes=len(TARGET_CLASSES), lr=s.lr, channels_last=True,
        backbone_lr_scale=scale,
    )  # fmt: skip


def pretrain_source(out: Path, s: TransferSettings, dataset: str) -> tuple[Path, float]:
    """Train the source model on classes 0-4; return its weights file and test accuracy."""
    L.seed_everything(0, verbose=False)
    data = ClassificationData(dataset, classes=SOURCE_CLASSES, val_fraction=0,
                              batch_size=s.batch_size * 2)  # fmt: skip
    model = create_model(s.model, num_classes=len(SOURCE_CLASSES), in_channels=1)
    metrics = fit_and_test(_task(model, s), data, s.source_steps, s.precision)
    run = RunDir(out / "source")
    run.save_model(
        model.to(memory_format=torch.contiguous_format),
        {"model": s.model, "task": "classification",
         "kwargs": {"num_classes": len(SOURCE_CLASSES), "in_channels": 1},
         "resize_to": None, "data": data.spec.to_dict()},
    )  # fmt: skip
    return run.weights, metrics["test/accuracy"]


def fine_tune_once(
    method: str, per_class: int, seed: int, source: Path, s: TransferSettings, dataset: str
) -> float:
    """Train one target model (``method`` on ``per_class`` labels) and return test accuracy."""
    L.seed_everything(seed, verbose=False)
    data = ClassificationData(dataset, classes=TARGET_CLASSES, per_class=per_class, seed=seed,
                              val_fraction=0, batch_size=s.batch_size)  # fmt: skip
    n = len(TARGET_CLASSES)
    if method == "scratch":
        model = create_model(s.model, num_classes=n, in_channels=1)
        return fit_and_test(_task(model, s), data, s.target_steps, s.precision)["test/accuracy"]
    model = create_model(s.model, num_classes=n, in_channels=1, weights=str(source))
    model.reset_classifier(n)  # the source head scores the source classes: start afresh
    plan = FineTunePlan(
        method, unfreeze=1, backbone_lr_scale=s.backbone_lr_scale if method == "full" else 1.0
    )
    apply_plan(model, plan)
    task = _task(model, s, plan.backbone_lr_scale)
    callbacks = [FineTuning(plan, model)]
    return fit_and_test(task, data, s.target_steps, s.precision, callbacks)["test/accuracy"]


def plot(rows: list[dict[str, Any]], sizes: tuple[int, ...], path: Path) -> Path:
    """Accuracy vs labelled images per class, one line per method, error bars = std."""
    from cnnzoo.viz.labels import plot_accuracy_vs_labels

    return plot_accuracy_vs_labels(
        rows, METHODS, sizes, path, xlabel="labelled images per target class",
        ylabel="target test accuracy", title="Fashion-MNIST: classes 0-4 -> classes 5-9",
    )  # fmt: skip


@register_experiment(
    "transfer",
    "pre-train on Fashion-MNIST classes 0-4, fine-tune on 5-9 with 10-1000 labels per class: "
    "scratch vs head vs partial vs full",
)
def transfer(out: Path, quick: bool) -> ExperimentResult:
    """Run the transfer-learning experiment (see the module docstring)."""
    s = QUICK if quick else TransferSettings()
    dataset = _dataset()
    source, source_acc = pretrain_source(out, s, dataset)
    rows = []
    for per_class in s.sizes:
        for method in METHODS:
            accs = [fine_tune_once(method, per_class, seed, source, s, dataset) for seed in s.seeds]
            mean = statistics.fmean(accs)
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            rows.append({
                "per_class": per_class, "method": method, "mean": round(mean, 4),
                "std": round(std, 4), "accuracy": f"{mean:.3f} ± {std:.3f}",
                "seeds": len(accs), "runs": [round(a, 4) for a in accs],
            })  # fmt: skip
    figure = plot(rows, s.sizes, out / "transfer.png")
    scratch = {r["per_class"]: r["mean"] for r in rows if r["method"] == "scratch"}
    best = {}
    for r in rows:
        if r["method"] != "scratch" and r["mean"] > best.get(r["per_class"], (0, ""))[0]:
            best[r["per_class"]] = (r["mean"], r["method"])
    gaps = ", ".join(
        f"{n}/class: best transfer ({best[n][1]}) {best[n][0]:.3f} vs scratch {scratch[n]:.3f}"
        for n in s.sizes
    )
    return ExperimentResult(
        title="Transfer learning on Fashion-MNIST (classes 0-4 -> 5-9)",
        columns=["per_class", "method", "accuracy", "seeds"],
        rows=rows,
        figures=[figure],
        notes=f"Source model test accuracy on classes 0-4: {source_acc:.3f}. {gaps}.",
        settings={**asdict(s), "dataset": dataset, "source": "classes 0-4",
                  "target": "classes 5-9", "metric": "target test accuracy (5 classes)"},
    )  # fmt: skip
