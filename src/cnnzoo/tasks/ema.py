"""An exponential moving average (EMA) of the weights, evaluated and saved instead of them.

Polyak averaging as modern detectors train (YOLOv5's ``ModelEMA``): after every optimiser step
``ema = d ema + (1 - d) w`` with a decay that ramps up, ``d_n = decay (1 - exp(-n / ramp))``
after ``n`` updates, so the average follows the fast early changes and then smooths the
noise of the last steps. Buffers (BatchNorm statistics) are averaged too.

Built on Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` (which keeps a
``torch.optim.swa_utils.AveragedModel``, swaps it in for validation, saves it in checkpoints
and copies it into the model when training ends) and torch's
:func:`~torch.optim.swa_utils.get_ema_multi_avg_fn` (the update itself); only the ramp is
ours.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor
from torch.optim.swa_utils import get_ema_multi_avg_fn

from cnnzoo.errors import CnnzooError

EMA_RAMP = 100
"""Updates over which the decay ramps up (``1 - 1/e`` of ``decay`` after this many)."""


def ramped_decay(decay: float, updates: int, ramp: float = EMA_RAMP) -> float:
    """Return the decay used for the ``updates``-th update: ``decay (1 - exp(-updates / ramp))``."""
    return decay * (1 - math.exp(-updates / ramp))


def ramped_ema_fn(
    decay: float, ramp: float = EMA_RAMP
) -> Callable[[list[Tensor], list[Tensor], Tensor | int], None]:
    """Return an ``AveragedModel`` ``multi_avg_fn``: torch's EMA update with the decay
    :func:`ramped_decay` of the number of updates already averaged.

    Raises:
        CnnzooError: for a decay outside (0, 1) or a ramp <= 0.
    """
    if not 0 < decay < 1:
        raise CnnzooError(f"--ema-decay {decay} is out of range: expected 0 < decay < 1")
    if ramp <= 0:
        raise CnnzooError(f"the EMA ramp must be > 0 updates, got {ramp}")

    def update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor | int) -> None:
        get_ema_multi_avg_fn(ramped_decay(decay, int(num_averaged), ramp))(
            averaged, current, num_averaged
        )

    return update


class EMA(WeightAveraging):
    """Keep an EMA of the LightningModule's weights, updated after every optimiser step;
    validation, checkpoints, the test after training and the saved model use it.

    Args:
        decay: the decay once ramped up (e.g. 0.999).
        ramp: updates over which it ramps up.

    Raises:
        CnnzooError: for a decay outside (0, 1).
    """

    def __init__(self, decay: float, ramp: float = EMA_RAMP) -> None:
        super().__init__(use_buffers=True, multi_avg_fn=ramped_ema_fn(decay, ramp))
        self.decay = decay
        self.ramp = ramp

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """After every optimiser step (never at an epoch's end)."""
        return step_idx is not None

    def summary(self) -> dict[str, Any]:
        """What the run records: decay, ramp and the number of updates."""
        model = self._average_model
        updates = int(model.n_averaged) if model is not None else 0
        return {"decay": self.decay, "ramp": self.ramp, "updates": updates}
