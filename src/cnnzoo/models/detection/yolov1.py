"""YOLOv1: a single-shot detector on a cnnzoo classification backbone.

YOLOv1 (Redmon, Divvala, Girshick, Farhadi 2016, sec. 2): the image is divided into an
``S x S`` grid; every cell predicts ``B`` boxes ``(x, y, w, h, confidence)`` and ``C``
conditional class probabilities ``Pr(class | object)``: an ``S x S x (5B + C)`` tensor.
Here the deepest backbone map goes through a small convolutional head (3x3 conv, adaptive
average pooling to ``S x S``, 3x3 conv, 1x1 predictor). The loss is the paper's eq. (3),
a sum of squared errors:

- coordinates (weight ``lambda_coord = box_weight = 5``): ``x, y`` (centre offset inside the
  cell) and ``sqrt(w), sqrt(h)`` (size relative to the image) of the *responsible*
  predictor of each cell holding an object — the one of its ``B`` predictors whose box has
  the highest IoU with the truth, chosen at training time (no gradient through the choice);
- confidence: ``(C - IoU)^2`` for responsible predictors (``rescore=True``, the paper's
  "confidence equal to the IOU" and Darknet's ``rescore=1``; ``rescore=False`` uses 1),
  ``lambda_noobj = 0.5`` times ``C^2`` for every other predictor (including the
  non-responsible ones of object cells);
- classes (weight ``cls_weight``, 1 in the paper): squared error between the class
  probabilities and the one-hot truth, once per object cell.

Departure from the paper: its last layer is linear; here ``x, y, sqrt(w), sqrt(h)`` and the
confidence pass through a sigmoid and the class scores through a softmax (see
:meth:`YOLOv1.activate`), so every prediction stays in its range ``[0, 1]`` and small
CPU-sized trainings do not diverge. The ``w, h`` channels thus predict the *square roots*
of the relative size directly, as the paper suggests. The paper's two fully-connected

Decoding scores a (box, class) pair by ``confidence x Pr(class | object)``, then
:func:`~cnnzoo.models.detection.postprocess.score_candidates` (threshold, class-aware NMS,
top-k) on the boxes clipped to the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers import ConvBnAct
from cnnzoo.layers.conv import DarknetAct
from cnnzoo.models.backbones import build_backbone
from cnnzoo.models.base import init_weights_kaiming
from cnnzoo.models.detection.coders import yolov1_targets
from cnnzoo.models.detection.ops import box_convert
from cnnzoo.models.detection.postprocess import paired_iou, score_candidates, valid_boxes
from cnnzoo.registry import register_model

REDMON_2016 = (
    "Redmon, Divvala, Girshick, Farhadi, You Only Look Once: Unified, Real-Time Object "
    "Detection, CVPR 2016"
)


class YOLOv1(nn.Module):
    """Backbone, convolutional head pooled to an ``S x S`` grid, per-cell predictions.

    Args:
        num_classes: number of object classes ``C`` (no background class).
        in_channels: channels of the input image.
        backbone: name of a registered classifier; its deepest map feeds the head.
        grid: the grid size ``S`` (7 in the paper).
        num_boxes: boxes per cell ``B`` (2 in the paper).
        head_channels: width of the head's convolutions.
        cls_weight: weight alpha of the class term (1 in the paper).
        box_weight: ``lambda_coord``, weight beta of the coordinate term (5 in the paper).
        noobj_weight: ``lambda_noobj`` (0.5 in the paper).
        rescore: confidence target of a responsible predictor: its IoU with the truth
            (True, the paper) or 1 (False).
        **backbone_kwargs: options of the backbone builder.

    ``forward`` returns the raw ``(N, S, S, 5B + C)`` tensor: channels ``5b .. 5b + 4`` are
    the logits of ``x, y, sqrt(w), sqrt(h), confidence`` of predictor ``b`` (``x, y`` the
    centre's offset inside the cell, ``w, h`` relative to the image), the last ``C`` the class
    logits — the layout of :func:`~cnnzoo.models.detection.coders.yolov1_targets`.

    Raises:
        CnnzooError: for ``grid``, ``num_boxes`` or ``num_classes`` below 1.
    """

    def __init__(
        self,
        num_classes: int = 20,
        in_channels: int = 3,
        backbone: str = "resnet18",
        grid: int = 7,
        num_boxes: int = 2,
        head_channels: int = 256,
        cls_weight: float = 1.0,
        box_weight: float = 5.0,
        noobj_weight: float = 0.5,
        rescore: bool = True,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        if grid < 1 or num_boxes < 1 or num_classes < 1:
            raise CnnzooError(
                f"grid, num_boxes and num_classes must be >= 1, got {grid}, {num_boxes}, "
                f"{num_classes}"
            )
        self.num_classes = num_classes
        self.grid = grid
        self.num_boxes = num_boxes
        self.cls_weight = cls_weight
        self.box_weight = box_weight
        self.noobj_weight = noobj_weight
        self.rescore = rescore
        self.backbone = build_backbone(backbone, in_channels, (None,), **backbone_kwargs)
        channels = self.backbone.feature_info.channels()[0]
        self.head = nn.Sequential(
            ConvBnAct(channels, head_channels, 3, act_layer=DarknetAct),
            nn.AdaptiveAvgPool2d(grid),
            ConvBnAct(head_channels, head_channels, 3, act_layer=DarknetAct),
        )
        self.predictor = nn.Conv2d(head_channels, 5 * num_boxes + num_classes, 1)
        init_weights_kaiming(self.head)
        nn.init.normal_(self.predictor.weight, 0, 0.01)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Return raw predictions ``(N, S, S, 5B + C)`` (see the class docstring)."""
        out = self.predictor(self.head(self.backbone(x)[0]))
        return out.permute(0, 2, 3, 1).contiguous()

    def activate(self, outputs: Tensor) -> Tensor:
        """Return ``outputs`` with ``x, y, sqrt(w), sqrt(h), confidence`` through a sigmoid
        and the class logits through a softmax (the conditional class probabilities)."""
        nb = 5 * self.num_boxes
        return torch.cat([outputs[..., :nb].sigmoid(), outputs[..., nb:].softmax(-1)], -1)

    def _boxes(self, slots: Tensor) -> Tensor:
        """Return the xyxy boxes, relative to the image, of ``slots (N, S, S, B, >=4)`` holding
        ``x, y`` (in the cell) and ``sqrt(w), sqrt(h)`` (relative to the image)."""
        s = self.grid
        rows, cols = torch.meshgrid(
            torch.arange(s, device=slots.device, dtype=slots.dtype),
            torch.arange(s, device=slots.device, dtype=slots.dtype),
            indexing="ij",
        )
        cx = (slots[..., 0] + cols[..., None]) / s
        cy = (slots[..., 1] + rows[..., None]) / s
        w, h = slots[..., 2].square(), slots[..., 3].square()
        return box_convert(torch.stack([cx, cy, w, h], -1), "cxcywh", "xyxy")

    def match(
        self, outputs: Tensor, targets: Sequence[dict[str, Tensor]], image_size: tuple[int, int]
    ) -> dict[str, Tensor]:
        """Build the targets and pick each object cell's responsible predictor.

        Returns:
            ``{"target": (N, S, S, 5B + C)`` from :func:`yolov1_targets`, ``"mask": (N, S, S)``
            cells holding an object, ``"iou": (N, S, S, B)`` IoU of each predicted box with
            its cell's truth (0 in empty cells), ``"responsible": (N, S, S)`` int64 index of
            the predictor of highest IoU (first on ties; meaningful where ``mask``)}.
        """
        n, s = outputs.shape[0], self.grid
        if outputs.shape[1:] != (s, s, 5 * self.num_boxes + self.num_classes):
            raise CnnzooError(f"outputs must be (N, {s}, {s}, 5B + C), got {tuple(outputs.shape)}")
        if len(targets) != n:
            raise CnnzooError(f"{n} images in the outputs but {len(targets)} targets")
        built = []
        for target in targets:
            boxes, labels = valid_boxes(target, torch.device("cpu"))
            built.append(
                yolov1_targets(boxes, labels, s, self.num_boxes, self.num_classes, image_size)
            )
        tgt = torch.stack([t for t, _ in built]).to(outputs.device)
        mask = torch.stack([m for _, m in built]).to(outputs.device)
        nb = 5 * self.num_boxes
        with torch.no_grad():
            p = self.activate(outputs.detach())
            pred = self._boxes(p[..., :nb].reshape(n, s, s, self.num_boxes, 5))
            slots = tgt[..., :nb].reshape(n, s, s, self.num_boxes, 5)
            truth = self._boxes(torch.cat([slots[..., :2], slots[..., 2:4].sqrt()], -1))
            iou = paired_iou(pred, truth) * mask[..., None]
        return {"target": tgt, "mask": mask, "iou": iou, "responsible": iou.argmax(-1)}

    def loss(
        self, outputs: Tensor, targets: Sequence[dict[str, Tensor]], image_size: tuple[int, int]
    ) -> dict[str, Tensor]:
        """Return the paper's eq. (3) loss, summed over the batch and divided by its size.

        Returns:
            ``{"loss", "loss_box", "loss_obj", "loss_cls"}``; the components are already
            weighted (``box_weight``, ``noobj_weight`` inside ``loss_obj``, ``cls_weight``)
            and ``loss`` is their sum.
        """
        m = self.match(outputs, targets, image_size)
        n, s, b, nb = outputs.shape[0], self.grid, self.num_boxes, 5 * self.num_boxes
        p = self.activate(outputs)
        pb = p[..., :nb].reshape(n, s, s, b, 5)
        tb = m["target"][..., :nb].reshape(n, s, s, b, 5)
        resp = F.one_hot(m["responsible"], b).bool() & m["mask"][..., None]
        coord = (pb[..., :2] - tb[..., :2]).square().sum(-1) + (
            pb[..., 2:4] - tb[..., 2:4].sqrt()
        ).square().sum(-1)
        loss_box = self.box_weight * coord[resp].sum() / n
        conf_target = m["iou"] if self.rescore else torch.ones_like(m["iou"])
        conf = pb[..., 4]
        loss_obj = (
            (conf - conf_target).square()[resp].sum()
            + self.noobj_weight * conf.square()[~resp].sum()
        ) / n
        cls_err = (p[..., nb:] - m["target"][..., nb:]).square().sum(-1)
        loss_cls = self.cls_weight * cls_err[m["mask"]].sum() / n
        return {
            "loss": loss_box + loss_obj + loss_cls,
            "loss_box": loss_box,
            "loss_obj": loss_obj,
            "loss_cls": loss_cls,
        }

    @torch.no_grad()
    def decode(
        self,
        outputs: Tensor,
        image_size: tuple[int, int],
        score_threshold: float = 0.05,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
    ) -> list[dict[str, Tensor]]:
        """Return the detections of each image: :meth:`candidates`, then
        :func:`~cnnzoo.models.detection.postprocess.score_candidates`."""
        boxes, scores = self.candidates(outputs, image_size)
        return score_candidates(
            boxes, scores, image_size, score_threshold, iou_threshold, max_detections
        )

    def candidates(self, outputs: Tensor, image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Return every predicted box ``(N, M, 4)`` xyxy pixels with each class scored
        ``confidence x Pr(class | object)`` ``(N, M, C)``, before thresholds and NMS (the end
        of an exported graph)."""
        n, s, b, nb = outputs.shape[0], self.grid, self.num_boxes, 5 * self.num_boxes
        p = self.activate(outputs.float())
        slots = p[..., :nb].reshape(n, s, s, b, 5)
        h, w = image_size
        scale = torch.tensor([w, h, w, h], device=p.device, dtype=p.dtype)
        boxes = self._boxes(slots) * scale  # (N, S, S, B, 4) pixels
        scores = slots[..., 4, None] * p[..., None, nb:]  # (N, S, S, B, C)
        return boxes.reshape(n, -1, 4), scores.reshape(n, -1, self.num_classes)


@register_model(
    task="detection",
    paper=REDMON_2016,
    input_size=(3, 96, 96),
    min_input_size=32,
    family="yolo",
)
def yolov1(
    num_classes: int = 20,
    in_channels: int = 3,
    backbone: str = "resnet18",
    cls_weight: float = 1.0,
    box_weight: float = 5.0,
    grid: int = 7,
    num_boxes: int = 2,
    noobj_weight: float = 0.5,
    rescore: bool = True,
    head_channels: int = 256,
    **backbone_kwargs: Any,
) -> YOLOv1:
    """YOLOv1: an S x S grid (7), B = 2 boxes per cell, sum-squared-error loss with
    lambda_coord = 5 and lambda_noobj = 0.5."""
    return YOLOv1(
        num_classes,
        in_channels,
        backbone,
        grid=grid,
        num_boxes=num_boxes,
        head_channels=head_channels,
        cls_weight=cls_weight,
        box_weight=box_weight,
        noobj_weight=noobj_weight,
        rescore=rescore,
        **backbone_kwargs,
    )
