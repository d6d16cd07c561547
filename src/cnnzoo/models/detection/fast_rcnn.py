"""Fast R-CNN: classify and refine region proposals pooled from one shared feature map.

Girshick, "Fast R-CNN", ICCV 2015. The lecture's "only classify some proposals": instead of
running the CNN on every window (sliding window) or on every cropped proposal (R-CNN), the
backbone runs *once* per image and every region proposal is cut out of that shared feature
map by RoI pooling (Sec. 2.1: max pooling of an ``h x w`` window into a fixed ``H x W``
grid) -- or RoI Align (He et al., Mask R-CNN 2017: bilinear sampling, no rounding), the
default here. A head of two fully-connected layers (the paper's fc6 / fc7, ``head_channels``
wide, ReLU) then gives, per RoI, ``C + 1`` class logits (index 0 is the background inside
the model; dataset labels ``0 .. C-1`` become ``1 .. C``) and class-specific box deltas
(4 per object class, R-CNN parameterisation of
:func:`~cnnzoo.models.detection.coders.ssd_encode`, targets divided by the variances
``(0.1, 0.2)``: a fixed version of the paper's normalisation of the targets to unit
variance).

Shared: the backbone computation (one map for all RoIs; the RPN, when used, works on that
same map). Per RoI: only the pooling and the head. The number of RoIs evaluated per image is
in ``outputs["num_regions"]`` (the cost to compare with a sliding-window detector).

Feature map: the backbone stage of stride ``feature_stride`` (default 16, the paper's stride:
ResNet's conv4_x, ``stages.2``, 256 channels for ResNet-18, 6x6 for a 96x96 input; for VGG
the pool4 output, since its conv5_3 -- the paper's map, also stride 16 -- sits inside the
stride-32 stage here) when the backbone has one; otherwise its deepest stage of stride below
it (a shallow backbone such as ``convnet``: stride 8), or with ``feature_stride=None`` the
deepest stage. The stages after the chosen one are not built (ResNet-18's conv5_x is unused,
as in Faster R-CNN's C4 model, where conv5_x would be the RoI head).

Proposals (:mod:`cnnzoo.models.detection.proposals`), pluggable by name:
``"rpn"`` (default; Ren et al.'s region proposal network, i.e. Faster R-CNN's proposer,
trained jointly: its proposals are detached, "approximate joint training"), ``"selective"``
(a simplified selective search, the paper's proposer, not learned) and ``"given"``
(boxes supplied by the caller). ``num_proposals = (train, test)`` proposals per image.

Training (Sec. 2.3): the ground-truth boxes are added to each image's proposals; per image
``rois_per_image = 64`` RoIs are sampled (the paper: 128 per mini-batch of 2 images), at most
``fg_fraction = 25%`` foreground (IoU >= 0.5 with a ground truth, labelled with its class),
the rest background with IoU in ``[0.1, 0.5)`` -- topped up with lower-IoU proposals when
there are too few (e.g. an image without objects), a departure from the paper, which simply
has fewer RoIs then. Loss (Eq. 1), the lecture's compound loss: ``cls_weight *``
cross-entropy over all sampled RoIs ``+ box_weight *`` smooth L1 of the true class's deltas
of the foreground RoIs (summed, divided by the number of RoIs, i.e. ``[u >= 1]`` inside the
mean), ``+ rpn_weight * (objectness BCE + box smooth L1)`` of the RPN (256 anchors per image,
see :class:`~cnnzoo.models.detection.proposals.RegionProposalNetwork`).

Evaluation-time loss (``loss(model(x), targets, size)`` after a forward without targets):
all evaluated proposals are labelled against the targets (foreground IoU >= 0.5, every other
one background, no sampling, ground truths not added), and the RPN terms are computed from
the stored RPN outputs with the same anchor sampling as in training (random, so slightly
noisy).

Detection (Sec. 3): softmax scores, each object class's refined box (clipped), class-aware
NMS at ``iou_threshold`` and the top ``max_detections``
(:func:`~cnnzoo.models.detection.postprocess.postprocess`).

Departures from the paper: single-scale training and testing, no SVD of the fc layers, the
head has no dropout, any registered classifier is the backbone (BN networks), RoI Align by
default (``roi_op="pool"`` for the paper's RoI max pooling), RPN proposals by default, with
anchors of 20, 40 and 80 pixels (Faster R-CNN's 128, 256, 512 on ~600-pixel images, scaled
to 96-pixel inputs) clipped to the image instead of ignored when they cross its border.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.models.backbones import build_backbone, stage_reductions
from cnnzoo.models.base import init_weights_kaiming
from cnnzoo.models.detection.ops import box_iou, roi_align, roi_pool
from cnnzoo.models.detection.postprocess import clip_boxes, postprocess, valid_boxes
from cnnzoo.models.detection.proposals import (
    PROPOSAL_SOURCES,
    build_proposer,
    decode_deltas,
    encode_boxes,
)
from cnnzoo.registry import register_model

GIRSHICK_2015 = "Girshick, Fast R-CNN, ICCV 2015"
ROI_OPS = ("align", "pool")


def pool_rois(
    features: Tensor,
    rois: Sequence[Tensor],
    output_size: int,
    stride: float,
    op: str = "align",
) -> Tensor:
    """Return the ``(R, channels, output_size, output_size)`` features of every RoI.

    Args:
        features: ``(N, channels, h, w)`` shared feature map.
        rois: one ``(R_i, 4)`` xyxy pixel tensor per image (``R = sum R_i``, in order).
        output_size: side of the pooled grid (7 in the paper).
        stride: pixels per feature cell (the spatial scale is ``1 / stride``).
        op: ``"align"`` (``torchvision.ops.roi_align``, 2 samples per bin and axis,
            half-pixel aligned) or ``"pool"`` (``torchvision.ops.roi_pool``, max pooling).

    Raises:
        CnnzooError: for an unknown ``op`` or a number of RoI sets other than ``N``.
    """
    if op not in ROI_OPS:
        raise CnnzooError(f"unknown roi_op {op!r}; choose one of {', '.join(ROI_OPS)}")
    if len(rois) != features.shape[0]:
        raise CnnzooError(f"got {len(rois)} RoI sets for {features.shape[0]} feature maps")
    boxes = [r.to(features) for r in rois]
    if op == "align":
        return roi_align(features, boxes, output_size, 1.0 / stride, 2, True)
    return roi_pool(features, boxes, output_size, 1.0 / stride)


def sample_rois(
    proposals: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    num_rois: int = 64,
    fg_fraction: float = 0.25,
    fg_iou: float = 0.5,
    bg_iou: tuple[float, float] = (0.1, 0.5),
) -> tuple[Tensor, Tensor, Tensor]:
    """Return the training RoIs of one image: ``(rois (R, 4), classes (R,), matched (R, 4))``.

    The ground truths are added to the proposals; foreground: IoU ``>= fg_iou`` with some
    ground truth, class ``label + 1`` of the best one; at most ``round(num_rois *
    fg_fraction)`` of them, chosen at random. Background (class 0): random proposals of best
    IoU in ``[bg_iou[0], bg_iou[1])``, then, if still short of ``num_rois``, random ones below
    ``bg_iou[0]``. ``R <= num_rois`` (fewer when there are not enough proposals).
    ``matched`` holds the matched ground truth's box for the foreground, the RoI itself for
    the background. Order: foreground first.

    Raises:
        CnnzooError: for mismatched shapes.
    """
    if gt_boxes.dim() != 2 or gt_boxes.shape[-1] != 4 or gt_labels.shape != gt_boxes.shape[:1]:
        raise CnnzooError(
            f"gt_boxes must be (G, 4) and gt_labels (G,), got {tuple(gt_boxes.shape)} and "
            f"{tuple(gt_labels.shape)}"
        )
    device = proposals.device
    gt_boxes = gt_boxes.to(device=device, dtype=torch.float32)
    boxes = torch.cat([proposals.float(), gt_boxes])
    if gt_boxes.shape[0] == 0:
        best_iou = torch.zeros(boxes.shape[0], device=device)
        best_gt = torch.zeros(boxes.shape[0], dtype=torch.long, device=device)
    else:
        best_iou, best_gt = box_iou(boxes, gt_boxes).max(1)
    fg = (best_iou >= fg_iou).nonzero().flatten()
    fg = fg[torch.randperm(fg.numel(), device=device)[: round(num_rois * fg_fraction)]]
    chosen = [fg]
    short = num_rois - fg.numel()
    for low, high in ((bg_iou[0], bg_iou[1]), (-1.0, bg_iou[0])):
        pool = ((best_iou >= low) & (best_iou < high)).nonzero().flatten()
        pool = pool[torch.randperm(pool.numel(), device=device)[:short]]
        chosen.append(pool)
        short -= pool.numel()
    index = torch.cat(chosen)
    rois = boxes[index]
    classes = torch.zeros(index.numel(), dtype=torch.long, device=device)
    matched = rois.clone()
    if fg.numel():
        classes[: fg.numel()] = gt_labels.to(device).long()[best_gt[fg]] + 1
        matched[: fg.numel()] = gt_boxes[best_gt[fg]]
    return rois, classes, matched


def label_rois(
    rois: Tensor, gt_boxes: Tensor, gt_labels: Tensor, fg_iou: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Return ``(classes (R,), matched (R, 4))`` of evaluated RoIs without sampling:
    class ``label + 1`` of the best ground truth where the IoU is ``>= fg_iou``, else 0;
    ``matched`` is that ground truth's box (the RoI itself for the background)."""
    rois = rois.float()
    classes = torch.zeros(rois.shape[0], dtype=torch.long, device=rois.device)
    matched = rois.clone()
    if gt_boxes.shape[0] and rois.shape[0]:
        best_iou, best_gt = box_iou(rois, gt_boxes.to(rois)).max(1)
        fg = best_iou >= fg_iou
        classes[fg] = gt_labels.to(rois.device).long()[best_gt[fg]] + 1
        matched[fg] = gt_boxes.to(rois)[best_gt[fg]]
    return classes, matched


