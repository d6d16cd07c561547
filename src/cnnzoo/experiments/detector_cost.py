"""What detection costs: the naive sliding window vs Fast R-CNN vs a one-pass detector.

The lecture's argument, in three steps:

1. the naive approach — a classification CNN applied to crops at many locations, scales and
   aspect ratios (``sliding_window``) — runs the CNN hundreds of times per image;
2. "only classify some proposals": Fast R-CNN (``fast_rcnn``) runs the backbone once, then
   pools each of a few hundred region proposals from the shared feature map into a small head;
3. one-pass detectors (``yolov3``) predict every box of a grid of cells in a single forward
   pass.

All three use the same small VGG-style backbone (``convnet``) and the same input size (the
96x96 scenes), and each is trained for the same wall-clock budget (seconds, not steps: a slow
model gets fewer steps, which is what "slow" costs in practice) with AdamW and a learning rate
decaying linearly with the elapsed time. Reported: parameters, network evaluations per image
(windows classified; backbone passes + RoI-head evaluations; one pass), MACs per image
(measured with ``torch.utils.flop_counter`` on a real test image, so Fast R-CNN's proposals
are those the trained model makes), inference milliseconds per image (forward pass and
decoding with NMS) in batches of ``infer_images`` and for one image at a time (latency), steps
done and the test mAP@0.5 / mAP@[.5:.95].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from cnnzoo.data.det_datamodule import DetectionData
from cnnzoo.data.detection import detection_collate
from cnnzoo.data.transforms import normalize_batch
from cnnzoo.errors import CnnzooError
from cnnzoo.experiments import ExperimentResult, register_experiment
from cnnzoo.experiments.timing import TrainClock, inference_ms
from cnnzoo.models.base import count_params
from cnnzoo.registry import create_model
from cnnzoo.tasks.detection import DetectionTask
from cnnzoo.workflows.train import fit_and_test

BACKBONE = {"backbone": "convnet", "widths": (16, 32, 64, 128)}


@dataclass(frozen=True)
class DetCostSettings:
    """The knobs of the experiment; ``QUICK`` and default presets below."""

    models: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "sliding_window": {**BACKBONE, "crop_size": 32},
            "fast_rcnn": dict(BACKBONE),
            "yolov3": {**BACKBONE, "neck_channels": 64},
        }
    )
    train_seconds: float = 180.0
    seed: int = 0
    batch_size: int = 16
    lr: float = 2e-3
    test_images: int | None = 200
    infer_images: int = 8
    infer_repeats: int = 5
    precision: str = "bf16-mixed"
    channels_last: bool = True


QUICK = DetCostSettings(train_seconds=15.0, test_images=40, infer_images=4, infer_repeats=2)


def _dataset() -> str:
    return "scenes"


def scenes_detection(
    dataset: str, batch_size: int, seed: int, test_images: int | None
) -> DetectionData:
    """Return the detection data module: all training images, no validation split, the
    first ``test_images`` test images (None: all).

    Raises:
        CnnzooError: if the dataset cannot be read or has no test split.
    """
    data = DetectionData(dataset, batch_size=batch_size, val_fraction=0, seed=seed)
    if not data.has_split("test"):
        raise CnnzooError(f"dataset {dataset!r} has no test split")
    if test_images is not None:
        view = data.splits["test"]
        view.indices = view.indices[:test_images]
    return data


def network_evaluations(model: nn.Module, outputs: Any, size: tuple[int, int]) -> float:
    """Return how many times a network runs per image: the windows a sliding window
    classifies, one backbone pass plus one RoI-head evaluation per proposal for Fast R-CNN
    (mean over the images of ``outputs``), one pass otherwise."""
    if hasattr(model, "num_windows"):
        return float(model.num_windows(size))  # type: ignore[operator]
    proposals = outputs.get("proposals") if isinstance(outputs, dict) else None
    if proposals is not None:
        return 1.0 + sum(len(p) for p in proposals) / max(1, len(proposals))
    return 1.0


def macs_per_image(model: nn.Module, x: Tensor) -> int:
    """Return the multiply-accumulates of one eval-mode forward pass on the image ``x[:1]``."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x[:1])
    return counter.get_total_flops() // 2


