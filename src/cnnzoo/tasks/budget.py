"""Time-boxed training (``cnnzoo train --time MIN``, ultralytics' ``time=``).

A run given minutes instead of epochs does not know how many steps fit until it has taken
some. :class:`TimeBudget` measures, then fits the number of epochs *and* the learning-rate
schedule into the budget, so that the schedule has annealed when time is up (a plain
``--max-time`` only cuts the run short, with the learning rate wherever it was):

1. during the first epoch, at a few points (3, 10, 25 and 50 % of the budget), it estimates
   an epoch's time from the seconds per step, plus :data:`VALIDATION_RESERVE` for the
   validation pass it has not seen yet;
2. after every epoch it re-estimates from the mean measured epoch (validation included);
3. each estimate sets the number of epochs, ``round(remaining / epoch)`` more, and moves the
   end of the :class:`~cnnzoo.tasks.optim.ProgressSchedule` to the last step of the last
   epoch. The last decision is made one epoch ahead, so the run ends within about half an
   epoch of the budget, with the learning rate at the schedule's final value.

When one epoch is longer than the budget, the run stops after the steps that fit (the
schedule ends there), and the last epoch is left unfinished. In a distributed run rank 0's
measurement decides, broadcast to every rank.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from cnnzoo.errors import CnnzooError
from cnnzoo.tasks.optim import ProgressSchedule

VALIDATION_RESERVE = 0.15  # share added to the first epoch's estimate for its validation
PROBES = (0.03, 0.10, 0.25, 0.50)  # budget shares at which the first epoch is estimated
STEP_RESERVE = 0.97  # an epoch longer than the budget: schedule this share of the steps


def fit_epochs(budget: float, elapsed: float, epochs_done: int, epoch_seconds: float) -> int:
    """Return how many epochs the run should have in all: those done, and as many more as
    fit in the remaining time (rounded to the nearest, at least the ones done).

    Args:
        budget: seconds the run may take.
        elapsed: seconds since training started.
        epochs_done: whole epochs finished (0 during the first).
        epoch_seconds: the measured or estimated seconds per epoch.

    Returns:
        The total number of epochs, at least ``max(1, epochs_done)``.
    """
    more = round(max(0.0, budget - elapsed) / max(epoch_seconds, 1e-9))
    return max(1, epochs_done + more, epochs_done)


def budgeted(trainer: L.Trainer | None) -> bool:
    """Whether ``trainer`` runs under a :class:`TimeBudget` (its tasks then build a
    :class:`~cnnzoo.tasks.optim.ProgressSchedule`)."""
    if trainer is None:
        return False
    return any(isinstance(cb, TimeBudget) for cb in trainer.callbacks)  # type: ignore[attr-defined]


class TimeBudget(Callback):
    """Fit the epochs and the learning-rate schedule of a run into ``minutes`` of training.

    Attributes:
        decisions: ``(seconds, epochs, total_steps)`` for every estimate that changed the
            plan, in order (the run directory's ``budget.json`` lists them).
        clock: the time source, seconds (a test gives a simulated one).
    """

    def __init__(self, minutes: float, clock: Callable[[], float] = time.perf_counter) -> None:
        if not minutes > 0:
            raise CnnzooError(f"--time must be a positive number of minutes, got {minutes}")
        self.budget = 60.0 * minutes
        self.clock = clock
        self.decisions: list[tuple[float, int, int]] = []
        self._start = 0.0
        self._first_step = 0
        self._first_epoch = 0
        self._probes = list(PROBES)
        self._schedules: list[ProgressSchedule] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self.clock()
        self._first_step = trainer.global_step
        self._first_epoch = trainer.current_epoch
        self._schedules = [
            c.scheduler
            for c in trainer.lr_scheduler_configs
            if isinstance(c.scheduler, ProgressSchedule)
        ]

    def _elapsed(self, trainer: L.Trainer) -> float:
        return float(trainer.strategy.broadcast(self.clock() - self._start, src=0))

    def _apply(self, trainer: L.Trainer, elapsed: float, epochs: int, steps: int) -> None:
        per_epoch = int(trainer.num_training_batches)
        trainer.fit_loop.max_epochs = epochs
        total = epochs * per_epoch if steps <= 0 else steps
        if steps > 0:  # an epoch longer than the budget: stop after the steps that fit
            trainer.fit_loop.epoch_loop.max_steps = steps
        for schedule in self._schedules:
            schedule.retarget(total)
        if not self.decisions or self.decisions[-1][1:] != (epochs, total):
            self.decisions.append((round(elapsed, 2), epochs, total))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        if trainer.current_epoch != self._first_epoch or not self._probes:
            return
        elapsed = self._elapsed(trainer)
        if elapsed < self._probes[0] * self.budget:
            return
        while self._probes and elapsed >= self._probes[0] * self.budget:
            self._probes.pop(0)
        done = trainer.global_step - self._first_step
        per_epoch = int(trainer.num_training_batches)
        if done < 1 or per_epoch < 1:
            return
        step_seconds = elapsed / done
        remaining_steps = (self.budget - elapsed) / step_seconds
        if done + remaining_steps < per_epoch:  # the budget ends inside this epoch
            steps = self._first_step + int(STEP_RESERVE * (done + remaining_steps))
            self._apply(trainer, elapsed, self._first_epoch + 1, max(steps, trainer.global_step))
            return
        epoch = step_seconds * per_epoch * (1 + VALIDATION_RESERVE)
        self._apply(trainer, elapsed, self._first_epoch + fit_epochs(self.budget, 0.0, 0, epoch), 0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._probes = []  # from now on the measured epochs decide
        if trainer.fit_loop.epoch_loop.max_steps > 0:
            return  # the budget ended inside the first epoch: its steps stand
        elapsed = self._elapsed(trainer)
        done = trainer.current_epoch + 1 - self._first_epoch
        epochs = fit_epochs(self.budget, elapsed, done, elapsed / done)
        self._apply(trainer, elapsed, self._first_epoch + epochs, 0)

    def summary(self, trainer: L.Trainer) -> dict[str, Any]:
        """Return what the run records in ``budget.json``: the budget, the seconds the fit
        took, the epochs and steps it ran, the final learning rate, and every decision."""
        lrs = [g["lr"] for s in self._schedules for g in s.optimizer.param_groups]
        return {
            "budget_seconds": self.budget,
            "seconds": round(self.clock() - self._start, 2),
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            "final_lr": lrs[0] if lrs else None,
            "decisions": [
                {"at_seconds": t, "epochs": e, "total_steps": n} for t, e, n in self.decisions
            ],
        }

    def state_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "decisions": [list(d) for d in self.decisions]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.decisions = [tuple(d) for d in state_dict.get("decisions", [])]  # type: ignore[misc]