def _pick_divisor(name: str, in_channels: int, feature_stride: int | None, **kw: Any) -> Any:
    """Return the ``build_backbone`` stride entry of the stage used (see module docstring)."""
    if feature_stride is None:
        return None
    reductions = stage_reductions(name, in_channels, **kw)
    below = [r for r in reductions if r <= feature_stride]
    chosen = max(below) if below else min(reductions)
    coarsest = reductions[-1]
    if chosen == coarsest or coarsest % chosen:
        return None
    return coarsest // chosen


@register_model(
    task="detection",
    paper=GIRSHICK_2015,
    input_size=(3, 96, 96),
    min_input_size=32,
    family="rcnn",
    name="fast_rcnn",
)
class FastRCNN(nn.Module):
    """Backbone (one shared map) + proposal source + RoI pooling + two-FC head.

    ``cnnzoo.create_model("fast_rcnn")`` builds it with these defaults: a stride-16 backbone
    map (ResNet-18 stage 3: 6x6 for a 96x96 input), RoI Align to 7x7, two FC layers of 1024;
    RPN proposals (9 anchors of 20-80 pixels per location), 300 per image in training (64
    RoIs sampled, <= 25% foreground), 100 at test.

    Args:
        num_classes: object classes ``C`` (background not counted).
        in_channels: channels of the input image.
        backbone: name of a registered classifier.
        proposals: ``"rpn"``, ``"selective"`` or ``"given"``.
        feature_stride: wanted stride of the shared map (see the module docstring).
        roi_size: side of the pooled RoI grid.
        roi_op: ``"align"`` or ``"pool"``.
        num_proposals: proposals per image, ``(train, test)`` or one number for both.
        rois_per_image: RoIs sampled per image in training.
        fg_fraction: largest foreground share of the sampled RoIs.
        fg_iou: IoU from which a RoI is foreground.
        bg_iou: IoU range ``[low, high)`` of the preferred background RoIs.
        head_channels: width of the two fully-connected layers.
        cls_weight, box_weight, rpn_weight: loss weights.
        anchor_sizes, anchor_ratios, rpn_channels: anchors and width of the RPN.
        selective_cell: initial cell size of the selective search.
        **backbone_kwargs: options of the backbone builder.

    ``forward(x, targets=None, proposals=None)`` returns a dict: ``"proposals"`` (list of
    ``(P_i, 4)``, the source's boxes), ``"rois"`` (list of ``(R_i, 4)``, the regions
    evaluated: the sampled ones with targets, else the proposals), ``"num_regions"``
    ``(N,)`` (``R_i``), ``"logits"`` ``(R, C + 1)`` and ``"deltas"`` ``(R, C, 4)`` (all
    images concatenated in order); with targets also ``"roi_classes"`` ``(R,)`` and
    ``"roi_targets"`` ``(R, 4)`` (encoded deltas, zeros for background); with the RPN its
    ``"rpn_logits"``, ``"rpn_deltas"`` and ``"anchors"``.
    """

    uses_targets = True

    def __init__(
        self,
        num_classes: int = 20,
        in_channels: int = 3,
        backbone: str = "resnet18",
        proposals: str = "rpn",
        feature_stride: int | None = 16,
        roi_size: int = 7,
        roi_op: str = "align",
        num_proposals: int | Sequence[int] = (300, 100),
        rois_per_image: int = 64,
        fg_fraction: float = 0.25,
        fg_iou: float = 0.5,
        bg_iou: Sequence[float] = (0.1, 0.5),
        head_channels: int = 1024,
        cls_weight: float = 1.0,
        box_weight: float = 1.0,
        rpn_weight: float = 1.0,
        anchor_sizes: Sequence[float] = (20.0, 40.0, 80.0),
        anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        rpn_channels: int | None = None,
        selective_cell: int = 4,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise CnnzooError(f"num_classes must be >= 1, got {num_classes}")
        if proposals not in PROPOSAL_SOURCES:
            raise CnnzooError(
                f"unknown proposals {proposals!r}; choose one of {', '.join(PROPOSAL_SOURCES)}"
            )
        if roi_op not in ROI_OPS:
            raise CnnzooError(f"unknown roi_op {roi_op!r}; choose one of {', '.join(ROI_OPS)}")
        if roi_size < 1 or head_channels < 1 or rois_per_image < 1:
            raise CnnzooError(
                f"roi_size, head_channels and rois_per_image must be >= 1, got {roi_size}, "
                f"{head_channels} and {rois_per_image}"
            )
        counts = (
            (int(num_proposals),) * 2
            if isinstance(num_proposals, int)
            else tuple(int(v) for v in num_proposals)
        )
        if len(counts) != 2 or min(counts) < 1:
            raise CnnzooError(
                f"num_proposals must be >= 1 or a (train, test) pair, got {num_proposals}"
            )
        if not 0 < fg_fraction <= 1:
            raise CnnzooError(f"fg_fraction must be in (0, 1], got {fg_fraction}")
        if len(bg_iou) != 2 or not 0 <= bg_iou[0] < bg_iou[1] <= fg_iou:
            raise CnnzooError(
                f"need 0 <= bg_iou[0] < bg_iou[1] <= fg_iou, got bg_iou={tuple(bg_iou)}, "
                f"fg_iou={fg_iou}"
            )
        if min(cls_weight, box_weight, rpn_weight) < 0:
            raise CnnzooError(
                f"loss weights must be >= 0, got cls_weight={cls_weight}, "
                f"box_weight={box_weight}, rpn_weight={rpn_weight}"
            )
        if feature_stride is not None and feature_stride < 1:
            raise CnnzooError(f"feature_stride must be >= 1 or None, got {feature_stride}")
        self.num_classes = num_classes
        self.proposal_source = proposals
        self.roi_size = int(roi_size)
        self.roi_op = roi_op
        self.num_proposals = counts
        self.rois_per_image = int(rois_per_image)
        self.fg_fraction = float(fg_fraction)
        self.fg_iou = float(fg_iou)
        self.bg_iou = (float(bg_iou[0]), float(bg_iou[1]))
        self.cls_weight = float(cls_weight)
        self.box_weight = float(box_weight)
        self.rpn_weight = float(rpn_weight)

        divisor = _pick_divisor(backbone, in_channels, feature_stride, **backbone_kwargs)
        self.backbone = build_backbone(backbone, in_channels, (divisor,), **backbone_kwargs)
        channels = self.backbone.feature_info.channels()[0]
        self.stride = float(self.backbone.feature_info.reduction()[0])
        if proposals == "rpn":
            kwargs: dict[str, Any] = dict(
                in_channels=channels,
                stride=self.stride,
                channels=rpn_channels,
                anchor_sizes=tuple(anchor_sizes),
                anchor_ratios=tuple(anchor_ratios),
            )
        elif proposals == "selective":
            kwargs = dict(cell_size=selective_cell)
        else:
            kwargs = {}
        self.proposer = build_proposer(proposals, **kwargs)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * roi_size * roi_size, head_channels),
            nn.ReLU(inplace=True),
            nn.Linear(head_channels, head_channels),
            nn.ReLU(inplace=True),
        )
        init_weights_kaiming(self.head, linear_std=None)
        self.cls_score = nn.Linear(head_channels, num_classes + 1)
        self.bbox_pred = nn.Linear(head_channels, 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, 0, 0.01)
        nn.init.normal_(self.bbox_pred.weight, 0, 0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(
        self,
        x: Tensor,
        targets: Sequence[dict[str, Tensor]] | None = None,
        proposals: Sequence[Tensor] | None = None,
    ) -> dict[str, Any]:
        """Return the outputs described in the class docstring.

        Args:
            x: ``(N, channels, H, W)`` images.
            targets: per image ``{"boxes": (G, 4), "labels": (G,)}`` (and ``"proposals"``
                with ``proposals="given"``); given: RoIs are sampled for training.
            proposals: per image ``(R_i, 4)`` xyxy boxes, only with ``proposals="given"``.

        Raises:
            CnnzooError: for a number of targets other than ``N``, ``proposals`` passed to a
                model with another source, or missing given proposals.
        """
        n = x.shape[0]
        if targets is not None and len(targets) != n:
            raise CnnzooError(f"got {len(targets)} targets for a batch of {n}")
        if proposals is not None and self.proposal_source != "given":
            raise CnnzooError(
                f"forward(proposals=...) needs a model built with proposals='given', this "
                f"one uses {self.proposal_source!r}"
            )
        if (
            proposals is None
            and targets is not None
            and self.proposal_source == "given"
            and all("proposals" in t for t in targets)
        ):
            proposals = [t["proposals"] for t in targets]
        image_size = (int(x.shape[-2]), int(x.shape[-1]))
        features = self.backbone(x)[0]
        num = self.num_proposals[0 if self.training else 1]
        boxes, outputs = self.proposer(x, features, image_size, num, proposals)
        outputs = dict(outputs)
        outputs["proposals"] = boxes
        if targets is not None:
            rois, classes, goals = [], [], []
            for props, target in zip(boxes, targets, strict=True):
                gt, labels = valid_boxes(target, x.device)
                r, c, m = sample_rois(
                    props,
                    gt,
                    labels,
                    self.rois_per_image,
                    self.fg_fraction,
                    self.fg_iou,
                    self.bg_iou,
                )
                rois.append(r)
                classes.append(c)
                goals.append(self._box_targets(r, c, m))
            outputs["roi_classes"] = torch.cat(classes)
            outputs["roi_targets"] = torch.cat(goals)
        else:
            rois = boxes
        pooled = pool_rois(features, rois, self.roi_size, self.stride, self.roi_op)
        hidden = self.head(pooled)
        outputs["rois"] = rois
        outputs["num_regions"] = torch.tensor([r.shape[0] for r in rois], device=x.device)
        outputs["logits"] = self.cls_score(hidden)
        outputs["deltas"] = self.bbox_pred(hidden).view(-1, self.num_classes, 4)
        return outputs

    @staticmethod
    def _box_targets(rois: Tensor, classes: Tensor, matched: Tensor) -> Tensor:
        goals = torch.zeros_like(rois)
        fg = classes > 0
        if fg.any():
            goals[fg] = encode_boxes(matched[fg], rois[fg])
        return goals

    def loss(
        self,
        outputs: dict[str, Any],
        targets: Sequence[dict[str, Tensor]],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        """Return ``{"loss", "loss_cls", "loss_box", "loss_rpn_obj", "loss_rpn_box"}``.

        Each component is already weighted (``cls_weight``, ``box_weight``, ``rpn_weight``)
        and ``loss`` is their sum; the RPN terms are 0 without an RPN. Outputs of a forward
        without targets are labelled here (see the module docstring).

        Raises:
            CnnzooError: if the number of targets differs from the batch size.
        """
        rois = outputs["rois"]
        if len(targets) != len(rois):
            raise CnnzooError(f"got {len(targets)} targets for a batch of {len(rois)}")
        logits, deltas = outputs["logits"].float(), outputs["deltas"].float()
        if "roi_classes" in outputs:
            classes, goals = outputs["roi_classes"], outputs["roi_targets"]
        else:
            labelled = []
            for r, target in zip(rois, targets, strict=True):
                gt, labels = valid_boxes(target, logits.device)
                c, m = label_rois(r, gt, labels, self.fg_iou)
                labelled.append((c, self._box_targets(r.float(), c, m)))
            classes = torch.cat([c for c, _ in labelled])
            goals = torch.cat([g for _, g in labelled])
        zero = logits.sum() * 0.0
        count = classes.numel()
        if count:
            loss_cls = F.cross_entropy(logits, classes)
            fg = (classes > 0).nonzero().flatten()
            chosen = deltas[fg, classes[fg] - 1]
            loss_box = F.smooth_l1_loss(chosen, goals[fg].float(), reduction="sum") / count
        else:
            loss_cls = loss_box = zero
        if "rpn_logits" in outputs:
            rpn_obj, rpn_box = self.proposer.loss(outputs, targets)
        else:
            rpn_obj = rpn_box = zero
        parts = {
            "loss_cls": self.cls_weight * loss_cls,
            "loss_box": self.box_weight * loss_box,
            "loss_rpn_obj": self.rpn_weight * rpn_obj,
            "loss_rpn_box": self.rpn_weight * rpn_box,
        }
        return {"loss": sum(parts.values()), **parts}

    @torch.no_grad()
    def decode(
        self,
        outputs: dict[str, Any],
        image_size: tuple[int, int],
        score_threshold: float = 0.05,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
    ) -> list[dict[str, Tensor]]:
        """Return per image ``{"boxes", "scores", "labels"}``: softmax scores of the object
        classes, each (RoI, class) pair above ``score_threshold`` with that class's refined
        box clipped to the image, class-aware NMS and the top ``max_detections``, sorted by
        decreasing score; labels ``0 .. C-1``."""
        scores_all = outputs["logits"].float().softmax(-1)[:, 1:]
        deltas_all = outputs["deltas"].float()
        results = []
        start = 0
        for rois in outputs["rois"]:
            end = start + rois.shape[0]
            scores, deltas = scores_all[start:end], deltas_all[start:end]
            start = end
            boxes = decode_deltas(deltas, rois.float()[:, None, :])  # (R, C, 4)
            index, label = (scores > score_threshold).nonzero(as_tuple=True)
            results.append(
                postprocess(
                    clip_boxes(boxes[index, label], tuple(image_size)),
                    scores[index, label],
                    label,
                    score_threshold,
                    iou_threshold,
                    max_detections,
                )
            )
        return results
