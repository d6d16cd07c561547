"""Semantic segmentation as a LightningModule: per-pixel classification.

The lecture: "Semantic segmentation -> per-pixel classification -> we can use similar loss
functions" — the cross-entropy of classification, averaged over every labelled pixel (255 =
ignore), optionally class-weighted, optionally plus a soft Dice loss. PSPNet's auxiliary head
adds its loss at weight 0.4 (Zhao et al. 2017, sec. 3.3). Metrics: mean IoU, per-class IoU
and pixel accuracy, from one torchmetrics confusion matrix, logged as ``val/miou``, ``test/miou``, …
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassConfusionMatrix

from cnnzoo.errors import NonFiniteLossError
from cnnzoo.models.base import AuxOutput
from cnnzoo.tasks.budget import budgeted
from cnnzoo.tasks.optim import optimizer_config

IGNORE_INDEX = 255


def dice_loss(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Return 1 - the soft Dice coefficient averaged over classes, ignoring ``ignore_index``.

    ``logits`` are (N, C, H, W), ``target`` (N, H, W) class indices.
    """
    num_classes = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)
    probs = logits.float().softmax(1) * valid
    one_hot = F.one_hot(target.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2)
    one_hot = one_hot * valid
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    total = probs.sum(dims) + one_hot.sum(dims)
    return 1 - ((2 * intersection + 1) / (total + 1)).mean()


def segmentation_loss(
    logits: Tensor,
    target: Tensor,
    class_weights: Tensor | None = None,
    dice_weight: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Return the pixel-wise cross-entropy (+ ``dice_weight`` x Dice) of (N, C, H, W) logits."""
    loss = F.cross_entropy(logits.float(), target, weight=class_weights, ignore_index=ignore_index)
    if dice_weight:
        loss = loss + dice_weight * dice_loss(logits, target, ignore_index)
    return loss


def iou_from_confusion(confusion: Tensor) -> Tensor:
    """Return the IoU of each class from a (true, predicted) pixel confusion matrix.

    IoU = TP / (TP + FP + FN); a class that is neither in the labels nor predicted has no
    IoU (NaN), so mean IoU is ``nanmean`` over the classes that occur (as in mmsegmentation).
    """
    confusion = confusion.double()
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return (tp / union).where(union > 0, torch.nan).float()


class SegmentationTask(L.LightningModule):
    """Train and evaluate any registered segmentation model.

    Args:
        model: ``forward`` returns (N, C, H, W) logits, or :class:`AuxOutput` in training.
        num_classes: number of classes (255 in targets is ignored).
        class_weights: optional per-class cross-entropy weights.
        dice_weight: weight of the Dice loss added to the cross-entropy (0: none).
        aux_weight: weight of auxiliary heads' losses (PSPNet: 0.4).
        optimizer, lr, momentum, nesterov, weight_decay, scheduler: as for classification.
        channels_last: keep activations NHWC (faster convolutions on CPU and GPU).

    Attributes:
        last_iou: per-class IoU of the last validation or test epoch (CPU tensor).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        class_weights: Sequence[float] | None = None,
        dice_weight: float = 0.0,
        aux_weight: float = 0.4,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 1e-4,
        scheduler: str = "onecycle",
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        weights = torch.tensor(class_weights, dtype=torch.float) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.val_confusion = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX)
        self.test_confusion = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX)
        self.last_iou: Tensor | None = None
        self.last_confusion: Tensor | None = None

    def _input(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(self._input(x))
        return out.logits if isinstance(out, AuxOutput) else out

    def _loss(self, out: Tensor | AuxOutput, y: Tensor) -> Tensor:
        hp = self.hparams
        logits = out.logits if isinstance(out, AuxOutput) else out
        loss = segmentation_loss(logits, y, self.class_weights, hp.dice_weight)
        if isinstance(out, AuxOutput):
            for aux in out.aux:
                loss = loss + hp.aux_weight * segmentation_loss(aux, y, self.class_weights)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self._loss(self.model(self._input(x)), y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(self.global_step, self.current_epoch, loss.item())
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], split: str) -> None:
        x, y = batch
        logits = self(x)
        loss = segmentation_loss(logits, y, self.class_weights, self.hparams.dice_weight)
        getattr(self, f"{split}_confusion").update(logits.argmax(1), y)
        self.log(f"{split}/loss", loss, sync_dist=True)

    def _log_epoch(self, split: str) -> None:
        metric = getattr(self, f"{split}_confusion")
        confusion = metric.compute()
        metric.reset()
        iou = iou_from_confusion(confusion)
        self.log(f"{split}/miou", iou.nanmean(), prog_bar=True)
        self.log(
            f"{split}/pixel_accuracy", confusion.diagonal().sum() / confusion.sum().clamp(min=1)
        )
        self.last_iou, self.last_confusion = iou.cpu(), confusion.cpu()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> Any:
        return optimizer_config(
            self.model, self.hparams, lambda: int(self.trainer.estimated_stepping_batches),
            retargetable=budgeted(self._trainer),
        )  # fmt: skip
