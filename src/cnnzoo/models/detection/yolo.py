"""YOLOv1 and YOLOv3 single-shot detectors on a cnnzoo classification backbone.

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
layers are replaced by the convolutional head (fewer parameters, any input size).

YOLOv3 (Redmon & Farhadi 2018): three scales (backbone strides ``r/4, r/2, r`` for a
backbone of stride ``r``, i.e. 8, 16, 32 for ResNet-18) with a light FPN-like top-down path
(1x1 lateral convolutions, nearest upsampling, *sum* instead of the paper's concatenation),
a 3x3 convolution and a 1x1 predictor per scale, three anchors per scale (the nine anchors
sorted by area, smallest three on the finest map). Each anchor predicts
``(t_x, t_y, t_w, t_h, objectness, C class logits)``; boxes are
:func:`~cnnzoo.models.detection.coders.yolo_decode`. Every truth is assigned to the *one*
anchor of best shape IoU (:func:`~cnnzoo.models.detection.anchors.anchor_iou`) over all
scales, at the cell holding its centre. Loss, summed and divided by the batch size:

- box (weight ``box_weight``, 1): squared error of ``sigmoid(t_x), sigmoid(t_y)`` against
  the centre offsets and of ``t_w, t_h`` against ``log(w / p_w), log(h / p_h)``
  (:func:`~cnnzoo.models.detection.coders.yolo_encode`);
- objectness: binary cross-entropy, target 1 for assigned anchors, 0 for the others except
  those whose decoded box overlaps some truth with IoU above ``ignore_thresh`` (0.5), which
  are ignored;
- classes (weight ``cls_weight``): independent binary cross-entropies (the paper's
  multilabel logistic classifiers) for assigned anchors.

Departures: the sum replaces concatenation in the top-down path; the objectness bias starts
at ``log(0.01 / 0.99)`` (a prior of 1%, as in RetinaNet) so the many negatives do not
dominate the first steps; Darknet's ``(2 - w h)`` box-size scaling is not used.

Decoding: YOLOv1 scores a (box, class) pair by ``confidence x Pr(class | object)``, YOLOv3 by
``sigmoid(objectness) x sigmoid(class logit)``; then
:func:`~cnnzoo.models.detection.postprocess.postprocess` (threshold, class-aware NMS, top-k)
on the boxes clipped to the image.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, box_iou

from cnnzoo.errors import CnnzooError
from cnnzoo.layers import ConvBnAct
from cnnzoo.models.base import init_weights_kaiming
from cnnzoo.models.detection.anchors import anchor_iou
from cnnzoo.models.detection.coders import yolo_decode, yolo_encode, yolov1_targets
from cnnzoo.models.detection.postprocess import clip_boxes, postprocess
from cnnzoo.models.features import build_backbone
from cnnzoo.registry import register_model

REDMON_2016 = (
    "Redmon, Divvala, Girshick, Farhadi, You Only Look Once: Unified, Real-Time Object "
    "Detection, CVPR 2016"
)
REDMON_2018 = "Redmon, Farhadi, YOLOv3: An Incremental Improvement, arXiv 2018"

DEFAULT_ANCHORS: tuple[tuple[float, float], ...] = (
    (20.0, 20.0),
    (20.0, 30.0),
    (30.0, 20.0),
    (28.0, 28.0),
    (26.0, 40.0),
    (40.0, 26.0),
    (36.0, 36.0),
    (34.0, 48.0),
    (46.0, 46.0),
)
"""Nine ``(w, h)`` anchors in pixels, sorted by area, for the 96x96 synthetic scenes whose
items are 20-48 px: a square, a tall and a wide shape at three sizes (about 20-25, 28-33 and
36-47 px), the small three for the finest map. Run
:func:`~cnnzoo.models.detection.anchors.kmeans_anchors` with ``k=9`` on a training set's
box sizes for anchors fitted to it."""

MAX_LOG_SCALE = 10.0
"""``t_w, t_h`` are clamped to ``[-10, 10]`` before decoding so ``exp`` cannot overflow."""

_leaky = functools.partial(nn.LeakyReLU, 0.1, inplace=True)
"""Darknet's activation (leaky ReLU, slope 0.1), used in both heads."""


