"""What segmentation costs: patch-wise classification vs full-resolution FCN vs encoder-decoder.

The lecture's argument, in three steps:

1. the naive approach — classify the patch around every pixel (``patchwise``) — is slow:
   neighbouring windows share no computation, so the cost is one small CNN per pixel;
2. a fully convolutional net shares that computation, but kept at full resolution
   (``fullres_fcn``, no downsampling) every layer works on H x W maps: expensive, and its
   receptive field stays small;
3. downsampling then upsampling inside the network (``encdec``, and ``fcn8s`` with its skip
   connections) does most of the work on small maps: cheap, and it sees the whole object.

Each model is trained on the synthetic scenes for the same wall-clock budget (seconds, not
steps: a slow model gets fewer steps, which is what "slow" costs in practice), with AdamW and
a learning rate decaying linearly with the elapsed time. Reported: parameters, MACs per image
(one forward pass, :func:`cnnzoo.summary.count_macs`), steps done, training seconds,
inference milliseconds per image and test mean IoU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from cnnzoo.experiments import ExperimentResult, register_experiment
from cnnzoo.experiments.timing import TrainClock, inference_ms
from cnnzoo.experiments.upsampling import scenes_data, test_batch
from cnnzoo.models.base import count_params
from cnnzoo.registry import create_model
from cnnzoo.summary import count_macs
from cnnzoo.tasks.segmentation import SegmentationTask
from cnnzoo.workflows.train import fit_and_test

MODELS = ("patchwise", "fullres_fcn", "encdec", "fcn8s")


@dataclass(frozen=True)
class SegCostSettings:
    """The knobs of the experiment; ``QUICK`` and default presets below."""

    models: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "patchwise": {"patch": 15, "width": 16},
            "fullres_fcn": {"depth": 6, "width": 32},
            "encdec": {"backbone": "convnet", "widths": (16, 32, 64, 128), "min_width": 16},
            "fcn8s": {"backbone": "convnet", "widths": (16, 32, 64, 128)},
        }
    )
    train_seconds: float = 120.0
    seed: int = 0
    batch_size: int = 16
    lr: float = 3e-3
    test_images: int | None = 200
    infer_images: int = 8
    infer_repeats: int = 3
    precision: str = "bf16-mixed"
    channels_last: bool = True


QUICK = SegCostSettings(train_seconds=15.0, test_images=50, infer_images=4)


def _dataset() -> str:
    return "scenes"


def measure(name: str, s: SegCostSettings, dataset: str) -> dict[str, Any]:
    """Build, cost, train (for ``s.train_seconds``) and time one model.

    Returns:
        A results row: model, params, MACs per image and per pixel, steps, train seconds,
        inference ms per image, test mIoU and pixel accuracy.
    """
    L.seed_everything(s.seed, verbose=False)
    data = scenes_data(dataset, s.batch_size, s.seed, s.test_images)
    n = len(data.spec.class_names)
    model = create_model(name, num_classes=n, **s.models[name])
    c, (h, w) = data.spec.in_channels, data.spec.image_size
    macs = count_macs(model, (c, h, w))
    task = SegmentationTask(model, n, lr=s.lr, scheduler="none", channels_last=s.channels_last)
    clock = TrainClock(budget_s=s.train_seconds)
    metrics = fit_and_test(task, data, 10**9, s.precision, [clock])  # type: ignore[arg-type]
    _, x, _ = test_batch(data, s.infer_images)
    ms, _ = inference_ms(task.model, x, s.precision, s.channels_last, s.infer_repeats)
    return {
        "model": name,
        "params": count_params(model),
        "macs_per_image": macs,
        "gmacs_per_image": round(macs / 1e9, 3),
        "macs_per_pixel": round(macs / (h * w)),
        "steps": clock.steps,
        "train_seconds": round(clock.seconds, 2),
        "inference_ms_per_image": round(ms, 3),
        "test_miou": round(metrics["test/miou"], 4),
        "pixel_accuracy": round(metrics["test/pixel_accuracy"], 4),
    }


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Left: MACs per image (log scale); right: test mIoU vs inference ms/image (log x)."""
    import matplotlib.pyplot as plt

    from cnnzoo.viz.figure import save_figure

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    names = [r["model"] for r in rows]
    left.bar(names, [r["macs_per_image"] for r in rows], color="tab:gray")
    left.set_yscale("log")
    left.set_ylabel("MACs per image (forward)")
    left.set_title("Compute")
    left.tick_params(axis="x", labelrotation=20)
    for i, r in enumerate(rows):  # alternate label offsets: close points stay readable
        right.scatter(r["inference_ms_per_image"], r["test_miou"], s=40)
        right.annotate(
            f"{r['model']} ({r['steps']} steps)",
            (r["inference_ms_per_image"], r["test_miou"]),
            textcoords="offset points", xytext=(4, 6 if i % 2 else -12), fontsize=8,
        )  # fmt: skip
    right.set_xscale("log")
    right.set_xlabel("inference ms per image")
    right.set_ylabel("test mIoU")
    right.set_ylim(0, 1)
    right.set_title("Accuracy vs speed, same training seconds")
    right.grid(alpha=0.3)
    return save_figure(fig, path)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else "n/a"


