"""IoU-family box losses on decoded boxes, from ``torchvision.ops``.

Squared errors on ``(t_x, t_y, t_w, t_h)`` (YOLOv3) or smooth L1 on SSD offsets weigh every
coordinate alike, while the metric (IoU) depends on how the box overlaps. The modern recipe
compares the *decoded* box with the truth instead:

- GIoU: Rezatofighi et al., "Generalized Intersection over Union", CVPR 2019;
- DIoU / CIoU: Zheng et al., "Distance-IoU Loss: Faster and Better Learning for Bounding Box
  Regression", AAAI 2020 (CIoU is the YOLOv4/v5 default).

The parameterisation of each paper (``sigmoid(t) + c``, ``p exp(t)``, SSD's offsets) is kept:
only the loss on its output changes.
"""

from __future__ import annotations

from torch import Tensor

from cnnzoo.errors import CnnzooError

IOU_LOSSES = {
    "giou": "generalized_box_iou_loss",
    "diou": "distance_box_iou_loss",
    "ciou": "complete_box_iou_loss",
}
"""The IoU-family losses by name: their ``torchvision.ops`` functions (each
``1 - IoU + penalty``, per box). torchvision is imported when a loss is computed, so a
detector's inference does not pay for it."""


def check_box_loss(name: str, paper: str) -> str:
    """Return ``name`` if it is ``paper`` (the model's own loss) or one of :data:`IOU_LOSSES`.

    Raises:
        CnnzooError: naming the value and the valid ones.
    """
    if name != paper and name not in IOU_LOSSES:
        valid = ", ".join((paper, *IOU_LOSSES))
        raise CnnzooError(f"box_loss={name!r} is unknown; expected one of {valid}")
    return name


def iou_loss(name: str, pred_xyxy: Tensor, target_xyxy: Tensor) -> Tensor:
    """Return the summed IoU-family loss ``name`` of ``pred_xyxy (K, 4)`` against
    ``target_xyxy (K, 4)`` (pixels; 0 for ``K = 0``).

    Raises:
        CnnzooError: for an unknown name or mismatched shapes.
    """
    if name not in IOU_LOSSES:
        raise CnnzooError(f"box_loss={name!r} is unknown; expected one of {', '.join(IOU_LOSSES)}")
    if pred_xyxy.shape != target_xyxy.shape or pred_xyxy.shape[-1:] != (4,):
        raise CnnzooError(
            f"boxes must both be (K, 4), got {tuple(pred_xyxy.shape)} and "
            f"{tuple(target_xyxy.shape)}"
        )
    if pred_xyxy.numel() == 0:
        return pred_xyxy.sum() * 0
    import torchvision.ops

    loss = getattr(torchvision.ops, IOU_LOSSES[name])
    return loss(pred_xyxy.float(), target_xyxy.float(), reduction="sum")
