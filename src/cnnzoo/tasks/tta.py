"""Test-time augmentation: average a classifier's logits over an image and its mirror image.

Horizontal flips are part of the training augmentation, so the model has learned both views;
averaging them at test time removes some of the variance of a single view (airbench's
"flip test-time augmentation", Jordan 2024). It doubles the cost of inference.
"""

from __future__ import annotations

from torch import Tensor, nn

from cnnzoo.models.base import AuxOutput


class FlipAverage(nn.Module):
    """``model`` seen through flip test-time augmentation.

    ``forward(x)`` returns the mean of the logits of ``x`` and of ``x`` mirrored left-right
    (the main head's logits for a model with auxiliary classifiers). ``state_dict`` keys are
    the wrapped model's, prefixed ``model.``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """Mean logits (N, C) of the two views."""
        return flip_average(self.model, x)


def flip_average(model: nn.Module, x: Tensor) -> Tensor:
    """Return the mean logits (N, C) of ``model`` on ``x`` and on ``x`` mirrored left-right."""
    return 0.5 * (_logits(model(x)) + _logits(model(x.flip(-1))))


def _logits(out: Tensor | AuxOutput) -> Tensor:
    return out.logits if isinstance(out, AuxOutput) else out