def notes(rows: list[dict[str, Any]], train_seconds: float) -> str:
    """Return the lecture's argument and what the measured ``rows`` say about it."""
    by = {r["model"]: r for r in rows}
    parts = [
        "The lecture: patch-wise classification repeats a small CNN per pixel and is slow; a "
        "fully convolutional net at full resolution shares the computation but every layer "
        "still works on H x W maps; downsampling then upsampling inside the network is the "
        "practical design.",
        f"Every model trained for {train_seconds:g} s.",
    ]
    if "patchwise" in by and "encdec" in by:
        p, e = by["patchwise"], by["encdec"]
        parts.append(
            f"Patch-wise needs {_ratio(p['macs_per_image'], e['macs_per_image'])} the MACs of "
            f"the encoder-decoder and is "
            f"{_ratio(p['inference_ms_per_image'], e['inference_ms_per_image'])} "
            f"slower at inference; in the same time it made {p['steps']} optimisation steps vs "
            f"{e['steps']}."
        )
    if "fullres_fcn" in by and "encdec" in by:
        f, e = by["fullres_fcn"], by["encdec"]
        parts.append(
            f"The full-resolution FCN costs {f['macs_per_pixel']:,} MACs per pixel vs "
            f"{e['macs_per_pixel']:,} for the encoder-decoder "
            f"({_ratio(f['macs_per_pixel'], e['macs_per_pixel'])}), with "
            f"{_ratio(f['params'], e['params'])} the parameters."
        )
    ranked = sorted(rows, key=lambda r: r["test_miou"], reverse=True)
    parts.append(
        "Test mIoU, best first: "
        + ", ".join(f"{r['model']} {r['test_miou']:.3f}" for r in ranked)
        + "."
    )
    fastest = min(rows, key=lambda r: r["inference_ms_per_image"])
    parts.append(
        f"Fastest at inference: {fastest['model']} "
        f"({fastest['inference_ms_per_image']:.2f} ms/image)."
    )
    return " ".join(parts)


@register_experiment(
    "segmentation-cost",
    "patch-wise vs full-resolution FCN vs encoder-decoder vs FCN-8s on the scenes, same "
    "training seconds: params, MACs, train/inference time, mIoU",
)
def segmentation_cost(out: Path, quick: bool) -> ExperimentResult:
    """Run the segmentation-cost experiment (see the module docstring)."""
    s = QUICK if quick else SegCostSettings()
    dataset = _dataset()
    torch.set_flush_denormal(True)
    rows = [measure(name, s, dataset) for name in s.models]
    figure = plot(rows, out / "segmentation_cost.png")
    return ExperimentResult(
        title="The cost of segmentation: patch-wise vs full-resolution vs encoder-decoder",
        columns=[
            "model",
            "params",
            "gmacs_per_image",
            "macs_per_pixel",
            "steps",
            "train_seconds",
            "inference_ms_per_image",
            "test_miou",
        ],
        rows=rows,
        figures=[figure],
        notes=notes(rows, s.train_seconds),
        settings={
            **asdict(s),
            "dataset": dataset,
            "budget": f"same {s.train_seconds:g} training seconds per model "
            "(steps differ), lr decaying linearly with elapsed time",
            "metric": "test mean IoU over classes present",
        },
    )
