"""SSD: a single-shot detector predicting offsets and class scores of default boxes.

Liu, Anguelov, Erhan, Szegedy, Reed, Fu, Berg, "SSD: Single Shot MultiBox Detector",
ECCV 2016. A backbone gives two maps (its deepest stage and the one at half that stride,
conv4_3 / fc7 in the paper); extra layers (a 1x1 bottleneck then a 3x3 stride-2 convolution,
as conv8_2 .. conv11_2) add coarser maps. On every map a 3x3 convolution predicts, per
default box (prior) and location, 4 offsets and ``C + 1`` class logits (index 0 is the
background inside the model; dataset labels ``0 .. C-1`` become ``1 .. C``).

Default boxes (Sec. 2.2, :func:`~cnnzoo.models.detection.coders.default_boxes`): map ``k`` of
``m`` has scale ``s_k = s_min + (s_max - s_min) (k - 1) / (m - 1)`` with ``s_min = 0.2``,
``s_max = 0.9``; the extra ratio-1 box of the last map uses ``s_{m+1} = s_m + step`` (the
reference implementation's ``max_sizes``). Aspect ratios: by default ``{1, 2, 1/2}`` on the
first and last maps and ``{1, 2, 1/2, 3, 1/3}`` on the others (SSD300 uses the 4-box layout
on conv4_3, conv10_2 and conv11_2). They are computed for the actual input size (the map
sizes follow it) and cached per size.

Training (Sec. 2.2): each ground truth is matched to its best-overlapping default box, and
every default box whose best IoU exceeds 0.5 to that truth; offsets are encoded with
:func:`~cnnzoo.models.detection.coders.ssd_encode` (variances 0.1, 0.2). The loss is
``(cls_weight * L_conf + box_weight * L_loc) / N`` with ``N`` the number of positives (at
least 1): smooth L1 on the positives' offsets and cross-entropy on the positives plus the
hardest negatives (highest background loss), at most ``neg_pos_ratio = 3`` per positive in
each image. The paper's ``alpha = 1`` is ``box_weight``.

Departures from the paper: any registered classifier is the backbone (BN networks, so no L2
normalisation of conv4_3 and no dilated fc6/fc7); the extra layers have BN; every map keeps
at least 1x1 (a stride-2 3x3 convolution with padding on a 1x1 map gives 1x1), so the model
takes any input of at least 32 pixels with ResNets.

Modern option (``--recipe modern``): ``box_loss`` ``"giou"``, ``"diou"`` or ``"ciou"``
replaces smooth L1 on the offsets by an IoU-family loss between the decoded box and its
matched truth (:mod:`~cnnzoo.models.detection.box_loss`); the offsets and default boxes stay
the paper's. :meth:`SSD.fit_priors` fits ``min_scale`` / ``max_scale`` to the training boxes
(AutoAnchor, :mod:`~cnnzoo.models.detection.autoanchor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers import ExtraLayer
from cnnzoo.models.backbones import build_backbone
from cnnzoo.models.base import init_weights_kaiming
from cnnzoo.models.detection.autoanchor import PriorFit, fit_ssd_scales
from cnnzoo.models.detection.box_loss import check_box_loss, iou_loss
from cnnzoo.models.detection.coders import SSD_VARIANCES, default_boxes, ssd_decode, ssd_encode
from cnnzoo.models.detection.ops import box_convert, box_iou
from cnnzoo.models.detection.postprocess import clip_boxes, postprocess
from cnnzoo.registry import register_model

LIU_2016 = "Liu et al., SSD: Single Shot MultiBox Detector, ECCV 2016"


def ssd_scales(num_maps: int, s_min: float = 0.2, s_max: float = 0.9) -> list[float]:
    """Return the ``num_maps + 1`` scales ``s_1 .. s_{m+1}`` of SSD's default boxes.

    ``s_1 .. s_m`` run linearly from ``s_min`` to ``s_max`` (Sec. 2.2, Eq. 4); ``s_{m+1}``
    continues the line by one step (only the extra ratio-1 box of the last map uses it). For a
    single map: ``[s_min, s_max]``.

    Raises:
        CnnzooError: for ``num_maps < 1`` or scales not ``0 < s_min <= s_max``.
    """
    if num_maps < 1:
        raise CnnzooError(f"need at least one feature map, got {num_maps}")
    if not 0 < s_min <= s_max:
        raise CnnzooError(f"need 0 < s_min <= s_max, got s_min={s_min}, s_max={s_max}")
    if num_maps == 1:
        return [s_min, s_max]
    step = (s_max - s_min) / (num_maps - 1)
    return [s_min + step * k for k in range(num_maps + 1)]


def default_aspect_ratios(num_maps: int) -> list[list[float]]:
    """Return the default extra aspect ratios per map: ``[2]`` on the first and last map,
    ``[2, 3]`` on the others (4 and 6 boxes per location)."""
    return [[2.0] if k in (0, num_maps - 1) else [2.0, 3.0] for k in range(num_maps)]


def ssd_match(
    boxes: Tensor,
    labels: Tensor,
    priors_cxcywh: Tensor,
    iou_threshold: float = 0.5,
    variances: Sequence[float] = SSD_VARIANCES,
) -> tuple[Tensor, Tensor]:
    """Return SSD's training targets of one image: offsets ``(P, 4)`` and classes ``(P,)``.

    Each ground truth is matched to the default box with which it has the highest IoU (even
    below ``iou_threshold``); then every other default box whose best IoU exceeds
    ``iou_threshold`` is matched to that best truth. A default box claimed as best by two
    truths goes to the later one. Boxes without positive width and height are ignored.

    Args:
        boxes: ``(G, 4)`` xyxy ground truths in pixels; labels: ``(G,)`` in ``0 .. C-1``.
        priors_cxcywh: ``(P, 4)`` default boxes (cxcywh pixels).
        iou_threshold: the Jaccard overlap above which a default box is positive (0.5).

    Returns:
        ``(offsets, classes)``: ``ssd_encode`` offsets of the matched truths (zeros for
        background) and class indices with 0 = background, ``label + 1`` for a positive.

    Raises:
        CnnzooError: for mismatched shapes.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:1]:
        raise CnnzooError(
            f"boxes must be (G, 4) and labels (G,), got {tuple(boxes.shape)} and "
            f"{tuple(labels.shape)}"
        )
    num_priors = priors_cxcywh.shape[0]
    device = priors_cxcywh.device
    offsets = torch.zeros(num_priors, 4, device=device)
    classes = torch.zeros(num_priors, dtype=torch.long, device=device)
    boxes = boxes.to(device=device, dtype=torch.float32)
    labels = labels.to(device)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, labels = boxes[valid], labels[valid]
    if boxes.shape[0] == 0:
        return offsets, classes
    priors_xyxy = box_convert(priors_cxcywh.float(), "cxcywh", "xyxy")
    iou = box_iou(boxes, priors_xyxy)  # (G, P)
    best_iou, best_truth = iou.max(0)  # per prior
    best_prior = iou.argmax(1)  # per truth
    # Every truth keeps its best prior, whatever the overlap.
    best_iou[best_prior] = 2.0
    for g, p in enumerate(best_prior.tolist()):
        best_truth[p] = g
    positive = best_iou > iou_threshold
    matched = boxes[best_truth[positive]]
    offsets[positive] = ssd_encode(matched, priors_cxcywh[positive].float(), variances)
    classes[positive] = labels[best_truth[positive]].long() + 1
    return offsets, classes


