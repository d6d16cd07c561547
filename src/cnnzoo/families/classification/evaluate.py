"""``cnnzoo eval``: accuracy, a per-class table and the confusion matrix of a trained model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cnnzoo.data.datamodule import ClassificationData
from cnnzoo.data.transforms import prepare_batch
from cnnzoo.families.assemble import flush_denormals
from cnnzoo.families.measure import match_training_data, run_test
from cnnzoo.rundir import RunDir
from cnnzoo.tasks.classification import ClassificationTask


@dataclass
class ClassReport:
    """One row of the per-class table."""

    name: str
    support: int
    recall: float  # per-class accuracy
    precision: float


@dataclass
class EvalResult:
    """What ``cnnzoo eval`` measured."""

    accuracy: float
    loss: float
    per_class: list[ClassReport]
    confusion: torch.Tensor
    confusion_png: Path | None


def per_class_report(confusion: torch.Tensor, class_names: list[str]) -> list[ClassReport]:
    """Return support, recall and precision per class from a confusion matrix (true x pred)."""
    c = confusion.double()
    support = c.sum(1)
    predicted = c.sum(0)
    diag = c.diag()
    return [
        ClassReport(
            name=name,
            support=int(support[i]),
            recall=float(diag[i] / support[i]) if support[i] else 0.0,
            precision=float(diag[i] / predicted[i]) if predicted[i] else 0.0,
        )
        for i, name in enumerate(class_names)
    ]


def evaluate(
    run_or_weights: str | Path,
    data: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    batch_size: int = 256,
    accelerator: str = "auto",
    plot: bool = True,
) -> EvalResult:
    """Evaluate a run directory (or its ``model.safetensors``) on a dataset split.

    Args:
        data: dataset name or folder; defaults to the dataset the model was trained on.
        split: "test" or "val".

    Returns:
        Accuracy, loss, the per-class table and the confusion matrix (and its PNG in the
        run's ``plots/``).

    Raises:
        CnnzooError: for a path that is not a run, a dataset whose classes do not match the
            model's, or a split the dataset does not have.
    """
    flush_denormals()
    run = RunDir.open(run_or_weights)
    model, spec = run.load_model()
    dm, names = run_data(run, spec, data, data_dir, split, batch_size)
    data = dm.data
    task = ClassificationTask(
        model, num_classes=len(names), tta=spec.get("tta") == "hflip",
        tta_shift=int(spec.get("tta_shift", 0)),
    )  # fmt: skip
    metrics = run_test(task, dm, accelerator)
    confusion = task.last_confusion
    assert confusion is not None
    png = None
    if plot:
        from cnnzoo.viz.confusion import plot_confusion_matrix

        png = plot_confusion_matrix(
            confusion, names, run.plots / f"confusion_{split}.png",
            title=f"{spec['model']} on {data} ({split})",
        )  # fmt: skip
    return EvalResult(
        accuracy=float(metrics["test/accuracy"]),
        loss=float(metrics["test/loss"]),
        per_class=per_class_report(confusion, names),
        confusion=confusion,
        confusion_png=png,
    )


def run_data(
    run: RunDir,
    spec: dict[str, Any],
    data: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    batch_size: int = 256,
    download: bool = True,
) -> tuple[ClassificationData, list[str]]:
    """Open the data to evaluate a classification run on, prepared as in its training.

    Args:
        data: dataset name or folder; defaults to the dataset the model was trained on (then
            with the same held-out validation split: same fraction and seed).
        download: fetch Fashion-MNIST when it is not found (False: a CnnzooError instead).

    Returns:
        The data module (serving ``split`` as its test loader; no augmentation) and the class
        names.

    Raises:
        CnnzooError: for a dataset whose classes do not match the model's, or a split the
            dataset does not have.
    """
    trained_on = spec["data"]
    data = data or trained_on["name"]
    config = run.read_config()
    same = data == trained_on["name"]
    dm = ClassificationData(
        data,
        data_dir=data_dir,
        batch_size=batch_size,
        val_fraction=config.get("val_fraction", 0.1) if same else 0.1,
        seed=config.get("seed", 0) if same else 0,
        augment=False,
        resize_to=spec.get("resize_to"),
        image_size=trained_on["image_size"][0],
        channels=trained_on["in_channels"],
        download=download,
    )
    names = match_training_data(dm, data, split, trained_on)
    return dm, names


def prepared_batches(dm: ClassificationData, split: str) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(inputs, labels)`` of ``split`` as the model sees them (normalised, resized).

    Outside a Lightning trainer: for ONNX Runtime evaluation and int8 calibration.
    """
    for x, y in dm._loader(split, train=False):
        yield prepare_batch(x, dm.spec.mean, dm.spec.std, dm.resize_to), y


def first_images(dm: ClassificationData, split: str, n: int) -> Tensor:
    """Return the first ``n`` images of ``split`` as the model sees them (fewer if the split
    is smaller): int8 calibration, ONNX checks."""
    chunks, count = [], 0
    for x, _ in prepared_batches(dm, split):
        chunks.append(x[: n - count])
        count += len(chunks[-1])
        if count >= n:
            break
    return torch.cat(chunks)


def batch_accuracy(predict: Callable[[Tensor], Any], dm: ClassificationData, split: str) -> float:
    """Return the accuracy of ``predict`` (prepared inputs -> class indices, a tensor or a
    numpy array) over ``split``: for runtimes outside Lightning (ONNX Runtime, eager)."""
    correct = total = 0
    for x, y in prepared_batches(dm, split):
        correct += int((torch.as_tensor(predict(x)) == y).sum())
        total += len(y)
    return correct / total
