"""Optimisers and learning-rate schedules by name, shared by every task."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from cnnzoo.errors import CnnzooError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("cosine", "step", "onecycle", "none")


def param_groups(
    model: nn.Module,
    weight_decay: float,
    lr: float,
    lr_scale: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Group parameters: no weight decay for biases and norm weights (1-D tensors), and a
    learning rate of ``lr * lr_scale[name]`` per parameter name (1 when absent).

    Frozen parameters are included: they are skipped while their ``grad`` is None, and start
    learning as soon as they are unfrozen (gradual unfreezing).

    Returns:
        Optimiser parameter groups (empty groups left out).
    """
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        scale = (lr_scale or {}).get(name, 1.0)
        groups.setdefault((p.ndim > 1, scale), []).append(p)
    return [
        {"params": ps, "weight_decay": weight_decay if decays else 0.0, "lr": lr * scale}
        for (decays, scale), ps in groups.items()
    ]


def build_optimizer(
    name: str,
    params: Iterable[Any],
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """Return the optimiser ``name`` (one of :data:`OPTIMIZERS`).

    Raises:
        CnnzooError: for an unknown name.
    """
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise CnnzooError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


WARMUP = 0.25  # one-cycle: share of the run spent warming up (OneCycleLR's pct_start)
START = 1 / 25  # one-cycle: first lr / peak lr (OneCycleLR's div_factor)


def progress_factor(name: str, progress: float) -> float:
    """The learning rate as a fraction of its peak when ``progress`` (0..1) of the run is done.

    ``onecycle``: linear warm-up from 1/25 over the first quarter, then cosine annealing to 0
    (OneCycleLR's shape without its momentum cycle); ``cosine``: cosine from 1 to 0;
    ``step``: 1, then 0.1 after a third, 0.01 after two thirds; ``none``: 1.

    Raises:
        CnnzooError: for an unknown name.
    """
    p = min(1.0, max(0.0, progress))
    if name == "onecycle":
        if p < WARMUP:
            return START + (1 - START) * p / WARMUP
        return 0.5 * (1 + math.cos(math.pi * (p - WARMUP) / (1 - WARMUP)))
    if name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if name == "step":
        return 0.1 ** min(2, int(3 * p))
    if name == "none":
        return 1.0
    raise CnnzooError(f"unknown scheduler {name!r}; expected one of {', '.join(SCHEDULERS)}")


class ProgressSchedule(torch.optim.lr_scheduler.LRScheduler):
    """A learning-rate schedule of the run's progress (``step / total``) whose total can
    change while it runs: a time-boxed run (``--time``) learns how many steps fit only after
    it has measured a few, and moves the end of the schedule there (:meth:`retarget`).
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, name: str, total_steps: int, last_epoch: int = -1
    ) -> None:
        progress_factor(name, 0.0)  # an unknown name fails here
        self.name = name
        self.total = max(1, int(total_steps))
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """Return each group's lr at the current step (``last_epoch`` steps done)."""
        factor = progress_factor(self.name, self.last_epoch / self.total)
        return [base * factor for base in self.base_lrs]

    def retarget(self, total_steps: int) -> None:
        """End the schedule after ``total_steps`` steps from the start of the run (applies
        from the next step; the lr moves to the new curve at once)."""
        self.total = max(1, int(total_steps))
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def build_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    step_size: int | None = None,
    retargetable: bool = False,
) -> dict[str, Any] | None:
    """Return a Lightning ``lr_scheduler`` config stepping every batch, or None for "none".

    Args:
        name: one of :data:`SCHEDULERS`.
        total_steps: optimisation steps of the whole run.
        step_size: for "step", steps between decays by 10x (default: a third of the run).
        retargetable: return a :class:`ProgressSchedule` of the same shape, whose end can be
            moved while it runs (time-boxed training).

    Raises:
        CnnzooError: for an unknown name.
    """
    total_steps = max(1, total_steps)
    if name not in SCHEDULERS:
        raise CnnzooError(f"unknown scheduler {name!r}; expected one of {', '.join(SCHEDULERS)}")
    if retargetable and name != "none":
        return {"scheduler": ProgressSchedule(optimizer, name, total_steps), "interval": "step"}
    if name == "none" or (name == "onecycle" and total_steps < 4):
        return None  # a one-cycle needs a few steps for its warm-up and its annealing
    if name == "cosine":
        sched: Any = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    elif name == "step":
        sched = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=step_size or max(1, total_steps // 3), gamma=0.1
        )
    elif name == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=total_steps,
            pct_start=min(0.5, max(0.25, 2 / total_steps)),
        )  # fmt: skip
    return {"scheduler": sched, "interval": "step"}


def optimizer_config(
    model: nn.Module,
    hparams: Any,
    total_steps: Callable[[], int],
    lr_scale: dict[str, float] | None = None,
    retargetable: bool = False,
) -> Any:
    """Return what a LightningModule's ``configure_optimizers`` returns for these hparams.

    ``hparams`` carries optimizer, lr, momentum, nesterov, weight_decay and scheduler;
    ``total_steps`` is called only when a schedule needs the run's length; ``retargetable``
    asks for a :class:`ProgressSchedule` (a time-boxed run: :mod:`cnnzoo.tasks.budget`).
    """
    optimizer = build_optimizer(
        hparams.optimizer,
        param_groups(model, hparams.weight_decay, hparams.lr, lr_scale),
        lr=hparams.lr,
        momentum=hparams.momentum,
        nesterov=hparams.nesterov,
        weight_decay=hparams.weight_decay,
    )
    if hparams.scheduler == "none":
        return optimizer
    scheduler = build_scheduler(
        hparams.scheduler, optimizer, total_steps(), retargetable=retargetable
    )
    return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}
