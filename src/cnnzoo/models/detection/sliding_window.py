"""The naive detector: a CNN classifies many crops of the image (sliding windows).

The lecture's "naive approach" to detection: cut the image into many crops, at many
locations, scales and aspect ratios, and let a classification CNN say for each crop which
object it shows, or background. Sermanet et al. (OverFeat, ICLR 2014) made this a
convolutional sliding window; here every window really is cropped and classified on its own,
so the cost the lecture warns about (one CNN evaluation per window) is visible:
:meth:`SlidingWindowDetector.num_windows` counts them.

Windows (:func:`sliding_windows`): for each scale ``s`` in ``window_sizes`` (a fraction of
the image's shorter side) and each aspect ratio ``a`` (width / height), a window of
``s * min(H, W) * sqrt(a)`` by ``s * min(H, W) / sqrt(a)`` pixels, each side clamped to the
image. It slides on a regular grid with a stride of ``stride_fraction`` times its own width
(horizontally) and height (vertically): ``ceil((W - w) / (stride_fraction * w)) + 1``
positions per row, spread evenly from the left to the right edge (so the last window touches
the edge and the actual stride is at most the nominal one), likewise per column. Windows stay
inside the image and cover it. They are computed for the actual input size and cached per
size.

Each window is cut from the image batch and resized to ``crop_size x crop_size`` with
``torchvision.ops.roi_align`` (bilinear, ``aligned=True``, adaptive sampling so that a
downscaled crop averages the pixels it covers), then goes through the backbone (any
registered classifier, its deepest map), global average pooling and two linear heads:
``C + 1`` class logits (index 0 is the background inside the model; dataset labels
``0 .. C-1`` become ``1 .. C``) and 4 box offsets that refine the window, encoded as SSD /
Fast R-CNN deltas relative to the window
(:func:`~cnnzoo.models.detection.coders.ssd_encode`, variances 0.1 and 0.2: Fast R-CNN's
target normalisation).

Labelling (:func:`label_windows`): a window whose best IoU with a ground truth is at least
``fg_iou = 0.5`` is that truth's class; below ``bg_iou = 0.3`` it is background; in between
it is ignored. Training (``forward(images, targets)``) samples a fixed ``windows_per_image``
windows per image, as Fast R-CNN samples its RoI minibatch: at most
``positive_fraction = 0.25`` of them positive, the rest background, uniformly at random. When
the grid holds too few positives (small objects, odd shapes) the ground-truth boxes and
jittered copies of them that still overlap a truth by ``fg_iou`` make up the shortfall
(:func:`sample_windows`). The loss is the lecture's compound loss,
``cls_weight * cross-entropy(classes) + box_weight * smooth L1(offsets)``: cross-entropy
averaged over the sampled windows, smooth L1 summed over the 4 offsets and averaged over the
positive windows only. Inference (``forward(images)``) classifies *all* windows, in chunks of
``chunk_size`` crops to bound memory; the loss of such outputs labels every window against
the truths (ignored windows left out), which is how a validation loss is computed.

Decoding: softmax, background dropped, each window's box refined by its offsets, then
:func:`~cnnzoo.models.detection.postprocess.score_candidates` (threshold, class-aware NMS,
top-k).

Departures: OverFeat runs the classifier convolutionally over the whole image (shared
computation) and merges boxes by its own greedy scheme; here crops are classified
independently (the naive approach of the lecture) and merged by NMS. The box head and the
training sampler are Fast R-CNN's (Girshick, ICCV 2015), applied to windows instead of
region proposals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.models.backbones import build_backbone
from cnnzoo.models.detection.coders import SSD_VARIANCES, ssd_decode
from cnnzoo.models.detection.ops import box_convert
from cnnzoo.models.detection.postprocess import score_candidates, valid_boxes
from cnnzoo.models.detection.windows import (
    check_image_size,
    check_window_options,
    crop_windows,
    label_windows,
    sample_windows,
    sliding_windows,
)
from cnnzoo.registry import register_model

SERMANET_2014 = (
    "Sermanet, Eigen, Zhang, Mathieu, Fergus, LeCun, OverFeat: Integrated Recognition, "
    "Localization and Detection using Convolutional Networks, ICLR 2014"
)

# Largest log size ratio decoded (as torchvision's detectors: no box above 1000/16 windows).
_MAX_LOG_SCALE = math.log(1000.0 / 16)


class SlidingWindowDetector(nn.Module):
    """A crop classifier slid over the image: crop, backbone, pooling, class and box heads.

    Args:
        num_classes: object classes ``C`` (background not counted).
        in_channels: channels of the input image.
        backbone: name of a registered classifier; its deepest map is pooled.
        window_sizes: window scales, fractions of the shorter image side.
        aspect_ratios: window width / height ratios.
        stride_fraction: the grid's stride as a fraction of the window's size.
        crop_size: side of the square crop each window is resized to.
        cls_weight: weight of the classification loss.
        box_weight: weight of the box-offset loss.
        windows_per_image: windows sampled per image in training.
        positive_fraction: largest share of positives among them.
        fg_iou: IoU with a truth from which a window is positive.
        bg_iou: IoU below which a window is background.
        chunk_size: crops classified at once when all windows are (inference).
        **backbone_kwargs: options of the backbone builder, e.g. ``widths=(16, 32)``.

    ``forward(images)`` returns ``{"logits": (N, K, C + 1), "deltas": (N, K, 4),
    "windows": (K, 4)}`` for all ``K`` windows of the input size (xyxy pixels, no batch
    dimension). ``forward(images, targets)`` samples ``S = windows_per_image`` windows per
    image and returns ``{"logits": (N S, C + 1), "deltas": (N S, 4), "windows": (N S, 4),
    "batch_index": (N S,), "classes": (N S,), "offsets": (N S, 4)}``, the last two being the
    sampled windows' targets (see :func:`sample_windows`).

    Raises:
        CnnzooError: for ``num_classes < 1``, bad window options (see
            :func:`sliding_windows`), ``crop_size``, ``windows_per_image`` or ``chunk_size``
            below 1, or thresholds not ``0 <= bg_iou <= fg_iou <= 1``.
    """

    uses_targets: ClassVar[bool] = True

    def __init__(
        self,
        num_classes: int = 20,
        in_channels: int = 3,
        backbone: str = "convnet",
        window_sizes: Sequence[float] = (0.25, 0.5, 0.75),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        stride_fraction: float = 0.25,
        crop_size: int = 32,
        cls_weight: float = 1.0,
        box_weight: float = 1.0,
        windows_per_image: int = 64,
        positive_fraction: float = 0.25,
        fg_iou: float = 0.5,
        bg_iou: float = 0.3,
        chunk_size: int = 512,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise CnnzooError(f"num_classes must be >= 1, got {num_classes}")
        scales, ratios = check_window_options(window_sizes, aspect_ratios, stride_fraction)
        for name, value in (
            ("crop_size", crop_size),
            ("windows_per_image", windows_per_image),
            ("chunk_size", chunk_size),
        ):
            if int(value) != value or value < 1:
                raise CnnzooError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= positive_fraction <= 1:
            raise CnnzooError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        if not 0 <= bg_iou <= fg_iou <= 1:
            raise CnnzooError(
                f"need 0 <= bg_iou <= fg_iou <= 1, got bg_iou={bg_iou}, fg_iou={fg_iou}"
            )
        self.num_classes = num_classes
        self.window_sizes = tuple(scales)
        self.aspect_ratios = tuple(ratios)
        self.stride_fraction = float(stride_fraction)
        self.crop_size = int(crop_size)
        self.cls_weight = float(cls_weight)
        self.box_weight = float(box_weight)
        self.windows_per_image = int(windows_per_image)
        self.positive_fraction = float(positive_fraction)
        self.fg_iou = float(fg_iou)
        self.bg_iou = float(bg_iou)
        self.chunk_size = int(chunk_size)
        self.backbone = build_backbone(backbone, in_channels, (None,), **backbone_kwargs)
        channels = self.backbone.feature_info.channels()[0]
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(channels, num_classes + 1)
        self.box_head = nn.Linear(channels, 4)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)
        nn.init.normal_(self.box_head.weight, 0, 0.001)
        nn.init.zeros_(self.box_head.bias)
        self._windows: dict[tuple[int, int], Tensor] = {}

    def windows(self, image_size: Sequence[int]) -> Tensor:
        """Return the ``(K, 4)`` xyxy windows of an ``(H, W)`` image (cached per size, CPU).

        Raises:
            CnnzooError: for a non-positive image size.
        """
        key = check_image_size(image_size)
        if key not in self._windows:
            self._windows[key] = sliding_windows(
                key, self.window_sizes, self.aspect_ratios, self.stride_fraction
            )
        return self._windows[key]

    def num_windows(self, image_size: Sequence[int]) -> int:
        """Return ``K``, the windows of an ``(H, W)`` image: CNN evaluations per image."""
        return int(self.windows(image_size).shape[0])

    def classify(self, images: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """Return the class logits ``(M, C + 1)`` and box offsets ``(M, 4)`` of the crops
        ``rois (M, 5)`` (image index, xyxy) of ``images``, in one pass."""
        crops = crop_windows(images, rois, self.crop_size)
        features = self.pool(self.backbone(crops)[0])
        return self.classifier(features), self.box_head(features)

    def forward(
        self, x: Tensor, targets: Sequence[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor]:
        """Return all windows' outputs, or with ``targets`` the sampled windows' outputs and
        targets (see the class docstring).

        Raises:
            CnnzooError: if the number of targets differs from the batch size.
        """
        n = x.shape[0]
        size = (int(x.shape[-2]), int(x.shape[-1]))
        windows = self.windows(size).to(x.device)
        if targets is not None:
            if len(targets) != n:
                raise CnnzooError(f"got {len(targets)} targets for a batch of {n}")
            sampled = []
            for target in targets:
                boxes, labels = valid_boxes(target, x.device)
                sampled.append(
                    sample_windows(
                        windows,
                        boxes,
                        labels,
                        size,
                        self.windows_per_image,
                        self.positive_fraction,
                        self.fg_iou,
                        self.bg_iou,
                    )
                )
            boxes = torch.cat([s[0] for s in sampled])
            batch_index = torch.arange(n, device=x.device).repeat_interleave(self.windows_per_image)
            rois = torch.cat([batch_index[:, None].to(boxes), boxes], 1)
            logits, deltas = self.classify(x, rois)
            return {
                "logits": logits,
                "deltas": deltas,
                "windows": boxes,
                "batch_index": batch_index,
                "classes": torch.cat([s[1] for s in sampled]),
                "offsets": torch.cat([s[2] for s in sampled]),
            }
        k = windows.shape[0]
        batch_index = torch.arange(n, device=x.device).repeat_interleave(k)
        rois = torch.cat([batch_index[:, None].to(windows), windows.repeat(n, 1)], 1)
        parts = [self.classify(x, chunk) for chunk in rois.split(self.chunk_size)]
        logits = torch.cat([p[0] for p in parts]).view(n, k, -1)
        deltas = torch.cat([p[1] for p in parts]).view(n, k, 4)
        return {"logits": logits, "deltas": deltas, "windows": windows}

    def loss(
        self,
        outputs: dict[str, Tensor],
        targets: Sequence[dict[str, Tensor]],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        """Return ``{"loss", "loss_cls", "loss_box"}``, components weighted and summed.

        ``loss_cls`` is ``cls_weight`` times the cross-entropy averaged over the windows,
        ``loss_box`` ``box_weight`` times the smooth L1 of the offsets summed over the 4
        coordinates and averaged over the positive windows (0 without any). Training outputs
        (from ``forward(images, targets)``) carry their sampled targets; for outputs of all
        windows every window is labelled against ``targets`` by :func:`label_windows` and the
        ignored ones are left out.

        Raises:
            CnnzooError: if the number of targets differs from the batch size.
        """
        logits, deltas = outputs["logits"], outputs["deltas"]
        if "classes" in outputs:
            classes, offsets = outputs["classes"], outputs["offsets"]
        else:
            n = logits.shape[0]
            if len(targets) != n:
                raise CnnzooError(f"got {len(targets)} targets for a batch of {n}")
            windows = outputs["windows"]
            pairs = [
                label_windows(windows, *valid_boxes(t, windows.device), self.fg_iou, self.bg_iou)
                for t in targets
            ]
            classes = torch.cat([p[0] for p in pairs])
            offsets = torch.cat([p[1] for p in pairs])
            logits, deltas = logits.flatten(0, 1), deltas.flatten(0, 1)
        keep = classes >= 0
        if keep.any():
            loss_cls = F.cross_entropy(logits.float()[keep], classes[keep])
        else:
            loss_cls = logits.sum() * 0.0
        positive = classes > 0
        num_pos = positive.sum().clamp(min=1)
        loss_box = (
            F.smooth_l1_loss(deltas.float()[positive], offsets[positive].float(), reduction="sum")
            / num_pos
        )
        loss_cls = self.cls_weight * loss_cls
        loss_box = self.box_weight * loss_box
        return {"loss": loss_cls + loss_box, "loss_cls": loss_cls, "loss_box": loss_box}

    @torch.no_grad()
    def decode(
        self,
        outputs: dict[str, Tensor],
        image_size: tuple[int, int],
        score_threshold: float = 0.05,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
    ) -> list[dict[str, Tensor]]:
        """Return the detections of each image, ``{"boxes", "scores", "labels"}``.

        Softmax over the classes, background dropped, every window refined by its offsets
        (:func:`~cnnzoo.models.detection.coders.ssd_decode`), then every (window, class) pair
        above ``score_threshold`` through
        :func:`~cnnzoo.models.detection.postprocess.score_candidates` (boxes clipped to the
        image, class-aware NMS, top ``max_detections``). Labels are ``0 .. C-1``, sorted by
        decreasing score.

        Raises:
            CnnzooError: for training outputs (sampled windows), which are not per image.
        """
        if "classes" in outputs or outputs["logits"].dim() != 3:
            raise CnnzooError(
                "decode needs the outputs of all windows, forward(images) without targets"
            )
        logits, deltas = outputs["logits"].float(), outputs["deltas"].float()
        windows = box_convert(outputs["windows"].float(), "xyxy", "cxcywh")
        v1 = SSD_VARIANCES[1]
        deltas = torch.cat([deltas[..., :2], deltas[..., 2:].clamp(max=_MAX_LOG_SCALE / v1)], -1)
        boxes = ssd_decode(deltas, windows)  # (N, K, 4)
        scores = logits.softmax(-1)[..., 1:]  # (N, K, C)
        size = (int(image_size[0]), int(image_size[1]))
        return score_candidates(boxes, scores, size, score_threshold, iou_threshold, max_detections)


@register_model(
    task="detection",
    paper=SERMANET_2014,
    input_size=(3, 96, 96),
    min_input_size=32,
    family="sliding_window",
)
def sliding_window(
    num_classes: int = 20,
    in_channels: int = 3,
    backbone: str = "convnet",
    window_sizes: Sequence[float] = (0.25, 0.5, 0.75),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    stride_fraction: float = 0.25,
    crop_size: int = 32,
    cls_weight: float = 1.0,
    box_weight: float = 1.0,
    windows_per_image: int = 64,
    positive_fraction: float = 0.25,
    fg_iou: float = 0.5,
    bg_iou: float = 0.3,
    chunk_size: int = 512,
    **backbone_kwargs: Any,
) -> SlidingWindowDetector:
    """The naive detector: windows of 3 scales (0.25, 0.5, 0.75 of the shorter side) and
    3 aspect ratios (1:2, 1:1, 2:1) at a quarter-window stride, each cropped to 32x32 and
    classified (627 CNN evaluations for a 96x96 image); 64 windows sampled per training
    image, a quarter of them positive."""
    return SlidingWindowDetector(
        num_classes,
        in_channels,
        backbone,
        window_sizes=tuple(window_sizes),
        aspect_ratios=tuple(aspect_ratios),
        stride_fraction=stride_fraction,
        crop_size=crop_size,
        cls_weight=cls_weight,
        box_weight=box_weight,
        windows_per_image=windows_per_image,
        positive_fraction=positive_fraction,
        fg_iou=fg_iou,
        bg_iou=bg_iou,
        chunk_size=chunk_size,
        **backbone_kwargs,
    )
