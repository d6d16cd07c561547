"""``cnnzoo predict`` with a detection run: a PNG with the boxes drawn and a JSON of the
detections per image."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cnnzoo.data.transforms import normalize_batch
from cnnzoo.errors import CnnzooError
from cnnzoo.families.outputs import check_inputs, output_paths
from cnnzoo.files import atomic_write_text
from cnnzoo.rundir import RunDir
from cnnzoo.viz.figure import save_image

DRAWN_SIDE = 384
"""Images whose longer side is shorter are drawn enlarged by an integer factor to about this."""
BATCH = 32
"""Images of one size go through the network and the decoding together, this many at a time."""


@dataclass
class DetPrediction:
    """The files written for one image and what was found in it."""

    file: Path
    boxes_png: Path
    json_file: Path
    detections: list[dict[str, Any]]  # {"label", "class", "score", "box": [x1, y1, x2, y2]}


OUTPUTS = ("_boxes.png", ".json")


def inference_model(model: torch.nn.Module) -> torch.nn.Module:
    """Return ``model`` in eval mode with channels-last (NHWC) weights: oneDNN's CPU
    convolutions run NHWC natively, so a batch-1 call skips a layout reorder per layer
    (measured in docs/embedded.md)."""
    return model.eval().to(memory_format=torch.channels_last)


@torch.inference_mode()
def detect(
    model: torch.nn.Module, x: torch.Tensor, conf: float, iou: float, max_detections: int
) -> list[dict[str, torch.Tensor]]:
    """Return the detections of prepared images ``x (N, C, H, W)``, one dict per image: one
    forward pass (channels-last) and one batched decoding for the whole batch."""
    outputs = model(x.contiguous(memory_format=torch.channels_last))
    return model.decode(outputs, tuple(x.shape[-2:]), conf, iou, max_detections)


def _batches(prepared: list[torch.Tensor]) -> list[list[int]]:
    """Indices of ``prepared`` images grouped by size, at most :data:`BATCH` per group."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(prepared):
        groups.setdefault(tuple(x.shape), []).append(i)
    return [g[k : k + BATCH] for g in groups.values() for k in range(0, len(g), BATCH)]


@torch.no_grad()
def predict_detection(
    run_or_weights: str | Path,
    files: list[str | Path],
    out_dir: str | Path,
    conf: float = 0.3,
    iou: float = 0.5,
    max_detections: int = 100,
    overwrite: bool = False,
) -> list[DetPrediction]:
    """Detect objects in image files with a trained run.

    Each image is converted to the model's channels, resized to the run's input size when it
    was trained with one, normalised as in training; images of the same size then go through
    the network (channels-last) and the decoding together, :data:`BATCH` at a time; the
    boxes are scaled back to the image's own pixels. For ``photo.jpg`` the folder ``out_dir``
    gets ``photo_boxes.png`` (the image with every detection drawn, class and score in the
    caption) and ``photo.json``::

        {"file": ..., "width": W, "height": H, "model": ...,
         "detections": [{"label": 3, "class": "Dress", "score": 0.91,
                         "box": [x1, y1, x2, y2]}, ...]}

    Args:
        conf: keep detections scoring above this.
        iou: the NMS IoU threshold.
        max_detections: most detections kept per image.

    Returns:
        One :class:`DetPrediction` per file, in order.

    Raises:
        CnnzooError: for a run that is not a detection run, ``conf`` outside [0, 1), a
            missing or unreadable image (named), two inputs with the same file name, or an
            output file that exists (without ``overwrite``).
    """
    from PIL import Image

    from cnnzoo.data.folder import load_image
    from cnnzoo.viz.detection import draw_detections

    if not 0 <= conf < 1:
        raise CnnzooError(f"--conf must be in [0, 1), got {conf}")
    run = RunDir.open(run_or_weights)
    model, spec = run.load_model()
    if spec.get("task") != "detection":
        raise CnnzooError(f"{run.label} is not a detection run")
    data = spec["data"]
    names = data["class_names"]
    size = spec.get("resize_to")
    out = Path(out_dir)
    paths = check_inputs(files, out, OUTPUTS, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    model = inference_model(model)
    images = [load_image(path, data["in_channels"]) for path in paths]
    prepared = []
    for image in images:
        x = normalize_batch(image[None], tuple(data["mean"]), tuple(data["std"]))
        if size is not None:
            x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True)
        prepared.append(x[0])
    found_all: list[dict[str, torch.Tensor]] = [{} for _ in paths]
    for group in _batches(prepared):
        batch = torch.stack([prepared[i] for i in group])
        for i, found in zip(group, detect(model, batch, conf, iou, max_detections), strict=True):
            found_all[i] = found
    results = []
    for path, image, x, found in zip(paths, images, prepared, found_all, strict=True):
        h, w = image.shape[-2:]
        scale = torch.tensor([w / x.shape[-1], h / x.shape[-2]] * 2)
        boxes = found["boxes"].float() * scale
        detections = [
            {
                "label": int(c),
                "class": names[int(c)],
                "score": round(float(s), 4),
                "box": [round(float(v), 2) for v in b],
            }
            for b, s, c in zip(boxes, found["scores"], found["labels"], strict=True)
        ]
        png, js = output_paths(out, path, OUTPUTS, overwrite)
        # Small images are drawn enlarged (nearest neighbour) so that captions stay readable.
        k = max(1, -(-DRAWN_SIDE // max(int(h), int(w))))
        big = image.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)
        drawn = draw_detections(big, boxes * k, found["labels"], names, found["scores"],
                                width=2 if k > 1 else 1)  # fmt: skip
        save_image(Image.fromarray(drawn), png)
        record = {"file": str(path), "width": int(w), "height": int(h), "model": spec["model"],
                  "detections": detections}  # fmt: skip
        atomic_write_text(js, json.dumps(record, indent=1) + "\n")
        results.append(DetPrediction(path, png, js, detections))
    return results
