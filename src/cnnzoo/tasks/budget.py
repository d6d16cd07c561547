"""Time-boxed training (``cnnzoo train --time MIN``, ultralytics' ``time=``).

A run given minutes instead of epochs does not know how many steps fit until it has taken
some. :class:`TimeBudget` measures, then fits the number of epochs *and* the learning-rate
schedule into the budget, so that the schedule has annealed when time is up (a plain
``--max-time`` only cuts the run short, with the learning rate wherever it was):

1. during the first epoch, at a few points (3, 10, 25 and 50 % of the budget), it estimates
   an epoch's time from the seconds per step, plus :data:`VALIDATION_RESERVE` for the
   validation pass it has not seen yet;
2. after every epoch it re-estimates from the mean measured epoch (validation included);
3. each estimate plans the rest of the run (:func:`plan_run`): whole epochs when a whole
   number of them ends within :data:`SLACK` of the budget, otherwise as many steps as fit,
   the last epoch stopping part-way (long epochs: a 15-minute budget of 6-minute epochs
   becomes 2.5 epochs, not 2 or 3); and it moves the end of the
   :class:`~cnnzoo.tasks.optim.ProgressSchedule` to the plan's last step. So the run ends
   close to the budget with the learning rate at the schedule's final value.

In a distributed run rank 0's clock decides, broadcast to every rank. A resumed run
(``--resume``, or a ``torchrun`` restart) counts the seconds, steps and epochs of the runs
before it, as saved in the checkpoint: the budget is for the whole run, however often it was
interrupted (a checkpoint written before this was kept gives the whole budget again from
where it resumed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from cnnzoo.errors import CnnzooError
from cnnzoo.tasks.optim import ProgressSchedule

VALIDATION_RESERVE = 0.15  # share added to the first epoch's estimate for its validation
PROBES = (0.03, 0.10, 0.25, 0.50)  # budget shares at which the first epoch is estimated
SLACK = 0.05  # whole epochs are kept when they end this close to the budget (share of it)


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


@dataclass(frozen=True)
class Plan:
    """How long a run should be, counted from where it started (or resumed).

    Attributes:
        epochs: epochs in all (the last one partial when ``partial``).
        steps: optimisation steps in all: the learning-rate schedule ends there.
        partial: stop after ``steps``, inside the last epoch.
    """

    epochs: int
    steps: int
    partial: bool


def plan_run(
    budget: float,
    elapsed: float,
    steps_done: int,
    epochs_done: int,
    per_epoch: int,
    epoch_seconds: float,
    step_seconds: float,
) -> Plan:
    """Plan the rest of a run: whole epochs when they end within :data:`SLACK` of the budget,
    otherwise as many steps as fit (the last epoch then stops part-way).

    Args:
        budget: seconds the run may take.
        elapsed: seconds since training started.
        steps_done: optimisation steps taken.
        epochs_done: whole epochs finished (0 during the first).
        per_epoch: steps per epoch.
        epoch_seconds: measured (or estimated) seconds per epoch, validation included.
        step_seconds: seconds per step (validation amortised over the steps, once measured).

    Returns:
        The :class:`Plan`.
    """
    remaining = max(0.0, budget - elapsed)
    whole = fit_epochs(budget, elapsed, epochs_done, epoch_seconds)
    if abs((whole - epochs_done) * epoch_seconds - remaining) <= SLACK * budget:
        return Plan(whole, whole * per_epoch, False)
    total = steps_done + int(remaining / max(step_seconds, 1e-9))
    return Plan(max(1, math.ceil(total / per_epoch)), total, True)


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
        self._previous = 0.0  # seconds of the runs before a resume
        self._resumed = False
        self._limits: tuple[int, int] | None = None  # the plan's (max_epochs, max_steps)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self.clock()
        if not self._resumed:  # else the first step and epoch of the first run are kept
            self._first_step = trainer.global_step
            self._first_epoch = trainer.current_epoch
        self._set_limits(trainer)  # a resumed run: the plan it had when it was saved
        self._schedules = [
            c.scheduler
            for c in trainer.lr_scheduler_configs
            if isinstance(c.scheduler, ProgressSchedule)
        ]

    def _elapsed(self, trainer: L.Trainer) -> float:
        elapsed = self._previous + self.clock() - self._start
        return float(trainer.strategy.broadcast(elapsed, src=0))

    def _apply(self, trainer: L.Trainer, elapsed: float, plan: Plan) -> None:
        total = self._first_step + plan.steps
        self._limits = (self._first_epoch + plan.epochs, total if plan.partial else -1)
        self._set_limits(trainer)
        for schedule in self._schedules:
            schedule.retarget(total)
        decision = (round(elapsed, 2), self._first_epoch + plan.epochs, total)
        if not self.decisions or self.decisions[-1][1:] != decision[1:]:
            self.decisions.append(decision)

    def _set_limits(self, trainer: L.Trainer) -> None:
        if self._limits is not None:
            trainer.fit_loop.max_epochs, trainer.fit_loop.epoch_loop.max_steps = self._limits

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
        step = elapsed / done
        epoch = step * per_epoch * (1 + VALIDATION_RESERVE)
        self._apply(
            trainer, elapsed, plan_run(self.budget, elapsed, done, 0, per_epoch, epoch, step)
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._probes = []  # from now on the measured epochs decide
        if self.decisions and self.decisions[-1][2] <= trainer.global_step:
            return  # the plan ends here and the schedule has annealed: stop, do not extend
        elapsed = self._elapsed(trainer)
        done = trainer.current_epoch + 1 - self._first_epoch
        steps = trainer.global_step - self._first_step
        per_epoch = int(trainer.num_training_batches)
        plan = plan_run(self.budget, elapsed, steps, done, per_epoch, elapsed / done,
                        elapsed / max(steps, 1))  # fmt: skip
        self._apply(trainer, elapsed, plan)

    def summary(self, trainer: L.Trainer) -> dict[str, Any]:
        """Return what the run records in ``budget.json``: the budget, the seconds the fit
        took, the epochs and steps it ran, the final learning rate, and every decision."""
        lrs = [g["lr"] for s in self._schedules for g in s.optimizer.param_groups]
        return {
            "budget_seconds": self.budget,
            "seconds": round(self._previous + self.clock() - self._start, 2),
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            "final_lr": lrs[0] if lrs else None,
            "decisions": [
                {"at_seconds": t, "epochs": e, "total_steps": n} for t, e, n in self.decisions
            ],
        }

    def state_dict(self) -> dict[str, Any]:
        """Return the budget, the decisions, and where the run stands: the seconds so far,
        the step and epoch it started at and the first-epoch probes still to come (a resumed
        run goes on counting from them)."""
        return {
            "budget": self.budget,
            "decisions": [list(d) for d in self.decisions],
            "seconds": self._previous + self.clock() - self._start,
            "first_step": self._first_step,
            "first_epoch": self._first_epoch,
            "probes": list(self._probes),
            "limits": list(self._limits) if self._limits is not None else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the run ``state_dict`` describes (see :meth:`state_dict`)."""
        self.decisions = [tuple(d) for d in state_dict.get("decisions", [])]  # type: ignore[misc]
        if "seconds" in state_dict:
            self._previous = float(state_dict["seconds"])
            self._first_step = int(state_dict["first_step"])
            self._first_epoch = int(state_dict["first_epoch"])
            self._probes = [float(p) for p in state_dict["probes"]]
            limits = state_dict.get("limits")
            self._limits = (int(limits[0]), int(limits[1])) if limits else None
            self._resumed = True
