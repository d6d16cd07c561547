"""``cnnzoo predict`` with a segmentation run: a label PNG and a colour overlay per image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnzoo.data.transforms import normalize_batch
from cnnzoo.errors import CnnzooError
from cnnzoo.families.outputs import check_inputs, output_paths
from cnnzoo.rundir import RunDir
from cnnzoo.viz.figure import save_image


@dataclass
class SegPrediction:
    """The files written for one image, and the share of its pixels per predicted class."""

    file: Path
    label_png: Path
    overlay_png: Path
    areas: dict[str, float]  # class name -> fraction of the image, largest first


OUTPUTS = ("_label.png", "_overlay.png")


@torch.no_grad()
def predict_segmentation(
    run_or_weights: str | Path,
    files: list[str | Path],
    out_dir: str | Path,
    overwrite: bool = False,
) -> list[SegPrediction]:
    """Segment image files with a trained run.

    Each image is converted to the model's channels, resized to the run's input size when
    it was trained with one, normalised as in training; the logits are resized back to the
    image's own size. For ``photo.jpg`` the folder ``out_dir`` gets ``photo_label.png`` (a
    palette PNG whose pixel values are the class indices) and ``photo_overlay.png``.

    Returns:
        One :class:`SegPrediction` per file, in order.

    Raises:
        CnnzooError: for a run that is not a segmentation run, a missing or unreadable
            image (named), two inputs with the same file name, or an output file that exists
            (without ``overwrite``).
    """
    from PIL import Image

    from cnnzoo.data.folder import load_image
    from cnnzoo.viz.segmentation import overlay, save_label_png

    run = RunDir.open(run_or_weights)
    model, spec = run.load_model()
    if spec.get("task") != "segmentation":
        raise CnnzooError(f"{run.label} is not a segmentation run")
    data = spec["data"]
    names = data["class_names"]
    size = spec.get("resize_to")
    out = Path(out_dir)
    paths = check_inputs(files, out, OUTPUTS, overwrite)
    results = []
    for path in paths:
        image = load_image(path, data["in_channels"])
        h, w = image.shape[-2:]
        x = normalize_batch(image[None], tuple(data["mean"]), tuple(data["std"]))
        if size is not None:
            x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True)
        logits = model(x).float()
        if tuple(logits.shape[-2:]) != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        labels = logits.argmax(1)[0]
        label_png, overlay_png = output_paths(out, path, OUTPUTS, overwrite)
        save_label_png(labels, label_png)
        save_image(Image.fromarray(overlay(image, labels)), overlay_png)
        counts = torch.bincount(labels.flatten(), minlength=len(names)).double() / labels.numel()
        order = counts.argsort(descending=True).tolist()
        areas = {names[i]: round(float(counts[i]), 4) for i in order if counts[i] > 0}
        results.append(SegPrediction(path, label_png, overlay_png, areas))
    return results
