"""Object detection as a LightningModule: any model of the detection interface.

A detection model (see :mod:`cnnzoo.models.detection`) has ``forward(images) -> outputs``,
``loss(outputs, targets, image_size) -> {"loss": total, components...}`` (the lecture's
compound loss: alpha x class NLL + beta x coordinate loss, plus objectness where the model
has it) and ``decode(outputs, image_size, score_threshold, iou_threshold, max_detections)``
returning per-image ``{"boxes", "scores", "labels"}`` after non-maximum suppression. A model
whose class attribute ``uses_targets`` is true (sliding window, Fast R-CNN: they sample the
windows or regions they train on from the ground truth) gets ``forward(images, targets)`` in
training steps and ``forward(images)`` everywhere else.

Metrics: COCO-style mean average precision from torchmetrics' ``MeanAveragePrecision``
(pycocotools backend) — ``map`` averaged over IoU 0.50:0.05:0.95, ``map_50`` (the Pascal VOC
metric, IoU 0.5) and ``map_75`` — logged as ``val/map``, ``test/map_50``, …, plus the per-class
AP (IoU 0.50:0.95) in :attr:`DetectionTask.last_class_ap`. VOC ``difficult`` objects are passed
as COCO "crowd" boxes, so detecting them is neither rewarded nor punished.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics.detection import MeanAveragePrecision

from cnnzoo.errors import NonFiniteLossError
from cnnzoo.tasks.budget import budgeted
from cnnzoo.tasks.optim import optimizer_config

Batch = tuple[Tensor, list[dict[str, Tensor]]]


def metric_targets(targets: Sequence[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """Targets in torchmetrics' form: boxes, labels and ``iscrowd`` from VOC ``difficult``."""
    out = []
    for t in targets:
        item = {"boxes": t["boxes"].float(), "labels": t["labels"].long()}
        if "difficult" in t:
            item["iscrowd"] = t["difficult"].long()
        out.append(item)
    return out


