"""torchvision's box operations, imported on first use.

Importing ``torchvision.ops`` imports ``torch._dynamo`` (about a second on a 2-core CPU), and
every ``import cnnzoo`` registers the detectors. Through these wrappers a command that never
touches a box (``cnnzoo predict`` with a classifier) does not pay for it. Each wrapper is
torchvision's function itself once called: same arguments, same result.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor


def _ops() -> Any:
    import torchvision.ops

    return torchvision.ops


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """``torchvision.ops.batched_nms``."""
    return _ops().batched_nms(boxes, scores, idxs, iou_threshold)


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """``torchvision.ops.box_convert``."""
    return _ops().box_convert(boxes, in_fmt, out_fmt)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """``torchvision.ops.box_iou``."""
    return _ops().box_iou(boxes1, boxes2)


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """``torchvision.ops.clip_boxes_to_image``."""
    return _ops().clip_boxes_to_image(boxes, size)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """``torchvision.ops.nms``."""
    return _ops().nms(boxes, scores, iou_threshold)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """``torchvision.ops.remove_small_boxes``."""
    return _ops().remove_small_boxes(boxes, min_size)


def roi_align(*args: Any, **kwargs: Any) -> Tensor:
    """``torchvision.ops.roi_align``."""
    return _ops().roi_align(*args, **kwargs)


def roi_pool(*args: Any, **kwargs: Any) -> Tensor:
    """``torchvision.ops.roi_pool``."""
    return _ops().roi_pool(*args, **kwargs)
