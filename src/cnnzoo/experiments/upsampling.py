"""Learned vs fixed upsampling in an encoder-decoder, measured on the synthetic scenes.

The lecture: segmentation nets "downsample and upsample inside the network", the upsampling
being a transposed convolution — "learned upsampling" — rather than a fixed interpolation.
Here the same encoder-decoder (``encdec``: a small VGG-style ``convnet`` encoder down to
stride 16, four x2 decoder steps) is trained with each upsampling mode — ``transposed``
(learned, bilinear-initialised), ``bilinear`` and ``nearest`` (fixed) — for the same number of
optimisation steps from the same seed(s), and optionally a small U-Net with the same three
modes. Reported: parameters, test mean IoU and pixel accuracy on the scenes' test split,
training seconds and inference milliseconds per image.

The data helpers here (:func:`scenes_data`, :func:`test_batch`) are shared with
:mod:`cnnzoo.experiments.seg_cost`; the clocks are in :mod:`cnnzoo.experiments.timing`.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torch import Tensor

from cnnzoo.data.seg_datamodule import SegmentationData, pad_collate
from cnnzoo.data.transforms import normalize_batch
from cnnzoo.experiments import ExperimentResult, register_experiment
from cnnzoo.experiments.timing import TrainClock, inference_ms
from cnnzoo.models.base import count_params
from cnnzoo.registry import create_model
from cnnzoo.tasks.segmentation import SegmentationTask
from cnnzoo.workflows.train import fit_and_test

MODES = ("transposed", "bilinear", "nearest")


@dataclass(frozen=True)
class UpsamplingSettings:
    """The knobs of the experiment; ``QUICK`` and default presets below."""

    models: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "encdec": {"backbone": "convnet", "widths": (16, 32, 64, 128), "min_width": 16},
        }
    )
    """Model name -> options; add e.g. ``"unet": {"width": 16, "depth": 3}`` (~1.5x the
    encoder-decoder's step time) to compare its three modes too."""
    modes: tuple[str, ...] = MODES
    seeds: tuple[int, ...] = (0,)
    steps: int = 1500
    batch_size: int = 16
    lr: float = 3e-3
    test_images: int | None = None
    infer_images: int = 16
    infer_repeats: int = 5
    precision: str = "bf16-mixed"
    channels_last: bool = True


QUICK = UpsamplingSettings(
    models={"encdec": {"backbone": "convnet", "widths": (16, 32, 64, 128), "min_width": 16}},
    steps=150,
    test_images=200,
    infer_repeats=3,
)


def _dataset() -> str:
    return "scenes"


# -- shared helpers (also used by seg_cost) ---------------------------------------------------
def scenes_data(
    dataset: str, batch_size: int, seed: int, test_images: int | None = None
) -> SegmentationData:
    """Return the segmentation data module, all training images, no validation split.

    Args:
        dataset: a ``--data`` form, e.g. ``"scenes"`` or ``"masks:PATH"``.
        test_images: keep only the first N test images (None: all).

    Returns:
        The :class:`SegmentationData`.

    Raises:
        CnnzooError: if the dataset cannot be read or has no test split.
    """
    data = SegmentationData(dataset, batch_size=batch_size, val_fraction=0, seed=seed)
    if not data.has_split("test"):
        from cnnzoo.errors import CnnzooError

        raise CnnzooError(f"dataset {dataset!r} has no test split")
    if test_images is not None:
        view = data.splits["test"]
        view.indices = view.indices[:test_images]
    return data


def test_batch(data: SegmentationData, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Return the first ``n`` test images: ``(uint8 images, normalised float images, masks)``."""
    view = data.splits["test"]
    images, masks = pad_collate([view[i] for i in range(min(n, len(view)))])
    return images, normalize_batch(images, data.spec.mean, data.spec.std), masks


# -- the experiment ---------------------------------------------------------------------------
def train_once(
    model_name: str, mode: str, seed: int, s: UpsamplingSettings, dataset: str
) -> dict[str, Any]:
    """Train ``model_name`` with upsampling ``mode`` for ``s.steps`` steps and measure it.

    Returns:
        ``{"params", "miou", "pixel_accuracy", "train_seconds", "infer_ms", "prediction"}``,
        the prediction being the (H, W) label map of the first test image.
    """
    L.seed_everything(seed, verbose=False)
    data = scenes_data(dataset, s.batch_size, seed, s.test_images)
    n = len(data.spec.class_names)
    model = create_model(model_name, num_classes=n, upsample=mode, **s.models[model_name])
    task = SegmentationTask(model, n, lr=s.lr, channels_last=s.channels_last)
    clock = TrainClock()
    metrics = fit_and_test(task, data, s.steps, s.precision, [clock])  # type: ignore[arg-type]
    _, x, _ = test_batch(data, s.infer_images)
    ms, logits = inference_ms(task.model, x, s.precision, s.channels_last, s.infer_repeats)
    return {
        "params": count_params(model),
        "miou": metrics["test/miou"],
        "pixel_accuracy": metrics["test/pixel_accuracy"],
        "train_seconds": clock.seconds,
        "infer_ms": ms,
        "prediction": logits[0].argmax(0).cpu(),
    }


def plot_bars(rows: list[dict[str, Any]], path: Path) -> Path:
    """Bar chart of test mIoU per model and upsampling mode, annotated with inference ms."""
    import matplotlib.pyplot as plt

    from cnnzoo.viz.figure import save_figure

    models = list(dict.fromkeys(r["model"] for r in rows))
    modes = list(dict.fromkeys(r["upsampling"] for r in rows))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    width = 0.8 / len(modes)
    for j, mode in enumerate(modes):
        pts = [(i, r) for i, m in enumerate(models) for r in rows
               if r["model"] == m and r["upsampling"] == mode]  # fmt: skip
        xs = [i + (j - (len(modes) - 1) / 2) * width for i, _ in pts]
        bars = ax.bar(xs, [r["test_miou"] for _, r in pts], width, label=mode)
        for bar, (_, r) in zip(bars, pts, strict=True):
            ax.annotate(f"{r['inference_ms_per_image']:.1f} ms", (bar.get_x() + width / 2,
                        bar.get_height()), ha="center", va="bottom", fontsize=7)  # fmt: skip
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("test mIoU")
    ax.set_ylim(0, 1)
    ax.set_title("Upsampling mode: test mIoU (labels: inference ms/image)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_predictions(
    image: Tensor, mask: Tensor, predictions: dict[tuple[str, str], Tensor], path: Path
) -> Path:
    """One row per model: the test image, its ground truth, then each mode's prediction."""
    import matplotlib.pyplot as plt

    from cnnzoo.viz.figure import save_figure
    from cnnzoo.viz.segmentation import colorize, to_rgb

    models = list(dict.fromkeys(m for m, _ in predictions))
    modes = list(dict.fromkeys(mode for _, mode in predictions))
    cols = 2 + len(modes)
    fig, axes = plt.subplots(len(models), cols, figsize=(2.2 * cols, 2.3 * len(models)),
                             squeeze=False)  # fmt: skip
    for i, model in enumerate(models):
        panels = [("image", to_rgb(image)), ("ground truth", colorize(mask))]
        panels += [(mode, colorize(predictions[(model, mode)])) for mode in modes]
        for ax, (title, picture) in zip(axes[i], panels, strict=True):
            ax.imshow(np.asarray(picture))
            ax.set_title(title if title in ("image", "ground truth") else f"{model}: {title}",
                         fontsize=8)  # fmt: skip
            ax.axis("off")
    return save_figure(fig, path)


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


@register_experiment(
    "upsampling",
    "the same encoder-decoder (and a small U-Net) with transposed-convolution vs bilinear vs "
    "nearest upsampling on the scenes: params, mIoU, train and inference time",
)
def upsampling(out: Path, quick: bool) -> ExperimentResult:
    """Run the upsampling experiment (see the module docstring)."""
    s = QUICK if quick else UpsamplingSettings()
    dataset = _dataset()
    rows: list[dict[str, Any]] = []
    predictions: dict[tuple[str, str], Tensor] = {}
    for model_name in s.models:
        for mode in s.modes:
            runs = [train_once(model_name, mode, seed, s, dataset) for seed in s.seeds]
            mious = [r["miou"] for r in runs]
            rows.append({
                "model": model_name, "upsampling": mode, "params": runs[0]["params"],
                "test_miou": round(_mean(mious), 4),
                "miou_std": round(statistics.stdev(mious), 4) if len(mious) > 1 else 0.0,
                "pixel_accuracy": round(_mean([r["pixel_accuracy"] for r in runs]), 4),
                "train_seconds": round(_mean([r["train_seconds"] for r in runs]), 2),
                "inference_ms_per_image": round(_mean([r["infer_ms"] for r in runs]), 3),
                "seeds": len(runs), "runs": [round(v, 4) for v in mious],
            })  # fmt: skip
            predictions[(model_name, mode)] = runs[0]["prediction"]
    data = scenes_data(dataset, s.batch_size, s.seeds[0], s.test_images)
    images, _, masks = test_batch(data, 1)
    figures = [
        plot_bars(rows, out / "upsampling.png"),
        plot_predictions(images[0], masks[0], predictions, out / "predictions.png"),
    ]
    return ExperimentResult(
        title="Learned (transposed) vs fixed (bilinear, nearest) upsampling",
        columns=[
            "model",
            "upsampling",
            "params",
            "test_miou",
            "pixel_accuracy",
            "train_seconds",
            "inference_ms_per_image",
        ],
        rows=rows,
        figures=figures,
        notes=_notes(rows),
        settings={
            **asdict(s),
            "dataset": dataset,
            "budget": f"same {s.steps} optimisation steps per run",
            "metric": "test mean IoU over classes present (scenes test split)",
        },
    )


def _notes(rows: list[dict[str, Any]]) -> str:
    parts = [
        "The lecture: an encoder-decoder downsamples, then upsamples back to full resolution; "
        "the upsampling can be learned (transposed convolution) instead of fixed."
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        by_mode = {r["upsampling"]: r for r in rows if r["model"] == model}
        best = max(by_mode.values(), key=lambda r: r["test_miou"])
        text = f"{model}: best mIoU with {best['upsampling']} ({best['test_miou']:.3f})"
        learned = by_mode.get("transposed")
        if learned is not None:
            for mode, r in by_mode.items():
                if mode == "transposed":
                    continue
                speed = learned["inference_ms_per_image"] / r["inference_ms_per_image"]
                text += (
                    f"; transposed vs {mode}: mIoU {learned['test_miou'] - r['test_miou']:+.3f}, "
                    f"{learned['params'] - r['params']:+,} parameters, "
                    f"inference time x{speed:.2f}"
                )
        parts.append(text + ".")
    single = bool(rows) and rows[0]["seeds"] == 1
    parts.append(
        "One seed per run: differences of a few hundredths in mIoU may be run-to-run noise."
        if single
        else "mIoU is the mean over seeds (std and per-seed values in results.json)."
    )
    return " ".join(parts)
