"""The sliding-window detector's windows: the multi-scale, multi-aspect grid, crop-and-resize
of each window from the images, window labelling against the ground truth, and the balanced
sample of windows a training step classifies (see :mod:`cnnzoo.models.detection.sliding_window`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from cnnzoo.errors import CnnzooError
from cnnzoo.models.detection.coders import SSD_VARIANCES, ssd_encode
from cnnzoo.models.detection.ops import box_convert, box_iou, roi_align


def check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    """Return ``(H, W)`` as ints.

    Raises:
        CnnzooError: unless two positive sides are given.
    """
    if len(image_size) != 2 or min(int(s) for s in image_size) < 1:
        raise CnnzooError(f"image_size must be (H, W) with positive sides, got {image_size}")
    return int(image_size[0]), int(image_size[1])


def _positions(extent: float, length: float, stride_fraction: float) -> Tensor:
    """Return the start coordinates of windows of ``length`` sliding over ``extent``."""
    span = extent - length
    count = max(math.ceil(span / (stride_fraction * length) - 1e-6), 0) + 1
    if count == 1:
        return torch.zeros(1, dtype=torch.float64)
    return torch.linspace(0.0, span, count, dtype=torch.float64)


def sliding_windows(
    image_size: Sequence[int],
    window_sizes: Sequence[float] = (0.25, 0.5, 0.75),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    stride_fraction: float = 0.25,
) -> Tensor:
    """Return every sliding window of an image, ``(K, 4)`` xyxy pixels (float32).

    Args:
        image_size: ``(H, W)`` in pixels.
        window_sizes: scales, each a fraction in ``(0, 1]`` of the shorter image side.
        aspect_ratios: width / height of the windows, each ``> 0``.
        stride_fraction: the grid's stride as a fraction in ``(0, 1]`` of the window's width
            (horizontally) and height (vertically).

    Returns:
        The windows of the first scale and first ratio, then the first scale and second ratio,
        and so on; within one shape, row by row (top first), left to right. Window ``w x h``
        (``w = s * min(H, W) * sqrt(a)``, ``h = s * min(H, W) / sqrt(a)``, each clamped to the
        image) takes ``ceil((W - w) / (stride_fraction * w)) + 1`` evenly spread columns from
        ``x = 0`` to ``x = W - w``, and as many rows by the same rule; all windows lie inside
        the image and together cover it.

    Raises:
        CnnzooError: for an empty or out-of-range ``window_sizes`` or ``aspect_ratios``, a
            ``stride_fraction`` outside ``(0, 1]`` or a non-positive image size.
    """
    img_h, img_w = check_image_size(image_size)
    scales, ratios = check_window_options(window_sizes, aspect_ratios, stride_fraction)
    side = min(img_h, img_w)
    out = []
    for s in scales:
        for a in ratios:
            w = min(s * side * math.sqrt(a), img_w)
            h = min(s * side / math.sqrt(a), img_h)
            ys, xs = torch.meshgrid(
                _positions(img_h, h, stride_fraction),
                _positions(img_w, w, stride_fraction),
                indexing="ij",
            )
            x1, y1 = xs.reshape(-1), ys.reshape(-1)
            out.append(torch.stack([x1, y1, x1 + w, y1 + h], -1))
    boxes = torch.cat(out)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, img_w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, img_h)
    return boxes.float()


def check_window_options(
    window_sizes: Sequence[float], aspect_ratios: Sequence[float], stride_fraction: float
) -> tuple[list[float], list[float]]:
    """Return the window sizes and aspect ratios as float lists.

    Raises:
        CnnzooError: for sizes outside (0, 1], non-positive ratios or a stride fraction
            outside (0, 1].
    """
    scales = [float(s) for s in window_sizes]
    ratios = [float(a) for a in aspect_ratios]
    if not scales or any(not 0 < s <= 1 for s in scales):
        raise CnnzooError(
            f"window_sizes must be a non-empty list of fractions in (0, 1] of the shorter "
            f"image side, got {tuple(window_sizes)}"
        )
    if not ratios or any(not a > 0 for a in ratios):
        raise CnnzooError(
            f"aspect_ratios must be a non-empty list of positive numbers, got "
            f"{tuple(aspect_ratios)}"
        )
    if not 0 < stride_fraction <= 1:
        raise CnnzooError(f"stride_fraction must be in (0, 1], got {stride_fraction}")
    return scales, ratios


def crop_windows(images: Tensor, rois: Tensor, crop_size: int) -> Tensor:
    """Return the windows ``rois`` cut from ``images`` and resized, ``(M, C, S, S)``.

    Bilinear ``roi_align`` with ``aligned=True`` (pixel ``i`` covers ``[i, i + 1)``) and an
    adaptive number of samples per output pixel (``ceil(window / S)`` per side), so an
    integer window downscaled by an integer factor gives the mean of the pixels each output
    pixel covers, and one downscaled by 2 equals ``F.interpolate(..., mode="bilinear")``.

    Args:
        images: ``(N, C, H, W)``.
        rois: ``(M, 5)``: image index in the batch, then ``x1, y1, x2, y2`` in pixels.
        crop_size: side ``S`` of the square crops.

    Raises:
        CnnzooError: for wrong shapes or ``crop_size < 1``.
    """
    if images.dim() != 4 or rois.dim() != 2 or rois.shape[1] != 5:
        raise CnnzooError(
            f"images must be (N, C, H, W) and rois (M, 5), got {tuple(images.shape)} and "
            f"{tuple(rois.shape)}"
        )
    if crop_size < 1:
        raise CnnzooError(f"crop_size must be >= 1, got {crop_size}")
    return roi_align(
        images,
        rois.to(images.dtype),
        output_size=(crop_size, crop_size),
        spatial_scale=1.0,
        sampling_ratio=-1,
        aligned=True,
    )


def label_windows(
    windows: Tensor,
    boxes: Tensor,
    labels: Tensor,
    fg_iou: float = 0.5,
    bg_iou: float = 0.3,
    variances: Sequence[float] = SSD_VARIANCES,
) -> tuple[Tensor, Tensor]:
    """Return the training targets of ``windows (K, 4)`` xyxy against one image's truths.

    Args:
        windows: ``(K, 4)`` xyxy pixels, each with positive width and height.
        boxes: ``(G, 4)`` xyxy ground truths; labels: ``(G,)`` in ``0 .. C-1``.
        fg_iou: best IoU from which a window is positive (its best truth's class).
        bg_iou: best IoU below which a window is background.

    Returns:
        ``(classes, offsets)``: ``(K,)`` int64, ``label + 1`` for a positive window, 0 for
        background, -1 for an ignored one (best IoU in ``[bg_iou, fg_iou)``); ``(K, 4)``
        :func:`~cnnzoo.models.detection.coders.ssd_encode` offsets of the best truth relative
        to the window for positives, zeros elsewhere.

    Raises:
        CnnzooError: for mismatched shapes or thresholds not ``0 <= bg_iou <= fg_iou <= 1``.
    """
    if windows.dim() != 2 or windows.shape[1] != 4:
        raise CnnzooError(f"windows must be (K, 4), got {tuple(windows.shape)}")
    if boxes.dim() != 2 or boxes.shape[1] != 4 or labels.shape != boxes.shape[:1]:
        raise CnnzooError(
            f"boxes must be (G, 4) and labels (G,), got {tuple(boxes.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if not 0 <= bg_iou <= fg_iou <= 1:
        raise CnnzooError(f"need 0 <= bg_iou <= fg_iou <= 1, got bg_iou={bg_iou}, fg_iou={fg_iou}")
    k = windows.shape[0]
    classes = torch.zeros(k, dtype=torch.int64, device=windows.device)
    offsets = torch.zeros(k, 4, device=windows.device)
    if boxes.shape[0] == 0 or k == 0:
        return classes, offsets
    windows = windows.float()
    boxes = boxes.to(windows)
    best_iou, best = box_iou(windows, boxes).max(1)
    positive = best_iou >= fg_iou
    classes[(best_iou >= bg_iou) & ~positive] = -1
    classes[positive] = labels.to(windows.device)[best[positive]].long() + 1
    if positive.any():
        priors = box_convert(windows[positive], "xyxy", "cxcywh")
        offsets[positive] = ssd_encode(boxes[best[positive]], priors, variances)
    return classes, offsets


def _jitter(boxes: Tensor, count: int, amount: float, image_size: tuple[int, int]) -> Tensor:
    """Return ``count`` random copies of ``boxes (G, 4)`` with centres moved by up to
    ``amount`` of their size and sides scaled by up to ``exp(+-amount)``, clipped."""
    index = torch.randint(boxes.shape[0], (count,), device=boxes.device)
    cxcywh = box_convert(boxes[index], "xyxy", "cxcywh")
    noise = (torch.rand(count, 4, device=boxes.device) * 2 - 1) * amount
    centre = cxcywh[:, :2] + noise[:, :2] * cxcywh[:, 2:]
    size = cxcywh[:, 2:] * noise[:, 2:].exp()
    out = box_convert(torch.cat([centre, size], -1), "cxcywh", "xyxy")
    out[:, 0::2] = out[:, 0::2].clamp(0, image_size[1])
    out[:, 1::2] = out[:, 1::2].clamp(0, image_size[0])
    return out


def _pick(index: Tensor, count: int) -> Tensor:
    """Return ``min(count, len(index))`` entries of ``index`` at random, without replacement."""
    if count <= 0 or index.numel() == 0:
        return index[:0]
    order = torch.randperm(index.numel(), device=index.device)[:count]
    return index[order]


def sample_windows(
    windows: Tensor,
    boxes: Tensor,
    labels: Tensor,
    image_size: Sequence[int],
    num_samples: int = 64,
    positive_fraction: float = 0.25,
    fg_iou: float = 0.5,
    bg_iou: float = 0.3,
    jitter: float = 0.1,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sample one image's training windows, as Fast R-CNN samples its RoIs.

    Up to ``round(positive_fraction * num_samples)`` positives (labelled by
    :func:`label_windows`) are drawn from the grid; if it has fewer, ground-truth boxes and
    jittered copies of them (see ``jitter``) that are still positive make up the shortfall.
    The rest are background windows. When the grid lacks background windows too, the chosen
    windows are repeated (at random) until there are ``num_samples``; if every window is
    ignored (best IoU between ``bg_iou`` and ``fg_iou``, no truth to jitter), ignored windows
    (class -1) are returned, which the loss leaves out.

    Args:
        windows: ``(K, 4)`` xyxy grid windows; boxes, labels: the image's truths.
        image_size: ``(H, W)``; jittered boxes are clipped to it.
        jitter: centre shift (fraction of the size) and log-scale range of jittered boxes.

    Returns:
        ``(windows, classes, offsets)`` of the ``num_samples`` sampled windows: ``(S, 4)``,
        ``(S,)`` with 0 = background, ``label + 1`` for positives (-1 ignored, see above),
        ``(S, 4)`` offset targets.

    Raises:
        CnnzooError: for ``num_samples < 1``, ``positive_fraction`` outside ``[0, 1]`` or
            the errors of :func:`label_windows`.
    """
    size = check_image_size(image_size)
    if num_samples < 1:
        raise CnnzooError(f"num_samples must be >= 1, got {num_samples}")
    if not 0 <= positive_fraction <= 1:
        raise CnnzooError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    classes, offsets = label_windows(windows, boxes, labels, fg_iou, bg_iou)
    want_pos = round(positive_fraction * num_samples)
    pos = _pick((classes > 0).nonzero().flatten(), want_pos)
    cand_w, cand_c, cand_o = windows.float(), classes, offsets
    short = want_pos - pos.numel()
    if short > 0 and boxes.shape[0] > 0:
        extra = torch.cat([boxes.to(windows), _jitter(boxes.to(windows), 4 * short, jitter, size)])
        extra = extra[(extra[:, 2] > extra[:, 0]) & (extra[:, 3] > extra[:, 1])]
        extra_c, extra_o = label_windows(extra, boxes, labels, fg_iou, bg_iou)
        k = windows.shape[0]
        cand_w = torch.cat([cand_w, extra])
        cand_c = torch.cat([cand_c, extra_c])
        cand_o = torch.cat([cand_o, extra_o])
        pos = torch.cat([pos, _pick((extra_c > 0).nonzero().flatten() + k, short)])
    neg = _pick((cand_c == 0).nonzero().flatten(), num_samples - pos.numel())
    chosen = torch.cat([pos, neg])
    if chosen.numel() == 0:  # every window ignored: they are kept, the loss skips them
        chosen = _pick(torch.arange(windows.shape[0], device=windows.device), num_samples)
    if chosen.numel() < num_samples:
        more = torch.randint(chosen.numel(), (num_samples - chosen.numel(),), device=chosen.device)
        chosen = torch.cat([chosen, chosen[more]])
    return cand_w[chosen], cand_c[chosen], cand_o[chosen]
