"""Optimisers and learning-rate schedules by name, shared by every task."""

from __future__ import annotations

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


def build_scheduler(
    name: str, optimizer: torch.optim.Optimizer, total_steps: int, step_size: int | None = None
) -> dict[str, Any] | None:
    """Return a Lightning ``lr_scheduler`` config stepping every batch, or None for "none".

    Args:
        name: one of :data:`SCHEDULERS`.
        total_steps: optimisation steps of the whole run.
        step_size: for "step", steps between decays by 10x (default: a third of the run).

    Raises:
        CnnzooError: for an unknown name.
    """
    total_steps = max(1, total_steps)
    if name not in SCHEDULERS:
        raise CnnzooError(f"unknown scheduler {name!r}; expected one of {', '.join(SCHEDULERS)}")
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
) -> Any:
    """Return what a LightningModule's ``configure_optimizers`` returns for these hparams.

    ``hparams`` carries optimizer, lr, momentum, nesterov, weight_decay and scheduler;
    ``total_steps`` is called only when a schedule needs the run's length.
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
    scheduler = build_scheduler(hparams.scheduler, optimizer, total_steps())
    return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}
