"""Test-time augmentation: average a classifier's logits over an image and its mirror image,
and optionally over the two of them shifted by a pixel or two.

Horizontal flips and random crops are part of the training augmentation, so the model has
learned these views; averaging them at test time removes some of the variance of a single view
(airbench's "flip test-time augmentation" and, with ``shift``, its "level 2" translations;
Jordan 2024). Flips double the cost of inference; shifts triple it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.models.base import AuxOutput

MAX_SHIFT = 4  # pixels; beyond the training crops' usual padding the views stop helping


class FlipAverage(nn.Module):
    """``model`` seen through flip (and shift) test-time augmentation.

    ``forward(x)`` returns :func:`flip_average` of ``model`` on ``x``: the mean logits of
    ``x`` and of ``x`` mirrored left-right (the main head's logits for a model with auxiliary
    classifiers), with ``shift`` > 0 half of the weight on those two views shifted diagonally
    by ``±shift`` pixels. ``state_dict`` keys are the wrapped model's, prefixed ``model.``.

    Raises:
        CnnzooError: for a shift outside 0..:data:`MAX_SHIFT`.
    """

    def __init__(self, model: nn.Module, shift: int = 0) -> None:
        super().__init__()
        check_shift(shift)
        self.model = model
        self.shift = shift

    def forward(self, x: Tensor) -> Tensor:
        """Mean logits (N, C) of the views."""
        return flip_average(self.model, x, self.shift)

    def extra_repr(self) -> str:
        return f"shift={self.shift}"


def check_shift(shift: int) -> None:
    """Refuse a TTA shift outside 0..:data:`MAX_SHIFT` in one line.

    Raises:
        CnnzooError: naming the value and the range.
    """
    if not 0 <= shift <= MAX_SHIFT:
        raise CnnzooError(f"--tta-shift {shift}: expected 0 to {MAX_SHIFT} pixels")


def shift_image(x: Tensor, d: int) -> Tensor:
    """Return ``x`` (N, C, H, W) moved ``d`` pixels down and right (up and left for ``d`` < 0),
    the uncovered border filled by repeating the edge pixels (the background of a centred
    object; the training crops' black padding on Fashion-MNIST).

    Returns:
        A tensor of ``x``'s shape.
    """
    if d == 0:
        return x
    h, w = x.shape[-2:]
    a = abs(d)
    padded = F.pad(x, (a, a, a, a), mode="replicate")
    top = a - d  # d > 0: the window starts above the image, so the content moves down
    return padded[..., top : top + h, top : top + w]


def flip_average(model: nn.Module, x: Tensor, shift: int = 0) -> Tensor:
    """Return the mean logits (N, C) of ``model`` on ``x`` and on ``x`` mirrored left-right.

    With ``shift`` > 0 the two views weigh half, and the other half is the mean of both views
    moved by ``(+shift, +shift)`` and ``(-shift, -shift)`` pixels (six views in one forward
    pass over a batch six times as large).
    """
    views = [x, x.flip(-1)]
    if shift == 0:
        return 0.5 * (_logits(model(views[0])) + _logits(model(views[1])))
    views += [shift_image(v, d) for d in (shift, -shift) for v in views]
    logits = _logits(model(torch.cat(views))).unflatten(0, (len(views), x.shape[0]))
    return 0.25 * logits[:2].sum(0) + 0.125 * logits[2:].sum(0)


def with_tta(model: nn.Module, spec: Mapping[str, Any]) -> nn.Module:
    """Return ``model`` wrapped in the test-time augmentation a run's spec records (``tta``:
    ``"hflip"``, ``tta_shift``: pixels), or ``model`` itself for a run trained without it."""
    if spec.get("tta") != "hflip":
        return model
    return FlipAverage(model, int(spec.get("tta_shift", 0)))


def _logits(out: Tensor | AuxOutput) -> Tensor:
    return out.logits if isinstance(out, AuxOutput) else out
