"""Per-layer gradient norms: how much signal reaches each weight layer in one backward pass.

The lecture's recap: the lower layers of a deep plain net are hard to train because the
gradient vanishes on its way down. :func:`gradient_norms` measures that directly: the L2 norm
of every Conv2d/Linear weight gradient, from the input layer to the output layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError


def _default_loss(output: Any, y: Tensor) -> Tensor:
    logits = output.logits if hasattr(output, "logits") else output
    if not isinstance(logits, Tensor):
        raise CnnzooError(
            f"model output of type {type(logits).__name__} is not a tensor; pass loss_fn"
        )
    return nn.functional.cross_entropy(logits, y)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Return ``(name, module)`` for every Conv2d/Linear layer, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def gradient_norms(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: Callable[[Any, Tensor], Tensor] | None = None,
) -> dict[str, float]:
    """Run one forward/backward pass and measure each weight layer's gradient.

    The model is put in train mode (BatchNorm uses batch statistics, as in training) and
    restored to its previous mode afterwards; its gradients are zeroed before and after.

    Args:
        model: the network.
        x: an input batch.
        y: the targets ``loss_fn`` expects (class indices for the default loss).
        loss_fn: ``loss_fn(output, y) -> scalar``; default cross-entropy on the output, or on
            ``output.logits`` when the output has that attribute.

    Returns:
        ``{module name: L2 norm of its weight gradient}`` for every Conv2d/Linear layer, in
        forward (registration) order; 0.0 for a layer the loss does not reach.

    Raises:
        CnnzooError: if the model has no Conv2d/Linear layer.
    """
    layers = weight_layers(model)
    if not layers:
        raise CnnzooError(f"{type(model).__name__} has no Conv2d/Linear layer to measure")
    was_training = model.training
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        with torch.enable_grad():
            loss = (loss_fn or _default_loss)(model(x), y)
            loss.backward()
        norms = {
            name: (float(m.weight.grad.detach().float().norm()) if m.weight.grad is not None
                   else 0.0)
            for name, m in layers
        }  # fmt: skip
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return norms


def mean_gradient_norms(
    model: nn.Module,
    batches: list[tuple[Tensor, Tensor]],
    loss_fn: Callable[[Any, Tensor], Tensor] | None = None,
) -> dict[str, float]:
    """Return :func:`gradient_norms` averaged over ``batches`` (same keys and order).

    Raises:
        CnnzooError: if ``batches`` is empty.
    """
    if not batches:
        raise CnnzooError("mean_gradient_norms needs at least one batch")
    total: dict[str, float] = {}
    for x, y in batches:
        for k, v in gradient_norms(model, x, y, loss_fn).items():
            total[k] = total.get(k, 0.0) + v
    return {k: v / len(batches) for k, v in total.items()}
