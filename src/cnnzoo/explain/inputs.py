"""Image files as the model sees them, for an explanation drawn over exactly that picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnzoo.errors import CnnzooError


def check_channels(path: Path, in_channels: int, label: str) -> None:
    """Refuse a colour image for a grayscale model: its explanation would be drawn over a
    picture the model never saw. (A grayscale file for a colour model is fine: its channels
    are repeated, which is what a gray photo is.)

    Raises:
        CnnzooError: naming the file, its channels and the model's.
    """
    from PIL import Image

    if in_channels != 1:
        return
    try:
        with Image.open(path) as img:
            bands = img.getbands()
            rgb = np.asarray(img.convert("RGB")) if len(bands) >= 3 else None
    except Exception:
        return  # not readable: load_image names the file and the problem
    if rgb is not None and not (
        np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    ):
        raise CnnzooError(
            f"{path} is a colour image ({len(bands)} channels, {''.join(bands)}) but {label} "
            "takes 1-channel grayscale images: convert it to grayscale first"
        )


def load_input(
    path: str | Path, spec: dict[str, Any], label: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode an image file for a run's model: its channels, its input size, its normalisation.

    Classification runs read the file as ``cnnzoo predict`` does (resized to the training
    size, or ImageNet's resize and centre crop); segmentation and detection runs keep the
    file's size unless the run was trained at a fixed one.

    Returns:
        ``(image, x)``: the picture the model sees as uint8 ``(C, H, W)``, and the model's
        normalised input ``(1, C, H, W)`` of the same size.

    Raises:
        CnnzooError: for a missing or unreadable file, or a colour image for a grayscale model.
    """
    from cnnzoo.data.folder import load_image, resize_uint8
    from cnnzoo.data.transforms import normalize_batch
    from cnnzoo.families.classification.predict import load_for_model

    path = Path(path)
    data = spec["data"]
    if not path.is_file():
        raise CnnzooError(f"image not found: {path}")
    check_channels(path, int(data["in_channels"]), label)
    if spec.get("task", "classification") == "classification":
        image = load_for_model(path, data)
    else:
        image = load_image(path, data["in_channels"])
    size = spec.get("resize_to")
    if size is not None:
        pair = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(image.shape[-2:]) != pair:
            image = resize_uint8(image, pair)
    x = normalize_batch(image[None], tuple(data["mean"]), tuple(data["std"]))
    return image, x.float()