def _valid(target: dict[str, Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    """Return a target's float boxes and int64 labels on ``device``, without empty boxes."""
    boxes = target["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4)
    labels = target["labels"].to(device=device, dtype=torch.int64).reshape(-1)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], labels[keep]


def _paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """Return the element-wise IoU of xyxy boxes ``a (..., 4)`` and ``b (..., 4)``."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter).clamp(min=1e-12)


def _finish(
    boxes: Tensor,
    scores: Tensor,
    image_size: tuple[int, int],
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
) -> dict[str, Tensor]:
    """Postprocess one image's candidate ``boxes (M, 4)`` with class ``scores (M, C)``: every
    (box, class) pair above the threshold is a candidate, boxes clipped to the image."""
    index, label = (scores > score_threshold).nonzero(as_tuple=True)
    return postprocess(
        clip_boxes(boxes[index], image_size),
        scores[index, label],
        label,
        score_threshold,
        iou_threshold,
        max_detections,
    )


# --------------------------------------------------------------------------------------------
# YOLOv1
# --------------------------------------------------------------------------------------------


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
            ConvBnAct(channels, head_channels, 3, act_layer=_leaky),
            nn.AdaptiveAvgPool2d(grid),
            ConvBnAct(head_channels, head_channels, 3, act_layer=_leaky),
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
            boxes, labels = _valid(target, torch.device("cpu"))
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
            iou = _paired_iou(pred, truth) * mask[..., None]
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
        """Return the detections of each image: every predicted box with each class scored
        ``confidence x Pr(class | object)``, then :func:`postprocess`."""
        n, s, b, nb = outputs.shape[0], self.grid, self.num_boxes, 5 * self.num_boxes
        p = self.activate(outputs.float())
        slots = p[..., :nb].reshape(n, s, s, b, 5)
        h, w = image_size
        scale = torch.tensor([w, h, w, h], device=p.device, dtype=p.dtype)
        boxes = self._boxes(slots) * scale  # (N, S, S, B, 4) pixels
        scores = slots[..., 4, None] * p[..., None, nb:]  # (N, S, S, B, C)
        return [
            _finish(
                boxes[i].reshape(-1, 4),
                scores[i].reshape(-1, self.num_classes),
                image_size,
                score_threshold,
                iou_threshold,
                max_detections,
            )
            for i in range(n)
        ]


# --------------------------------------------------------------------------------------------
# YOLOv3
# --------------------------------------------------------------------------------------------


class YOLOv3(nn.Module):
    """Backbone maps at three strides, top-down fusion, three anchors per scale.

    Args:
        num_classes: number of object classes ``C`` (no background class).
        in_channels: channels of the input image.
        backbone: name of a registered classifier with stages at its deepest stride and at
            half and a quarter of it (``resnet18``, ``vgg16_bn``, ``convnet`` with three
            widths, ...).
        anchors: nine ``(w, h)`` anchors in pixels (sorted by area here; the smallest three
            go to the finest map); None: :data:`DEFAULT_ANCHORS`.
        neck_channels: width of the top-down path and the heads.
        cls_weight: weight alpha of the class term.
        box_weight: weight beta of the box term (1: the paper's plain sum of squares).
        ignore_thresh: negatives whose decoded box overlaps a truth with a higher IoU get no
            objectness loss (0.5 in the paper).
        **backbone_kwargs: options of the backbone builder.

    Attributes:
        anchors: ``(9, 2)`` buffer, sorted by area; scale ``k`` uses rows ``3k .. 3k + 2``.
        strides: the three strides, finest first.

    ``forward`` returns a list of three raw tensors, finest first, scale ``k`` of shape
    ``(N, 3, H_k, W_k, 5 + C)``: ``t_x, t_y, t_w, t_h``, objectness logit, class logits.

    Raises:
        CnnzooError: for a backbone without the three strides or bad anchors.
    """

    anchors: Tensor
    num_anchors = 3

    def __init__(
        self,
        num_classes: int = 20,
        in_channels: int = 3,
        backbone: str = "resnet18",
        anchors: Sequence[Sequence[float]] | None = None,
        neck_channels: int = 128,
        cls_weight: float = 1.0,
        box_weight: float = 1.0,
        ignore_thresh: float = 0.5,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise CnnzooError(f"num_classes must be >= 1, got {num_classes}")
        wh = torch.as_tensor(
            DEFAULT_ANCHORS if anchors is None else anchors, dtype=torch.float32, device="cpu"
        )  # validated on the CPU, also when the model is built on the meta device
        if wh.shape != (3 * self.num_anchors, 2) or not bool((wh > 0).all()):
            raise CnnzooError(
                f"anchors must be {3 * self.num_anchors} positive (w, h) pairs, got {wh.tolist()}"
            )
        self.register_buffer(
            "anchors", wh[(wh[:, 0] * wh[:, 1]).argsort(stable=True)], persistent=False
        )
        self.num_classes = num_classes
        self.cls_weight = cls_weight
        self.box_weight = box_weight
        self.ignore_thresh = ignore_thresh
        self.backbone = build_backbone(backbone, in_channels, (None, 2, 4), **backbone_kwargs)
        # Finest first from here on.
        channels = self.backbone.feature_info.channels()[::-1]
        self.strides: tuple[int, ...] = tuple(self.backbone.feature_info.reduction()[::-1])
        self.lateral = nn.ModuleList(
            ConvBnAct(c, neck_channels, 1, act_layer=_leaky) for c in channels
        )
        self.smooth = nn.ModuleList(
            ConvBnAct(neck_channels, neck_channels, 3, act_layer=_leaky) for _ in channels
        )
        self.predictors = nn.ModuleList(
            nn.Conv2d(neck_channels, self.num_anchors * (5 + num_classes), 1) for _ in channels
        )
        init_weights_kaiming(self.lateral)
        init_weights_kaiming(self.smooth)
        prior = math.log(0.01 / 0.99)
        for conv in self.predictors:
            nn.init.normal_(conv.weight, 0, 0.01)
            nn.init.zeros_(conv.bias)
            with torch.no_grad():
                conv.bias.view(self.num_anchors, 5 + num_classes)[:, 4] = prior

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return the raw predictions of the three scales, finest first, each
        ``(N, 3, H_k, W_k, 5 + C)``."""
        maps = self.backbone(x)[::-1]  # finest first
        fused: list[Tensor] = []
        top: Tensor | None = None
        for k in reversed(range(len(maps))):  # coarsest first: top-down
            lat = self.lateral[k](maps[k])
            if top is not None:
                lat = lat + F.interpolate(top, size=lat.shape[-2:], mode="nearest")
            top = lat
            fused.append(lat)
        fused.reverse()
        outs = []
        for k, f in enumerate(fused):
            p = self.predictors[k](self.smooth[k](f))
            n, _, h, w = p.shape
            outs.append(
                p.view(n, self.num_anchors, 5 + self.num_classes, h, w).permute(0, 1, 3, 4, 2)
            )
        return [o.contiguous() for o in outs]

    def scale_anchors(self, k: int) -> Tensor:
        """Return the ``(3, 2)`` anchors of scale ``k`` (0 = finest)."""
        return self.anchors[k * self.num_anchors : (k + 1) * self.num_anchors]

    def decode_boxes(self, output: Tensor, k: int) -> Tensor:
        """Return the xyxy pixel boxes ``(N, 3, H, W, 4)`` of scale ``k``'s raw ``output``."""
        t = torch.cat([output[..., :2], output[..., 2:4].clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE)], -1)
        return yolo_decode(t, self.scale_anchors(k), self.strides[k])

    def assign(
        self,
        targets: Sequence[dict[str, Tensor]],
        grid_sizes: Sequence[tuple[int, int]],
        device: torch.device | None = None,
    ) -> list[dict[str, Tensor]]:
        """Assign every truth to its best-shape anchor over all scales, at its centre's cell.

        Args:
            targets: one ``{"boxes", "labels"}`` per image.
            grid_sizes: ``(H_k, W_k)`` of each scale, finest first.
            device: where to build the tensors.

        Returns:
            Per scale ``{"pos": bool (N, 3, H, W), "box": (N, 3, H, W, 4)`` YOLOv3 targets
            ``(sigmoid(t_x), sigmoid(t_y), t_w, t_h)`` from :func:`yolo_encode`,
            ``"cls": (N, 3, H, W, C)`` one-hot}. The cell is ``floor(centre / stride)``,
            clamped to the grid. When two truths claim the same anchor of the same cell, the
            larger one is kept.
        """
        n, a, c = len(targets), self.num_anchors, self.num_classes
        anchors = self.anchors if device is None else self.anchors.to(device)
        out = [
            {
                "pos": torch.zeros(n, a, h, w, dtype=torch.bool, device=anchors.device),
                "box": torch.zeros(n, a, h, w, 4, device=anchors.device),
                "cls": torch.zeros(n, a, h, w, c, device=anchors.device),
            }
            for h, w in grid_sizes
        ]
        for i, target in enumerate(targets):
            boxes, labels = _valid(target, anchors.device)
            if not len(boxes):
                continue
            wh = boxes[:, 2:] - boxes[:, :2]
            centre = (boxes[:, :2] + boxes[:, 2:]) / 2
            best = anchor_iou(wh, anchors).argmax(1)
            for j in (wh[:, 0] * wh[:, 1]).argsort(stable=True).tolist():  # largest last
                k, slot = divmod(int(best[j]), a)
                h, w = grid_sizes[k]
                stride = self.strides[k]
                col = min(max(int(centre[j, 0] // stride), 0), w - 1)
                row = min(max(int(centre[j, 1] // stride), 0), h - 1)
                cell = torch.tensor([col, row], device=anchors.device, dtype=boxes.dtype)
                out[k]["pos"][i, slot, row, col] = True
                out[k]["box"][i, slot, row, col] = yolo_encode(
                    boxes[j], cell, anchors[int(best[j])], stride
                )
                out[k]["cls"][i, slot, row, col] = 0.0
                out[k]["cls"][i, slot, row, col, int(labels[j])] = 1.0
        return out

    def loss(
        self,
        outputs: Sequence[Tensor],
        targets: Sequence[dict[str, Tensor]],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        """Return the YOLOv3 loss (box MSE, objectness BCE with ignoring, class BCE), summed
        and divided by the batch size.

        Returns:
            ``{"loss", "loss_box", "loss_obj", "loss_cls"}``; the components are already
            weighted (``box_weight``, ``cls_weight``) and ``loss`` is their sum.
        """
        if len(outputs) != len(self.strides):
            raise CnnzooError(f"expected {len(self.strides)} output maps, got {len(outputs)}")
        n, device = outputs[0].shape[0], outputs[0].device
        if len(targets) != n:
            raise CnnzooError(f"{n} images in the outputs but {len(targets)} targets")
        grid_sizes = [(o.shape[2], o.shape[3]) for o in outputs]
        assigned = self.assign(targets, grid_sizes, device)
        truths = [_valid(t, device)[0] for t in targets]
        zero = outputs[0].sum() * 0
        loss_box, loss_obj, loss_cls = zero, zero, zero
        for k, (o, asg) in enumerate(zip(outputs, assigned, strict=True)):
            pos = asg["pos"]
            with torch.no_grad():
                pred = self.decode_boxes(o.detach().float(), k)
                ignore = torch.zeros_like(pos)
                for i, truth in enumerate(truths):
                    if len(truth):
                        best = box_iou(pred[i].reshape(-1, 4), truth).amax(1)
                        ignore[i] = (best > self.ignore_thresh).view(pos.shape[1:])
            neg = ~pos & ~ignore
            obj = o[..., 4]
            loss_obj = loss_obj + F.binary_cross_entropy_with_logits(
                obj[pos], torch.ones_like(obj[pos]), reduction="sum"
            )
            loss_obj = loss_obj + F.binary_cross_entropy_with_logits(
                obj[neg], torch.zeros_like(obj[neg]), reduction="sum"
            )
            p, t = o[pos], asg["box"][pos]
            loss_box = loss_box + (
                (p[:, :2].sigmoid() - t[:, :2]).square().sum()
                + (p[:, 2:4] - t[:, 2:4]).square().sum()
            )
            loss_cls = loss_cls + F.binary_cross_entropy_with_logits(
                p[:, 5:], asg["cls"][pos], reduction="sum"
            )
        loss_box = self.box_weight * loss_box / n
        loss_obj = loss_obj / n
        loss_cls = self.cls_weight * loss_cls / n
        return {
            "loss": loss_box + loss_obj + loss_cls,
            "loss_box": loss_box,
            "loss_obj": loss_obj,
            "loss_cls": loss_cls,
        }

    @torch.no_grad()
    def decode(
        self,
        outputs: Sequence[Tensor],
        image_size: tuple[int, int],
        score_threshold: float = 0.05,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
    ) -> list[dict[str, Tensor]]:
        """Return the detections of each image: every anchor's box with each class scored
        ``sigmoid(objectness) x sigmoid(class logit)``, then :func:`postprocess`."""
        n = outputs[0].shape[0]
        boxes, scores = [], []
        for k, o in enumerate(outputs):
            o = o.float()
            boxes.append(self.decode_boxes(o, k).reshape(n, -1, 4))
            s = o[..., 4:5].sigmoid() * o[..., 5:].sigmoid()
            scores.append(s.reshape(n, -1, self.num_classes))
        all_boxes, all_scores = torch.cat(boxes, 1), torch.cat(scores, 1)
        return [
            _finish(
                all_boxes[i],
                all_scores[i],
                image_size,
                score_threshold,
                iou_threshold,
                max_detections,
            )
            for i in range(n)
        ]


# --------------------------------------------------------------------------------------------
# Registered builders
# --------------------------------------------------------------------------------------------


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


@register_model(
    task="detection",
    paper=REDMON_2018,
    input_size=(3, 96, 96),
    min_input_size=32,
    family="yolo",
)
def yolov3(
    num_classes: int = 20,
    in_channels: int = 3,
    backbone: str = "resnet18",
    cls_weight: float = 1.0,
    box_weight: float = 1.0,
    anchors: Sequence[Sequence[float]] | None = None,
    ignore_thresh: float = 0.5,
    neck_channels: int = 128,
    **backbone_kwargs: Any,
) -> YOLOv3:
    """YOLOv3: three scales with top-down fusion, three anchors each (default
    :data:`DEFAULT_ANCHORS`), one best-shape anchor per truth, ignore threshold 0.5."""
    return YOLOv3(
        num_classes,
        in_channels,
        backbone,
        anchors=anchors,
        neck_channels=neck_channels,
        cls_weight=cls_weight,
        box_weight=box_weight,
        ignore_thresh=ignore_thresh,
        **backbone_kwargs,
    )
