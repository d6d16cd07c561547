"""One named weight set (``MODEL.TAG``): what it is, where its file is, what it expects.

Like torchvision's ``Weights`` and timm's pretrained configs, an entry carries everything a
user needs without opening the file: the model and its builder options (``spec``, the same
document a run directory's ``model.json`` holds), the file (shipped in the package, or a URL)
and its SHA-256, the classes, the preprocessing, the data it was trained on and its measured
metrics, its licence and the recipe that made it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input.

    Attributes:
        in_channels: 1 (gray) or 3 (RGB).
        size: ``(height, width)`` the model sees.
        resize: the shorter side an image is resized to before a centre crop of ``size``
            (torchvision's ImageNet evaluation: 256 then 224); None resizes straight to
            ``size``.
        mean, std: per-channel normalisation of the [0, 1] image.
        interpolation: ``"bilinear"`` (antialiased) or ``"bicubic"``.
    """

    in_channels: int
    size: tuple[int, int]
    resize: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def transforms(self) -> Callable[[Any], Tensor]:
        """Return a ``torchvision.transforms.v2`` pipeline: PIL image or uint8 tensor in,
        normalised float tensor ``(C, H, W)`` out."""
        from torchvision.transforms import v2

        mode = v2.InterpolationMode(self.interpolation)
        # To float first: a uint8 grayscale conversion would round white down to 254.
        steps: list[Any] = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
        steps.append(v2.Grayscale(1) if self.in_channels == 1 else v2.RGB())
        if self.resize is not None:
            steps += [v2.Resize(self.resize, mode, antialias=True), v2.CenterCrop(self.size)]
        else:
            steps.append(v2.Resize(self.size, mode, antialias=True))
        steps.append(v2.Normalize(self.mean, self.std))
        return v2.Compose(steps)

    def describe(self) -> str:
        """One line, e.g. ``"gray 28x28, mean 0.286 std 0.353"``."""
        colour = "gray" if self.in_channels == 1 else "RGB"
        crop = f"resize {self.resize}, crop " if self.resize else ""
        h, w = self.size
        mean = "/".join(f"{m:.3f}" for m in self.mean)
        std = "/".join(f"{s:.3f}" for s in self.std)
        return f"{colour} {crop}{h}x{w}, mean {mean}, std {std}"


@dataclass(frozen=True)
class WeightSet:
    """A named weight set.

    Attributes:
        name: ``MODEL.TAG``, e.g. ``"resnet20.fmnist"``.
        spec: the architecture and data document of a run's ``model.json``: ``model``,
            ``task``, ``kwargs`` (builder options, classes and channels included),
            ``resize_to`` and ``data`` (class names, channels, size, mean/std).
        file: the file name, in the package's ``shipped/`` folder or in the download cache.
        sha256: the file's SHA-256 (64 hex digits); for torchvision's files the prefix their
            names publish (8-10 digits, what ``torch.hub`` checks), backed by the parameter
            count check of :func:`cnnzoo.weights.verify_file`.
        url: where the file is downloaded from; None when it ships in the package.
        size: the file's size in bytes, when known.
        storage: ``"fp32"``, ``"fp16"`` or ``"int8"`` (see :mod:`cnnzoo.weights.storage`),
            or ``"pth"`` (a torchvision state dict) or ``"onnx"`` (an int8 ONNX model).
        trained_on: the training data, in words.
        dataset: the ``--data`` value that evaluates it (``cnnzoo eval NAME``), or None.
        metrics: measured, keyed ``<split>/<name>`` as in a run's ``metrics.json``.
        license: the weights' licence.
        recipe: how they were made (a command, or the publisher's recipe URL).
        num_params: the model's parameter count, checked when a downloaded file is verified.
        config: the training run's ``config.yaml`` (validation split, seed), when shipped.
        notes: anything else worth saying (e.g. a departure in preprocessing).
    """

    name: str
    spec: dict[str, Any]
    file: str
    sha256: str
    url: str | None = None
    size: int | None = None
    storage: str = "fp32"
    trained_on: str = ""
    dataset: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    license: str = ""
    recipe: str = ""
    num_params: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def model(self) -> str:
        """The registered model the weights belong to."""
        return str(self.spec["model"])

    @property
    def tag(self) -> str:
        """What follows the model name, e.g. ``"fmnist"``."""
        return self.name.partition(".")[2]

    @property
    def task(self) -> str:
        """The model's task (``classification``, ``segmentation``...)."""
        return str(self.spec.get("task", "classification"))

    @property
    def shipped(self) -> bool:
        """True when the file is part of the installed package (no download)."""
        return self.url is None

    @property
    def classes(self) -> list[str]:
        """The class names, in output order (empty for models without classes)."""
        return list(self.spec.get("data", {}).get("class_names", []))

    @property
    def preprocessing(self) -> Preprocessing:
        """How images are prepared for the model (from the spec's ``data``)."""
        data = self.spec.get("data", {})
        size = data.get("crop") or data.get("image_size") or [0, 0]
        size = (size, size) if isinstance(size, int) else tuple(size)
        return Preprocessing(
            in_channels=int(data.get("in_channels", 3)),
            size=(int(size[0]), int(size[1])),
            resize=data.get("resize"),
            mean=tuple(data.get("mean", ())),
            std=tuple(data.get("std", ())),
            interpolation=data.get("interpolation", "bilinear"),
        )

    def transforms(self) -> Callable[[Any], Tensor]:
        """Return the preprocessing the weights expect, as a ``torchvision.transforms.v2``
        pipeline (PIL image or uint8 tensor in, normalised float tensor out)."""
        return self.preprocessing.transforms()

    def main_metric(self) -> tuple[str, float] | None:
        """Return the first recorded metric (the one ``cnnzoo weights list`` shows), or None."""
        return next(iter(self.metrics.items()), None)