def measure(name: str, s: DetCostSettings, dataset: str) -> dict[str, Any]:
    """Build, train (for ``s.train_seconds``), cost and time one detector.

    Returns:
        A results row: model, params, network evaluations and MACs per image, steps, train
        seconds, inference ms per image (batched) and for a single image, test mAP@0.5 and mAP.
    """
    L.seed_everything(s.seed, verbose=False)
    data = scenes_detection(dataset, s.batch_size, s.seed, s.test_images)
    n = len(data.spec.class_names)
    model = create_model(name, num_classes=n, **s.models[name])
    task = DetectionTask(model, n, lr=s.lr, scheduler="none", channels_last=s.channels_last)
    clock = TrainClock(budget_s=s.train_seconds)
    metrics = fit_and_test(task, data, 10**9, s.precision, [clock])  # type: ignore[arg-type]
    view = data.splits["test"]
    images, _ = detection_collate([view[i] for i in range(min(s.infer_images, len(view)))])
    x = normalize_batch(images, data.spec.mean, data.spec.std)
    size = (int(x.shape[-2]), int(x.shape[-1]))
    model = task.model.eval()
    with torch.no_grad():
        evaluations = network_evaluations(model, model(x), size)
    macs = macs_per_image(model, x)

    def detect(m: nn.Module, batch: Tensor) -> Any:
        return m.decode(m(batch), size, 0.05, 0.5, 100)  # type: ignore[operator]

    ms, _ = inference_ms(model, x, s.precision, s.channels_last, s.infer_repeats, run=detect)
    latency, _ = inference_ms(model, x[:1], s.precision, s.channels_last, s.infer_repeats, detect)
    return {
        "model": name,
        "params": count_params(model),
        "evaluations_per_image": round(evaluations, 1),
        "macs_per_image": macs,
        "gmacs_per_image": round(macs / 1e9, 3),
        "steps": clock.steps,
        "train_seconds": round(clock.seconds, 2),
        "inference_ms_per_image": round(ms, 3),
        "latency_ms": round(latency, 3),
        "test_map_50": round(metrics["test/map_50"], 4),
        "test_map": round(metrics["test/map"], 4),
    }


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Left: network evaluations and MACs per image (log scale); right: test mAP@0.5 vs
    inference ms per image (log x)."""
    import matplotlib.pyplot as plt

    from cnnzoo.viz.figure import save_figure

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    names = [r["model"] for r in rows]
    left.bar(names, [r["macs_per_image"] for r in rows], color="tab:gray")
    left.set_yscale("log")
    left.set_ylabel("MACs per image (forward)")
    left.set_title("Compute per image")
    for i, r in enumerate(rows):
        left.annotate(f"{r['evaluations_per_image']:g} evals", (i, r["macs_per_image"]),
                      ha="center", va="bottom", fontsize=8)  # fmt: skip
    for i, r in enumerate(rows):
        right.scatter(r["inference_ms_per_image"], r["test_map_50"], s=40)
        right.annotate(
            f"{r['model']} ({r['steps']} steps)",
            (r["inference_ms_per_image"], r["test_map_50"]),
            textcoords="offset points", xytext=(4, 6 if i % 2 else -12), fontsize=8,
        )  # fmt: skip
    right.set_xscale("log")
    right.set_xlabel("inference ms per image (forward + NMS)")
    right.set_ylabel("test mAP@0.5")
    right.set_ylim(0, 1)
    right.set_title("Accuracy vs speed, same training seconds")
    right.grid(alpha=0.3)
    return save_figure(fig, path)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.0f}x" if b > 0 else "n/a"


def notes(rows: list[dict[str, Any]], train_seconds: float) -> str:
    """Return the lecture's argument and what the measured ``rows`` say about it."""
    by = {r["model"]: r for r in rows}
    parts = [
        "The lecture: applying a CNN to many crops is the naive, slow approach; classifying "
        "only some proposals over a shared feature map (Fast R-CNN) is cheaper; one-pass "
        "detectors (YOLO, SSD) predict all boxes in a single forward pass.",
        f"Every model trained for {train_seconds:g} s.",
    ]
    if "sliding_window" in by and "yolov3" in by:
        sw, yo = by["sliding_window"], by["yolov3"]
        parts.append(
            f"The sliding window classifies {sw['evaluations_per_image']:g} windows per image: "
            f"{_ratio(sw['macs_per_image'], yo['macs_per_image'])} the MACs of YOLOv3, "
            f"{_ratio(sw['inference_ms_per_image'], yo['inference_ms_per_image'])} its "
            "inference time per image in batches and "
            f"{_ratio(sw['latency_ms'], yo['latency_ms'])} its time for a single image (one "
            "small image leaves YOLOv3 mostly fixed per-call costs: Python, operator launches, "
            "NMS)."
        )
    if "fast_rcnn" in by and "yolov3" in by:
        fr, yo = by["fast_rcnn"], by["yolov3"]
        parts.append(
            f"Fast R-CNN evaluates its head on {fr['evaluations_per_image'] - 1:g} proposals "
            f"after one backbone pass: {_ratio(fr['macs_per_image'], yo['macs_per_image'])} "
            f"the MACs of YOLOv3, "
            f"{_ratio(fr['inference_ms_per_image'], yo['inference_ms_per_image'])} its time."
        )
    ranked = sorted(rows, key=lambda r: r["test_map_50"], reverse=True)
    parts.append(
        "Test mAP@0.5, best first: "
        + ", ".join(f"{r['model']} {r['test_map_50']:.3f} ({r['steps']} steps)" for r in ranked)
        + "."
    )
    return " ".join(parts)


@register_experiment(
    "detector-cost",
    "sliding window vs Fast R-CNN vs YOLOv3 on the scenes, same backbone and training "
    "seconds: network evaluations, MACs and time per image, mAP",
)
def detector_cost(out: Path, quick: bool) -> ExperimentResult:
    """Run the detector-cost experiment (see the module docstring)."""
    s = QUICK if quick else DetCostSettings()
    dataset = _dataset()
    torch.set_flush_denormal(True)
    rows = [measure(name, s, dataset) for name in s.models]
    figure = plot(rows, out / "detector_cost.png")
    return ExperimentResult(
        title="The cost of detection: sliding window vs Fast R-CNN vs one pass (YOLOv3)",
        columns=[
            "model",
            "params",
            "evaluations_per_image",
            "gmacs_per_image",
            "inference_ms_per_image",
            "latency_ms",
            "steps",
            "train_seconds",
            "test_map_50",
            "test_map",
        ],
        rows=rows,
        figures=[figure],
        notes=notes(rows, s.train_seconds),
        settings={
            **asdict(s),
            "dataset": dataset,
            "budget": f"same {s.train_seconds:g} training seconds per model "
            "(steps differ), lr decaying linearly with elapsed time",
            "metric": "COCO mAP (pycocotools via torchmetrics) on the test images",
        },
    )