def hard_negative_mask(
    background_loss: Tensor, positive: Tensor, neg_pos_ratio: float = 3.0
) -> Tensor:
    """Return the hard negatives kept for the classification loss, ``(N, P)`` boolean.

    Per image, the ``min(neg_pos_ratio * num_positives, num_negatives)`` non-positive
    default boxes with the highest ``background_loss`` (Sec. 2.2, "Hard negative mining").
    An image without positives keeps none.

    Args:
        background_loss: ``(N, P)`` per-box loss of the background class (cross-entropy
            against class 0).
        positive: ``(N, P)`` boolean, the matched default boxes.
        neg_pos_ratio: negatives per positive (3 in the paper).
    """
    if background_loss.shape != positive.shape or background_loss.dim() != 2:
        raise CnnzooError(
            f"background_loss and positive must both be (N, P), got "
            f"{tuple(background_loss.shape)} and {tuple(positive.shape)}"
        )
    num_pos = positive.sum(1, keepdim=True)
    num_neg = torch.minimum((num_pos * neg_pos_ratio).floor().long(), positive.shape[1] - num_pos)
    loss = background_loss.detach().float().masked_fill(positive, -float("inf"))
    order = loss.argsort(1, descending=True)
    rank = order.argsort(1)
    return (rank < num_neg) & ~positive


