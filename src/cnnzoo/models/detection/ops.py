"""torchvision's box operations, without paying for ``import torchvision`` where it can be
avoided.

Importing ``torchvision`` imports ``torchvision.ops.roi_align``, which imports
``torch._dynamo``: about 1.1 s on a 2-core CPU, a third of a ``cnnzoo predict`` with a
detector. The operations a detector needs at inference are therefore served without it:

- ``nms`` and ``batched_nms`` call torchvision's compiled NMS kernel
  (``torch.ops.torchvision.nms``), loaded from torchvision's own shared library without
  running its Python package (milliseconds). Where that library cannot be found (another
  torchvision layout) the package is imported as usual.
- ``box_convert``, ``clip_boxes_to_image`` and ``remove_small_boxes`` are a few tensor
  operations, written out.

- ``roi_align`` and ``roi_pool`` (Fast R-CNN's RoI head) call torchvision's compiled kernels
  the same way on CPU (their gradients are registered with the kernels).

Everything used only in training (IoU) is torchvision's own function,
imported on first use. ``tests/test_detection_ops.py`` checks every function
against torchvision on random boxes.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def _ops() -> Any:
    import torchvision.ops

    return torchvision.ops


@functools.cache
def _kernels_loaded() -> bool:
    """Load torchvision's compiled operators into ``torch.ops.torchvision``.

    Returns:
        True when ``torch.ops.torchvision.nms`` is available (from an already imported
        torchvision, or from its shared library loaded here), False otherwise.
    """
    if "torchvision" in sys.modules:
        return True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    folder = Path(next(iter(spec.submodule_search_locations)))
    for name in ("_C_stable", "_C"):
        libraries = sorted(folder.glob(f"{name}.*so")) + sorted(folder.glob(f"{name}.*pyd"))
        if libraries:
            try:
                torch.ops.load_library(str(libraries[0]))
            except OSError:
                return False
            return hasattr(torch.ops.torchvision, "nms")
    return False


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """``torchvision.ops.nms``: indices of the boxes kept, highest score first."""
    if _kernels_loaded():
        return torch.ops.torchvision.nms(boxes, scores, float(iou_threshold))
    return _ops().nms(boxes, scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """``torchvision.ops.batched_nms``: NMS within each value of ``idxs``.

    Boxes of different groups are moved apart (each group offset by more than the largest
    coordinate) so that one NMS over all of them never lets one group suppress another.

    Returns:
        Indices of the boxes kept, highest score first.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """``torchvision.ops.box_convert`` between ``xyxy``, ``xywh`` and ``cxcywh``.

    Raises:
        ValueError: for another format.
    """
    formats = ("xyxy", "xywh", "cxcywh")
    if in_fmt not in formats or out_fmt not in formats:
        raise ValueError(f"box formats must be among {formats}, got {in_fmt!r} -> {out_fmt!r}")
    if in_fmt == out_fmt:
        return boxes.clone()
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        x1, y1, x2, y2 = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        x1, y1, x2, y2 = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    else:
        x1, y1, x2, y2 = a, b, c, d
    if out_fmt == "xyxy":
        return torch.stack((x1, y1, x2, y2), -1)
    if out_fmt == "xywh":
        return torch.stack((x1, y1, x2 - x1, y2 - y1), -1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), -1)


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """``torchvision.ops.clip_boxes_to_image``: xyxy boxes clamped into a ``(H, W)`` image."""
    height, width = size
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack((x, y), -1).reshape(boxes.shape)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """``torchvision.ops.box_iou``."""
    return _ops().box_iou(boxes1, boxes2)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """``torchvision.ops.remove_small_boxes``: indices of the xyxy boxes whose width and height
    are both at least ``min_size``."""
    sides = boxes[:, 2:] - boxes[:, :2]
    return torch.where((sides >= min_size).all(1))[0]


def _as_rois(boxes: Tensor | list[Tensor], like: Tensor) -> Tensor:
    """``(K, 5)`` rows ``(image index, x1, y1, x2, y2)`` from a list of per-image boxes."""
    if isinstance(boxes, Tensor):
        return boxes
    index = [torch.full((len(b), 1), i, dtype=like.dtype, device=like.device)
             for i, b in enumerate(boxes)]  # fmt: skip
    return torch.cat([torch.cat((i, b.to(like)), 1) for i, b in zip(index, boxes, strict=True)])


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _kernel_applies(features: Tensor) -> bool:
    return features.device.type == "cpu" and not features.is_quantized and _kernels_loaded()


def roi_align(
    features: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """``torchvision.ops.roi_align`` (its compiled kernel on CPU, with its gradient).

    Returns:
        ``(K, C, *output_size)``, one pooled map per box.
    """
    if not _kernel_applies(features):
        return _ops().roi_align(features, boxes, output_size, spatial_scale, sampling_ratio,
                                aligned)  # fmt: skip
    height, width = _pair(output_size)
    rois = _as_rois(boxes, features)
    return torch.ops.torchvision.roi_align(
        features, rois, float(spatial_scale), height, width, int(sampling_ratio), bool(aligned)
    )


def roi_pool(
    features: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """``torchvision.ops.roi_pool`` (its compiled kernel on CPU, with its gradient).

    Returns:
        ``(K, C, *output_size)``, one max-pooled map per box.
    """
    if not _kernel_applies(features):
        return _ops().roi_pool(features, boxes, output_size, spatial_scale)
    height, width = _pair(output_size)
    rois = _as_rois(boxes, features)
    return torch.ops.torchvision.roi_pool(features, rois, float(spatial_scale), height, width)[0]
