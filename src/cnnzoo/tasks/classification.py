"""Image classification as a LightningModule: loss, metrics and the optimisation step.

The lecture minimises the negative log-likelihood of the true class, written three ways:
NLL of log-softmax outputs, cross-entropy of logits, and KL divergence to a (soft) target
distribution — equal for one-hot targets, different once targets are soft (label smoothing,
distillation). GoogLeNet's auxiliary classifiers add their losses at weight 0.3 (Szegedy et
al. 2015, section 5).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from cnnzoo.errors import CnnzooError, NonFiniteLossError
from cnnzoo.models.base import AuxOutput
from cnnzoo.tasks.budget import budgeted
from cnnzoo.tasks.finetune import HEAD, parameter_stages
from cnnzoo.tasks.optim import optimizer_config
from cnnzoo.tasks.tta import flip_average

LOSSES = ("cross_entropy", "nll", "kl")


def classification_loss(
    logits: Tensor, target: Tensor, loss: str = "cross_entropy", label_smoothing: float = 0.0
) -> Tensor:
    """Return the mean loss of ``logits`` (N, C) against class indices (N,) or soft targets (N, C).

    Raises:
        CnnzooError: for an unknown loss name.
    """
    num_classes = logits.shape[1]
    logits = logits.float()
    if loss == "cross_entropy":
        return F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    if target.ndim == 1:
        soft = F.one_hot(target, num_classes).float()
        soft = soft * (1 - label_smoothing) + label_smoothing / num_classes
    else:
        soft = target.float()
    log_probs = F.log_softmax(logits, dim=1)
    if loss == "nll":
        # NLL of the true class; with smoothing, the expected NLL under the smoothed target.
        if target.ndim == 1 and label_smoothing == 0:
            return F.nll_loss(log_probs, target)
        return -(soft * log_probs).sum(1).mean()
    if loss == "kl":
        return F.kl_div(log_probs, soft, reduction="batchmean")
    raise CnnzooError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")


class ClassificationTask(L.LightningModule):
    """Train and evaluate any registered classifier.

    Args:
        model: the network (``forward`` returns logits or :class:`AuxOutput`).
        num_classes: number of classes (for the metrics).
        loss: one of :data:`LOSSES`.
        label_smoothing: mass spread uniformly over all classes.
        aux_weight: weight of each auxiliary classifier's loss (0.3 in GoogLeNet).
        optimizer, lr, momentum, nesterov, weight_decay: see :mod:`cnnzoo.tasks.optim`.
        scheduler: "cosine", "step", "onecycle" or "none", stepped every batch.
        channels_last: keep activations NHWC (faster convolutions on CPU and GPU).
        backbone_lr_scale: learning-rate factor for every parameter outside the head
            (fine-tuning with discriminative learning rates).
        tta: validate and test on the mean logits of each image and its mirror image
            (:func:`~cnnzoo.tasks.tta.flip_average`); training is unchanged.
        tta_shift: with ``tta``, also average both views shifted by ± this many pixels.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        loss: str = "cross_entropy",
        label_smoothing: float = 0.0,
        aux_weight: float = 0.3,
        optimizer: str = "sgd",
        lr: float = 0.05,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 5e-4,
        scheduler: str = "onecycle",
        channels_last: bool = False,
        backbone_lr_scale: float = 1.0,
        tta: bool = False,
        tta_shift: int = 0,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise CnnzooError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.last_confusion: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.hparams.tta and not self.training:
            return flip_average(self.model, x, self.hparams.tta_shift)
        out = self.model(x)
        return out.logits if isinstance(out, AuxOutput) else out

    def _loss(self, out: Tensor | AuxOutput, y: Tensor) -> tuple[Tensor, Tensor]:
        hp = self.hparams
        logits = out.logits if isinstance(out, AuxOutput) else out
        loss = classification_loss(logits, y, hp.loss, hp.label_smoothing)
        if isinstance(out, AuxOutput):
            for aux in out.aux:
                loss = loss + hp.aux_weight * classification_loss(
                    aux, y, hp.loss, hp.label_smoothing
                )
        return loss, logits

    def _input(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def training_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(loss, logits)`` of a training batch (``x`` already in the model's
        memory format); subclasses change the training objective here."""
        return self._loss(self.model(x), y)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss, logits = self.training_loss(self._input(x), y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(self.global_step, self.current_epoch, loss.item())
        hard = y if y.ndim == 1 else y.argmax(1)
        self.train_acc(logits.detach(), hard)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=False)
        self.log("train/accuracy", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(self._input(x))
        self.val_acc(logits, y)
        loss = classification_loss(logits, y, self.hparams.loss, self.hparams.label_smoothing)
        self.log("val/loss", loss, prog_bar=False, sync_dist=True)
        self.log("val/accuracy", self.val_acc, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(self._input(x))
        self.test_acc(logits, y)
        self.test_confusion(logits, y)
        loss = classification_loss(logits, y, self.hparams.loss, self.hparams.label_smoothing)
        self.log("test/loss", loss, sync_dist=True)
        self.log("test/accuracy", self.test_acc)

    def on_test_epoch_end(self) -> None:
        self.last_confusion = self.test_confusion.compute().cpu()
        self.test_confusion.reset()

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        lr_scale = None
        if hp.backbone_lr_scale != 1.0:
            stages = parameter_stages(self.model)
            lr_scale = {n: hp.backbone_lr_scale for n, s in stages.items() if s != HEAD}
        return optimizer_config(
            self.model, hp, lambda: int(self.trainer.estimated_stepping_batches), lr_scale,
            retargetable=budgeted(self._trainer),
        )  # fmt: skip
