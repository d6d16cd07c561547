"""Fine-tuning strategies: which parameters learn, at which rate, and when.

The lecture's transfer learning: a feature extractor trained on one task is reused on a
smaller one. How much of it to retrain is the choice this module makes concrete:

- ``head``: only the classifier learns; the backbone is frozen, BN statistics included
  (a linear probe on the pooled features, for models whose head is a single layer).
- ``partial``: the last ``unfreeze`` stages and the head learn.
- ``full``: everything learns; the backbone at ``lr * backbone_lr_scale`` (discriminative
  learning rates).
- ``gradual``: the head first, then one more stage from the top every ``unfreeze_every``
  epochs (Howard & Ruder, "Universal Language Model Fine-tuning", ACL 2018).

Stages come from the model's ``feature_info``, so every classifier is handled alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightning as L
from torch import nn

from cnnzoo.errors import CnnzooError

STRATEGIES = ("head", "partial", "full", "gradual")
HEAD = "head"


@dataclass(frozen=True)
class FineTunePlan:
    """A fine-tuning strategy and its settings (see the module docstring)."""

    strategy: str = "full"
    unfreeze: int = 1
    backbone_lr_scale: float = 1.0
    unfreeze_every: int = 1

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise CnnzooError(
                f"unknown strategy {self.strategy!r}; expected one of {', '.join(STRATEGIES)}"
            )
        if self.unfreeze < 0 or self.unfreeze_every < 1:
            raise CnnzooError("--unfreeze must be >= 0 and --unfreeze-every >= 1")
        if self.backbone_lr_scale < 0:
            raise CnnzooError(f"--backbone-lr-scale must be >= 0, got {self.backbone_lr_scale}")


def parameter_stages(model: nn.Module) -> dict[str, str]:
    """Assign every parameter name to a stage name (``stage0`` …) or to ``"head"``.

    A parameter belongs to the stage whose ``feature_info`` module contains it; parameters
    before the first stage join the first, parameters between stages join the next one, and
    everything after the last stage (pooling, classifier, auxiliary heads) is the head.

    Raises:
        CnnzooError: for a model without ``feature_info``.
    """
    info = getattr(model, "feature_info", None)
    if not info:
        raise CnnzooError(f"{type(model).__name__} has no feature_info: cannot find its stages")
    prefixes = [s.module + "." for s in info]
    names = [n for n, _ in model.named_parameters()]
    last_of = {}
    for i, prefix in enumerate(prefixes):
        hits = [j for j, n in enumerate(names) if n.startswith(prefix)]
        if hits:
            last_of[i] = max(hits)
    out: dict[str, str] = {}
    for j, name in enumerate(names):
        stage = next((i for i, p in enumerate(prefixes) if name.startswith(p)), None)
        if stage is None:  # between stages: the first stage that ends after this parameter
            stage = next((i for i in sorted(last_of) if last_of[i] > j), None)
        is_aux = name.startswith("aux")
        out[name] = HEAD if stage is None or is_aux else f"stage{stage}"
    return out


@dataclass
class TrainableReport:
    """Which parameters learn under a plan (written to the run's ``trainable.json``)."""

    strategy: str
    trainable_params: int
    frozen_params: int
    stages: dict[str, bool] = field(default_factory=dict)  # stage -> trainable

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict."""
        return {
            "strategy": self.strategy,
            "trainable_params": self.trainable_params,
            "frozen_params": self.frozen_params,
            "stages": self.stages,
        }


def trainable_stages(stage_names: list[str], plan: FineTunePlan, epoch: int = 0) -> set[str]:
    """Return the stages (and ``"head"``) that learn at ``epoch`` under ``plan``."""
    backbone = [s for s in stage_names if s != HEAD]
    if plan.strategy == "full":
        return set(stage_names)
    if plan.strategy == "head":
        count = 0
    elif plan.strategy == "partial":
        count = plan.unfreeze
    else:  # gradual
        count = epoch // plan.unfreeze_every
    return {HEAD} | set(backbone[len(backbone) - min(count, len(backbone)) :])


def apply_plan(model: nn.Module, plan: FineTunePlan, epoch: int = 0) -> TrainableReport:
    """Set ``requires_grad`` per stage and put frozen stages' BatchNorm in eval mode.

    Frozen BN layers keep their running statistics (and affine parameters) from the source
    task, so a frozen backbone computes exactly what it computed before fine-tuning.

    Returns:
        The :class:`TrainableReport` of the model after the change.
    """
    stage_of = parameter_stages(model)
    ordered = list(dict.fromkeys(stage_of.values()))
    learning = trainable_stages(ordered, plan, epoch)
    trainable = frozen = 0
    for name, param in model.named_parameters():
        param.requires_grad_(stage_of[name] in learning)
        if param.requires_grad:
            trainable += param.numel()
        else:
            frozen += param.numel()
    for name, module in model.named_modules():
        is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
        if is_bn and stage_of.get(f"{name}.weight", HEAD) not in learning:
            module.eval()
    return TrainableReport(
        strategy=plan.strategy,
        trainable_params=trainable,
        frozen_params=frozen,
        stages={s: s in learning for s in ordered},
    )


class FineTuning(L.Callback):
    """Re-apply a :class:`FineTunePlan` at the start of every training epoch.

    Lightning puts the whole model back in training mode each epoch (and after validation);
    this callback freezes BN statistics again and, for ``gradual``, unfreezes the next stage.
    """

    def __init__(self, plan: FineTunePlan, model: nn.Module) -> None:
        self.plan = plan
        self.model = model
        self.history: list[TrainableReport] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run resumed part-way through an epoch does not start that epoch again
        apply_plan(self.model, self.plan, trainer.current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.history.append(apply_plan(self.model, self.plan, trainer.current_epoch))