def metric_preds(preds: Sequence[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """Decoded detections in torchmetrics' form (detached, float boxes and scores)."""
    return [
        {
            "boxes": p["boxes"].detach().float(),
            "scores": p["scores"].detach().float(),
            "labels": p["labels"].detach().long(),
        }
        for p in preds
    ]


def class_ap_list(result: dict[str, Tensor], num_classes: int) -> list[float]:
    """Per-class AP aligned with class ids from a ``MeanAveragePrecision`` result.

    Classes torchmetrics did not see (neither predicted nor labelled) and classes without
    ground truth (torchmetrics' -1) are NaN.
    """
    ap = [math.nan] * num_classes
    classes = result.get("classes")
    values = result.get("map_per_class")
    if classes is None or values is None:
        return ap
    for c, v in zip(classes.reshape(-1).tolist(), values.reshape(-1).tolist(), strict=False):
        if 0 <= int(c) < num_classes and v >= 0:
            ap[int(c)] = float(v)
    return ap


def map_metric(max_detections: int = 100) -> MeanAveragePrecision:
    """The COCO-style mAP every cnnzoo evaluation uses (xyxy boxes, pycocotools backend,
    per-class AP), counting up to ``max(100, max_detections)`` detections per image; also
    the scorer of ``benchmarks/peers.py``, so peers are measured by the same code."""
    return MeanAveragePrecision(
        box_format="xyxy",
        iou_type="bbox",
        class_metrics=True,
        backend="pycocotools",
        max_detection_thresholds=[1, 10, max(100, max_detections)],
    )


class DetectionTask(L.LightningModule):
    """Train and evaluate any registered detection model.

    Args:
        model: a module with ``forward``, ``loss`` and ``decode`` (the detection interface).
        num_classes: number of object classes (background not counted).
        optimizer, lr, momentum, nesterov, weight_decay, scheduler: as for classification.
        channels_last: keep activations NHWC (faster convolutions on CPU and GPU).
        score_threshold: detections scoring below this are dropped before mAP (low, so the
            precision-recall curve reaches high recall).
        iou_threshold: the non-maximum-suppression IoU.
        max_detections: detections kept per image.

    Attributes:
        last_class_ap: per-class AP (IoU 0.50:0.95) of the last validation or test epoch,
            aligned with class ids; NaN for a class without ground truth.
        last_metrics: ``{"map", "map_50", "map_75"}`` of that epoch.
        kept: set it to ``[]`` to collect ``(detections, targets)`` of every test image (on
            the CPU), e.g. for VOC AP or drawing; None (the default) keeps nothing.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 5e-4,
        scheduler: str = "onecycle",
        channels_last: bool = False,
        score_threshold: float = 0.01,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.val_map = self._make_metric()
        self.test_map = self._make_metric()
        self.last_class_ap: list[float] | None = None
        self.last_metrics: dict[str, float] | None = None
        self.kept: list[tuple[dict[str, Tensor], dict[str, Tensor]]] | None = None

    def _make_metric(self) -> MeanAveragePrecision:
        return map_metric(int(self.hparams.max_detections))

    def _input(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def forward(self, x: Tensor) -> Any:
        """Return the model's raw outputs for normalised images ``x`` (N, C, H, W)."""
        return self.model(self._input(x))

    def predict(self, x: Tensor) -> list[dict[str, Tensor]]:
        """Return the decoded detections of ``x``, one dict per image (eval-mode outputs)."""
        hp = self.hparams
        outputs = self(x)
        return self.model.decode(
            outputs,
            tuple(x.shape[-2:]),
            score_threshold=hp.score_threshold,
            iou_threshold=hp.iou_threshold,
            max_detections=hp.max_detections,
        )

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, targets = batch
        if getattr(self.model, "uses_targets", False):  # samples windows/RoIs from the truth
            outputs = self.model(self._input(x), targets)
        else:
            outputs = self.model(self._input(x))
        losses = self.model.loss(outputs, targets, tuple(x.shape[-2:]))
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise NonFiniteLossError(self.global_step, self.current_epoch, loss.item())
        n = len(x)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        for name, value in losses.items():
            if name != "loss":
                self.log(f"train/{name}", value.detach(), on_step=True, on_epoch=True, batch_size=n)
        return loss

    def _evaluate(self, batch: Batch, split: str) -> None:
        x, targets = batch
        size = tuple(x.shape[-2:])
        outputs = self(x)
        hp = self.hparams
        preds = self.model.decode(
            outputs,
            size,
            score_threshold=hp.score_threshold,
            iou_threshold=hp.iou_threshold,
            max_detections=hp.max_detections,
        )
        p, t = metric_preds(preds), metric_targets(targets)
        getattr(self, f"{split}_map").update(p, t)
        if self.kept is not None and split == "test":
            cpu = [{k: v.cpu() for k, v in d.items()} for d in (*p, *t)]
            self.kept.extend(zip(cpu[: len(p)], cpu[len(p) :], strict=True))
        loss_fn = getattr(self.model, "loss", None)
        if loss_fn is not None:
            losses = loss_fn(outputs, targets, size)
            for name, value in losses.items():
                self.log(f"{split}/{name}", value.detach(), sync_dist=True, batch_size=len(x))

    def epoch_metrics(self, split: str) -> dict[str, float]:
        """Compute and reset the ``split`` mAP; set :attr:`last_class_ap` and
        :attr:`last_metrics`.

        Returns:
            ``{"map", "map_50", "map_75"}`` (torchmetrics' -1 when there was no ground truth).
        """
        metric = getattr(self, f"{split}_map")
        result = metric.compute()
        metric.reset()
        values = {k: float(result[k]) for k in ("map", "map_50", "map_75")}
        self.last_class_ap = class_ap_list(result, self.hparams.num_classes)
        self.last_metrics = values
        return values

    def _log_epoch(self, split: str) -> None:
        values = self.epoch_metrics(split)
        for name, value in values.items():
            self.log(f"{split}/{name}", value, prog_bar=name == "map")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch: Any, batch_idx: int) -> list[dict[str, Tensor]]:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.predict(x)

    def configure_optimizers(self) -> Any:
        return optimizer_config(
            self.model, self.hparams, lambda: int(self.trainer.estimated_stepping_batches),
            retargetable=budgeted(self._trainer),
        )  # fmt: skip
