"""Clocks shared by the experiments: inference time per image, and a training budget in
seconds (:class:`TrainClock`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn


def inference_ms(
    model: nn.Module,
    x: Tensor,
    precision: str = "32-true",
    channels_last: bool = False,
    repeats: int = 5,
    run: Callable[[nn.Module, Tensor], Any] | None = None,
) -> tuple[float, Any]:
    """Time ``model`` on the batch ``x`` in eval mode, after one warm-up pass.

    Subnormal floats are flushed to zero first (barely trained nets hit them, and they are
    ~100x slower on x86). bf16 autocast is used when ``precision`` starts with "bf16".

    Args:
        run: what to time, ``run(model, x)``; default ``model(x)`` (e.g. a detector's forward
            pass plus its decoding instead).

    Returns:
        ``(median milliseconds per image over repeats, the output of the last pass)``; a
        tensor output is returned as float.
    """
    torch.set_flush_denormal(True)
    step = run or (lambda m, batch: m(batch))
    model.eval()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with (
        torch.inference_mode(),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.startswith("bf16")),
    ):
        out = step(model, x)
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            out = step(model, x)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / len(x), out.float() if isinstance(out, Tensor) else out


class TrainClock(Callback):
    """Measure training seconds; with ``budget_s``, stop training once it is spent.

    With a budget the learning rate also decays linearly with the elapsed time, from each
    group's initial rate to ``final_fraction`` of it, so that every model ends its budget
    annealed whatever its step time (use it with ``scheduler="none"``).

    Attributes:
        seconds: training wall time (first batch to the end of training).
        steps: optimisation steps done.
    """

    def __init__(self, budget_s: float | None = None, final_fraction: float = 0.05) -> None:
        self.budget_s = budget_s
        self.final_fraction = final_fraction
        self.seconds = 0.0
        self.steps = 0
        self._start = 0.0
        self._base: list[float] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._base = [g["lr"] for g in trainer.optimizers[0].param_groups]

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.budget_s is None:
            return
        done = min(1.0, (time.perf_counter() - self._start) / self.budget_s)
        scale = 1 - (1 - self.final_fraction) * done
        for group, base in zip(trainer.optimizers[0].param_groups, self._base, strict=True):
            group["lr"] = base * scale

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.steps = trainer.global_step
        if self.budget_s is not None and time.perf_counter() - self._start >= self.budget_s:
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = time.perf_counter() - self._start
        self.steps = trainer.global_step
