"""``cnnzoo predict``: top-k classes with probabilities for image files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnzoo.data.transforms import prepare_batch
from cnnzoo.errors import CnnzooError
from cnnzoo.rundir import RunDir
from cnnzoo.tasks.tta import with_tta


@dataclass
class Prediction:
    """The top-k classes of one image, most probable first."""

    file: Path
    classes: list[str]
    probs: list[float]


@torch.no_grad()
def predict(run_or_weights: str | Path, files: list[str | Path], topk: int = 3) -> list[Prediction]:
    """Classify image files with a trained run.

    A quantized run (``cnnzoo compress --quantize int8``, or an int8 ONNX weight set) predicts
    with its int8 model in ONNX Runtime. Images of any mode and size are converted to the
    model's channels and resized to the size it was trained on (or, where the model's data
    says so, as ImageNet's evaluation: shorter side to ``resize``, centre crop), then
    normalised exactly as in training.

    Returns:
        One :class:`Prediction` per file, in order.

    Raises:
        CnnzooError: for a path that is not a run, or a file that is missing, not an image
            or truncated (the message names it).
    """
    run = RunDir.open(run_or_weights)
    spec = run.read_spec()
    model = _int8_model(run) if spec.get("int8_onnx") else run.load_model()[0]
    if not spec.get("int8_onnx"):
        model = with_tta(model, spec)
    data = spec["data"]
    names = data["class_names"]
    k = max(1, min(topk, len(names)))
    out = []
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise CnnzooError(f"image not found: {path}")
        image = load_for_model(path, data)
        x = prepare_batch(image[None], tuple(data["mean"]), tuple(data["std"]), spec["resize_to"])
        probs = torch.softmax(model(x).float(), dim=1)[0]
        top = probs.topk(k)
        out.append(
            Prediction(
                file=path,
                classes=[names[i] for i in top.indices.tolist()],
                probs=[round(p, 6) for p in top.values.tolist()],
            )
        )
    return out


def _int8_model(run: RunDir) -> Callable[[torch.Tensor], torch.Tensor]:
    """The run's int8 ONNX model in ONNX Runtime, as a function of a float batch."""
    from cnnzoo.compress.runtime import ort_session

    session = ort_session(run.int8_file, threads=1)
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def load_for_model(path: Path, data: dict) -> torch.Tensor:
    """Decode an image as the model's data spec says: its channels, then either resized to
    ``image_size``, or (``resize`` and ``crop`` given, torchvision's ImageNet evaluation) the
    shorter side resized to ``resize`` and the centre ``crop`` taken.

    Returns:
        uint8 tensor ``(C, H, W)``.

    Raises:
        CnnzooError: naming the file if it is not a readable image.
    """
    from cnnzoo.data.folder import load_image, resize_uint8

    if data.get("resize") and data.get("crop"):
        image = load_image(path, data["in_channels"])
        h, w = image.shape[-2:]
        short, crop = int(data["resize"]), int(data["crop"])
        # torchvision's Resize(int): the shorter side becomes `short`, the other scales
        # (truncated); then the centre crop (top-left rounded as torchvision does).
        size = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
        image = resize_uint8(image, size)
        top, left = round((size[0] - crop) / 2), round((size[1] - crop) / 2)
        return image[:, top : top + crop, left : left + crop]
    return load_image(path, data["in_channels"], tuple(data["image_size"]))