class SSD(nn.Module):
    """Backbone (two maps) + extra layers + 3x3 predictors on every map.

    Args:
        num_classes: object classes ``C`` (background not counted).
        in_channels: channels of the input image.
        backbone: name of a registered classifier; its deepest stage and the stage at half
            that stride are the first two maps (stride 16 and 32 for ResNets).
        cls_weight: weight of the confidence loss.
        box_weight: weight of the localisation loss (the paper's alpha = 1).
        extra_channels: output channels of each extra layer (one map each).
        aspect_ratios: extra ratios (each adds ``a`` and ``1/a``), one list shared by all
            maps or one per map; None: :func:`default_aspect_ratios`.
        neg_pos_ratio: hard negatives per positive.
        min_scale, max_scale: ``s_min`` and ``s_max`` of the default boxes.
        match_threshold: IoU above which a default box is matched.
        box_loss: ``"smooth_l1"`` (the paper's, on the offsets) or ``"giou"``, ``"diou"``,
            ``"ciou"`` on the decoded boxes.
        **backbone_kwargs: options of the backbone builder.

    ``forward`` returns ``{"deltas": (N, P, 4), "logits": (N, P, C + 1),
    "priors": (P, 4)}``: offsets and logits of all ``P`` default boxes of all maps (finest
    map first; per location as in ``default_boxes``), and the default boxes themselves
    (cxcywh pixels, no batch dimension) for this input size.
    """

    def __init__(
        self,
        num_classes: int = 20,
        in_channels: int = 3,
        backbone: str = "resnet18",
        cls_weight: float = 1.0,
        box_weight: float = 1.0,
        extra_channels: Sequence[int] = (256, 256),
        aspect_ratios: Sequence[float] | Sequence[Sequence[float]] | None = None,
        neg_pos_ratio: float = 3.0,
        min_scale: float = 0.2,
        max_scale: float = 0.9,
        match_threshold: float = 0.5,
        box_loss: str = "smooth_l1",
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise CnnzooError(f"num_classes must be >= 1, got {num_classes}")
        self.box_loss = check_box_loss(box_loss, "smooth_l1")
        if neg_pos_ratio < 0:
            raise CnnzooError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
        self.num_classes = num_classes
        self.cls_weight = float(cls_weight)
        self.box_weight = float(box_weight)
        self.neg_pos_ratio = float(neg_pos_ratio)
        self.match_threshold = float(match_threshold)
        # Finest map first: half the deepest stride, then the deepest.
        self.backbone = build_backbone(backbone, in_channels, (2, None), **backbone_kwargs)
        channels = list(self.backbone.feature_info.channels())
        extras = []
        prev = channels[-1]
        for width in extra_channels:
            if width < 2:
                raise CnnzooError(f"extra_channels must be >= 2, got {tuple(extra_channels)}")
            extras.append(ExtraLayer(prev, width))
            channels.append(width)
            prev = width
        self.extras = nn.ModuleList(extras)
        num_maps = len(channels)
        if aspect_ratios is None:
            ratios = default_aspect_ratios(num_maps)
        elif len(aspect_ratios) and isinstance(aspect_ratios[0], (int, float)):
            ratios = [[float(a) for a in aspect_ratios]] * num_maps  # type: ignore[union-attr]
        else:
            ratios = [[float(a) for a in r] for r in aspect_ratios]  # type: ignore[union-attr]
            if not ratios:
                ratios = [[] for _ in range(num_maps)]
        if len(ratios) != num_maps:
            raise CnnzooError(f"need one aspect-ratio list per map ({num_maps}), got {ratios}")
        self.aspect_ratios = ratios
        self.scales = ssd_scales(num_maps, min_scale, max_scale)
        self.boxes_per_location = [2 + 2 * len(r) for r in ratios]
        self.loc_heads = nn.ModuleList(
            nn.Conv2d(c, a * 4, 3, padding=1)
            for c, a in zip(channels, self.boxes_per_location, strict=True)
        )
        self.cls_heads = nn.ModuleList(
            nn.Conv2d(c, a * (num_classes + 1), 3, padding=1)
            for c, a in zip(channels, self.boxes_per_location, strict=True)
        )
        init_weights_kaiming(self.extras)
        for head in (*self.loc_heads, *self.cls_heads):
            nn.init.normal_(head.weight, 0, 0.01)
            nn.init.zeros_(head.bias)
        self._priors: dict[tuple[Any, ...], Tensor] = {}

    def default_boxes(
        self, feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int]
    ) -> Tensor:
        """Return the ``(P, 4)`` cxcywh default boxes for these map and image sizes (cached)."""
        key = (tuple(map(tuple, feature_sizes)), tuple(image_size))
        if key not in self._priors:
            self._priors[key] = default_boxes(
                [tuple(s) for s in feature_sizes],
                tuple(image_size),
                self.scales,
                self.aspect_ratios,
            )
        return self._priors[key]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Return ``{"deltas", "logits", "priors"}`` (see the class docstring)."""
        maps = list(self.backbone(x))
        y = maps[-1]
        for extra in self.extras:
            y = extra(y)
            maps.append(y)
        n = x.shape[0]
        deltas, logits = [], []
        for m, loc, cls in zip(maps, self.loc_heads, self.cls_heads, strict=True):
            deltas.append(loc(m).permute(0, 2, 3, 1).reshape(n, -1, 4))
            logits.append(cls(m).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes + 1))
        sizes = [tuple(m.shape[-2:]) for m in maps]
        priors = self.default_boxes(sizes, tuple(x.shape[-2:])).to(x.device)
        return {"deltas": torch.cat(deltas, 1), "logits": torch.cat(logits, 1), "priors": priors}

    def targets(self, priors: Tensor, targets: list[dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
        """Return the matched offsets ``(N, P, 4)`` and classes ``(N, P)`` of a batch."""
        pairs = [ssd_match(t["boxes"], t["labels"], priors, self.match_threshold) for t in targets]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def loss(
        self,
        outputs: dict[str, Tensor],
        targets: list[dict[str, Tensor]],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        """Return ``{"loss", "loss_box", "loss_cls"}``; both parts are divided by the number
        of positive default boxes in the batch (at least 1), ``loss`` weighs them by
        ``box_weight`` and ``cls_weight``.

        Raises:
            CnnzooError: if the number of targets differs from the batch size.
        """
        deltas, logits, priors = outputs["deltas"], outputs["logits"], outputs["priors"]
        if len(targets) != deltas.shape[0]:
            raise CnnzooError(f"got {len(targets)} targets for a batch of {deltas.shape[0]}")
        offsets, classes = self.targets(priors, targets)
        positive = classes > 0
        num_pos = positive.sum().clamp(min=1).float()
        ce = F.cross_entropy(
            logits.float().flatten(0, 1), classes.flatten(), reduction="none"
        ).view_as(classes)
        negative = hard_negative_mask(ce, positive, self.neg_pos_ratio)
        loss_cls = ce[positive | negative].sum() / num_pos
        if self.box_loss == "smooth_l1":
            loss_box = (
                F.smooth_l1_loss(deltas.float()[positive], offsets[positive], reduction="sum")
                / num_pos
            )
        else:  # the matched truth is the decoded target offset of its default box
            pos_priors = priors.float().expand(deltas.shape[0], -1, -1)[positive]
            pred = ssd_decode(deltas.float()[positive], pos_priors)
            truth = ssd_decode(offsets[positive], pos_priors)
            loss_box = iou_loss(self.box_loss, pred, truth) / num_pos
        loss = self.cls_weight * loss_cls + self.box_weight * loss_box
        return {"loss": loss, "loss_box": loss_box, "loss_cls": loss_cls}

    def fit_priors(self, wh: Tensor, image_size: tuple[int, int]) -> PriorFit:
        """AutoAnchor: :func:`~cnnzoo.models.detection.autoanchor.fit_ssd_scales` of the
        training boxes' sizes ``wh (N, 2)`` for inputs of ``image_size``; the fit's
        ``kwargs`` are ``{"min_scale", "max_scale"}`` when the default boxes change."""
        return fit_ssd_scales(wh, list(self.scales), self.aspect_ratios, tuple(image_size))

    @torch.no_grad()
    def decode(
        self,
        outputs: dict[str, Tensor],
        image_size: tuple[int, int],
        score_threshold: float = 0.05,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
        pre_nms_top_k: int = 1000,
    ) -> list[dict[str, Tensor]]:
        """Return the detections of each image: softmax scores of the object classes, the
        ``pre_nms_top_k`` best (box, class) pairs above ``score_threshold``, boxes from
        ``ssd_decode`` clipped to the image, class-aware NMS and top ``max_detections``
        (:func:`~cnnzoo.models.detection.postprocess.postprocess`). Labels are ``0 .. C-1``.
        """
        boxes_all, scores_all = self.candidates(outputs, image_size)
        results = []
        for boxes, scores in zip(boxes_all, scores_all, strict=True):
            prior_idx, label = (scores > score_threshold).nonzero(as_tuple=True)
            score = scores[prior_idx, label]
            if score.numel() > pre_nms_top_k:
                top = score.topk(pre_nms_top_k).indices
                prior_idx, label, score = prior_idx[top], label[top], score[top]
            results.append(
                postprocess(
                    boxes[prior_idx], score, label, score_threshold, iou_threshold, max_detections
                )
            )
        return results

    def candidates(
        self, outputs: dict[str, Tensor], image_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """Return every default box's decoded box ``(N, P, 4)`` xyxy pixels, clipped to the
        image, with the softmax scores of the object classes ``(N, P, C)``, before thresholds
        and NMS (the end of an exported graph)."""
        deltas, logits, priors = outputs["deltas"], outputs["logits"], outputs["priors"]
        scores = logits.float().softmax(-1)[..., 1:]  # (N, P, C)
        boxes = clip_boxes(ssd_decode(deltas.float(), priors.float()), tuple(image_size))
        return boxes, scores


@register_model(
    task="detection",
    paper=LIU_2016,
    input_size=(3, 96, 96),
    min_input_size=32,
    family="ssd",
)
def ssd(
    num_classes: int = 20,
    in_channels: int = 3,
    backbone: str = "resnet18",
    cls_weight: float = 1.0,
    box_weight: float = 1.0,
    extra_channels: Sequence[int] = (256, 256),
    aspect_ratios: Sequence[float] | Sequence[Sequence[float]] | None = None,
    neg_pos_ratio: float = 3.0,
    min_scale: float = 0.2,
    max_scale: float = 0.9,
    match_threshold: float = 0.5,
    box_loss: str = "smooth_l1",
    **backbone_kwargs: Any,
) -> SSD:
    """SSD: two backbone maps + extra stride-2 layers (4 maps of 6, 3, 2, 1 for a 96x96
    input with ResNet-18), default boxes of scales 0.2 .. 0.9, hard negative mining 3:1."""
    return SSD(
        num_classes,
        in_channels,
        backbone,
        cls_weight,
        box_weight,
        tuple(extra_channels),
        aspect_ratios,
        neg_pos_ratio,
        min_scale,
        max_scale,
        match_threshold,
        box_loss,
        **backbone_kwargs,
    )
