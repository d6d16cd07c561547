"""``cnnzoo predict``: top-k classes with probabilities for image files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cnnzoo.data.datamodule import prepare_batch
from cnnzoo.errors import CnnzooError
from cnnzoo.rundir import RunDir


@dataclass
class Prediction:
    """The top-k classes of one image, most probable first."""

    file: Path
    classes: list[str]
    probs: list[float]


@torch.no_grad()
def predict(run_or_weights: str | Path, files: list[str | Path], topk: int = 3) -> list[Prediction]:
    """Classify image files with a trained run.

    Images of any mode and size are converted to the model's channels and resized to the
    size it was trained on, then normalised exactly as in training.

    Returns:
        One :class:`Prediction` per file, in order.

    Raises:
        CnnzooError: for a path that is not a run, or a file that is missing, not an image
            or truncated (the message names it).
    """
    from cnnzoo.data.folder import load_image

    run = RunDir.open(run_or_weights)
    model, spec = run.load_model()
    data = spec["data"]
    names = data["class_names"]
    k = max(1, min(topk, len(names)))
    out = []
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise CnnzooError(f"image not found: {path}")
        image = load_image(path, data["in_channels"], tuple(data["image_size"]))
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
