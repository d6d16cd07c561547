"""Fit a registered model to a dataset: channels, classes and input size."""

from __future__ import annotations

from typing import Any

import torch

from cnnzoo.errors import CnnzooError
from cnnzoo.registry import model_info


def flush_denormals() -> None:
    """Treat subnormal floats as zero on CPU.

    Barely-trained networks in eval mode (BN statistics far from the batch's) can drive
    activations into the subnormal range, where x86 CPUs are ~100x slower; their values are
    below 1e-38 and do not change any result that matters.
    """
    torch.set_flush_denormal(True)


def fit_model_to_data(
    name: str,
    in_channels: int,
    num_classes: int,
    image_size: int,
    kwargs: dict[str, Any],
    pretrained: bool = False,
) -> tuple[dict[str, Any], int | None]:
    """Decide how ``name`` takes images of ``image_size`` pixels.

    ``kwargs`` are the user's builder options. Models whose metadata offers a small-input
    variant use it for images smaller than their minimum input size; the others get batches
    resized up to that minimum. With ``pretrained`` weights the architecture must stay the
    one the weights were made for, so instead of switching stems the batches are resized
    up to ``small_input_below``.

    Returns:
        The ``create_model`` keyword arguments, and the size to resize batches to (or None).

    Raises:
        CnnzooError: for an unknown model or a model that is not a classifier.
    """
    info = model_info(name)
    if info.task != "classification":
        raise CnnzooError(
            f"{name!r} is a {info.task} model; `cnnzoo train` here trains classifiers"
        )
    for key, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if key in kwargs and kwargs[key] != value:
            what = "channel" if key == "in_channels" else "class"
            raise CnnzooError(
                f"model option {key}={kwargs[key]} does not match the data, which has "
                f"{value} {what}{'s' if value != 1 else ''}; drop the option"
            )
    args: dict[str, Any] = {**kwargs, "num_classes": num_classes, "in_channels": in_channels}
    resize_to = None
    wants_small = info.small_input and image_size < info.small_input_below
    if wants_small and "small_input" not in kwargs:
        if pretrained:
            resize_to = info.small_input_below
        else:
            args["small_input"] = True
    if resize_to is None and image_size < info.min_input_size and not args.get("small_input"):
        resize_to = info.min_input_size
    return args, resize_to
