"""cnnzoo's side: the ``cnnzoo train`` command of each recipe, its run's predictions on the
test split (written in the peers' file formats), and its inference speed."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from peerbench.timing import SPEED_BATCH, onnx_images_per_second, torch_images_per_second

BEST = ["--precision", "auto", "--channels-last"]
PRETRAINED = ["--backbone-weights", "convnet.fmnist"]
UNET_STEPS = ["--lr", "6e-3", "--batch-size", "8"]  # the best of the 15-minute screen
RECIPES: dict[str, list[str]] = {
    "fast_rcnn": [*PRETRAINED, *BEST],
    "yolov3": [*PRETRAINED, *BEST],
    "yolov3_tiny": ["--backbone-weights", "convnet.fmnist_w16", "--recipe", "modern", *BEST],
    "ssd": [*PRETRAINED, *BEST],
    "unet": ["--model-arg", "width=16", "--model-arg", "depth=4", *UNET_STEPS, *BEST],
    "fcn8s": ["--backbone", "resnet18", "--lr", "2e-3", *BEST],
}
"""``cnnzoo train`` options per model beyond data, budget and split: the recipes of
``benchmarks/detection.py`` and ``benchmarks/segmentation.py`` (detectors from the shipped
Fashion-MNIST classifier ``convnet.fmnist``, ``yolov3_tiny`` from its narrow sibling
``convnet.fmnist_w16`` with ``--recipe modern``, ``unet`` width 16 from scratch with lr 6e-3
and batch 8, the best of a 15-minute screen, docs/benchmarks.md; a
``MODEL:RECIPE`` entry's recipe wins). Other
registered models train with cnnzoo's defaults plus ``--precision auto`` (bf16 autocast only
where the processor has bf16 instructions) and channels-last."""
DEFAULT_MODELS = {"detection": ["fast_rcnn", "yolov3_tiny"], "segmentation": ["unet"]}

EVAL_DECODE = {"score_threshold": 0.01, "iou_threshold": 0.5, "max_detections": 100}
"""cnnzoo's evaluation settings (``DetectionTask``'s defaults): its mAP protocol, here too."""


def train_command(
    model: str,
    spec: str,
    run_dir: Path,
    minutes: float,
    val_fraction: float,
    seed: int,
    device: str,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``cnnzoo train`` command line (this interpreter) of one model's recipe; ``model``
    may be ``MODEL[:RECIPE][+KEY=VALUE]...`` (adds ``--recipe RECIPE`` and a ``--model-arg
    KEY=VALUE`` per ``+``)."""
    model, *model_args = model.split("+")
    model, _, recipe = model.partition(":")
    base = list(RECIPES.get(model, BEST))
    if recipe and "--recipe" in base:  # the entry's recipe replaces the benchmark's
        at = base.index("--recipe")
        del base[at : at + 2]
    extra = [*extra, "--recipe", recipe] if recipe else list(extra)
    for arg in model_args:
        extra += ["--model-arg", arg]
    return [
        sys.executable, "-m", "cnnzoo.cli", "train", model, "--data", spec, "--out", str(run_dir),
        "--time", f"{minutes:g}", "--val-fraction", f"{val_fraction:g}", "--seed", str(seed),
        "--accelerator", "gpu" if device == "cuda" else "cpu", "--no-progress",
        *base, *extra,
    ]  # fmt: skip


def run_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """Return what the results keep of a finished run's ``metrics.json``: ``train_seconds``,
    ``epochs`` and ``validation`` (the run's last validation figures, loss left out, keyed
    without the ``val/`` prefix), so a recipe can be chosen on the held-out scenes rather
    than on the test scenes both sides are scored on."""
    validation = {key.removeprefix("val/"): value for key, value in metrics["metrics"].items()
                  if key.startswith("val/") and key != "val/loss"}  # fmt: skip
    return {"train_seconds": round(metrics["seconds"], 1), "epochs": metrics["epochs"],
            "validation": validation}  # fmt: skip


def _inputs(image: torch.Tensor, spec: dict[str, Any]) -> torch.Tensor:
    """One uint8 (C, H, W) image as the run's model sees it (``cnnzoo predict``'s steps)."""
    from cnnzoo.data.transforms import normalize_batch

    data = spec["data"]
    x = normalize_batch(image[None], tuple(data["mean"]), tuple(data["std"]))
    size = spec.get("resize_to")
    if size is not None:
        x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True)
    return x


@torch.inference_mode()
def predict_boxes(run_dir: Path, images: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Detections of a run on uint8 images, in each image's own pixels."""
    from cnnzoo.rundir import RunDir

    model, spec = RunDir.open(run_dir).load_model()
    model.eval()
    out = []
    for image in images:
        h, w = image.shape[-2:]
        x = _inputs(image, spec)
        found = model.decode(model(x), tuple(x.shape[-2:]), **EVAL_DECODE)[0]
        scale = torch.tensor([w / x.shape[-1], h / x.shape[-2]] * 2)
        out.append({"boxes": found["boxes"].float() * scale, "scores": found["scores"].float(),
                    "labels": found["labels"].long()})  # fmt: skip
    return out


@torch.inference_mode()
def predict_masks(run_dir: Path, images: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Label maps of a segmentation run on uint8 images, at each image's own size."""
    from cnnzoo.rundir import RunDir

    model, spec = RunDir.open(run_dir).load_model()
    model.eval()
    out = []
    for image in images:
        h, w = image.shape[-2:]
        logits = model(_inputs(image, spec))
        logits = getattr(logits, "logits", logits)
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        labels = logits.argmax(1)[0].numpy()
        out.append(labels.astype(np.uint8 if logits.shape[1] <= 256 else np.int32))
    return out


def speed(
    run_dir: Path, images: Sequence[torch.Tensor], threads: int, repeats: int, work: Path
) -> dict[str, Any]:
    """Images per second of the run's model forward (fp32, batch 32, ``threads``) and of its
    ONNX export where ``cnnzoo export`` supports the model (else the reason)."""
    from cnnzoo.errors import CnnzooError
    from cnnzoo.families.base import input_shape
    from cnnzoo.rundir import RunDir
    from cnnzoo.workflows.export import export_run

    model, spec = RunDir.open(run_dir).load_model()
    _, h, w = input_shape(spec)
    batch = [
        F.interpolate(_inputs(image, spec), size=(h, w), mode="bilinear", antialias=True)
        for image in (list(images) * SPEED_BATCH)[:SPEED_BATCH]
    ]
    x = torch.cat(batch)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result: dict[str, Any] = {
            "params": sum(p.numel() for p in model.parameters()),
            "images_per_s": round(torch_images_per_second(model, x, repeats), 1),
        }
        try:
            target = work / "onnx" / "model.onnx"  # not the run's own model.json's folder
            target.parent.mkdir(parents=True, exist_ok=True)
            onnx = export_run(run_dir, target, check_images=8, overwrite=True).onnx
            result["onnx_images_per_s"] = round(
                onnx_images_per_second(str(onnx), x.numpy(), threads, repeats), 1
            )
        except CnnzooError as error:
            result["onnx_images_per_s"] = None
            result["onnx_error"] = str(error)[:300]
    finally:
        torch.set_num_threads(previous)
    return result
