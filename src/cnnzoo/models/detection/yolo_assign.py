"""YOLOv3's target assignment and ignore rule for a whole batch at once.

The rules are :meth:`cnnzoo.models.detection.yolov3.YOLOv3.assign`'s; this module computes
them with tensor operations over every truth of the batch (no Python loop over truths or
images), which matters on a CPU: the per-truth loop cost about as much as the forward pass
of ``yolov3_tiny``.

How a slot (image, scale, anchor, row, column) claimed by several truths is resolved: claims
are ordered by (own best anchor at the centre cell after extra positives, smaller area
before larger, then truth, anchor rank and cell in the order they are made), and the last
one wins — a truth's best anchor at its centre cell beats ``"multi"``'s extra positives, and
then the larger truth is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnzoo.models.detection.anchors import anchor_iou
from cnnzoo.models.detection.coders import yolo_encode
from cnnzoo.models.detection.postprocess import valid_boxes


def batch_truths(
    targets: Sequence[dict[str, Tensor]], device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Return every valid truth of the batch: boxes ``(T, 4)``, labels ``(T,)`` and the
    index of its image ``(T,)``, in image order."""
    per = [valid_boxes(t, device) for t in targets]
    if not per:
        none = torch.zeros(0, dtype=torch.int64, device=device)
        return torch.zeros(0, 4, device=device), none, none
    counts = torch.as_tensor([len(b) for b, _ in per], device=device)
    image = torch.repeat_interleave(torch.arange(len(per), device=device), counts)
    return torch.cat([b for b, _ in per]), torch.cat([lab for _, lab in per]), image


def assign_targets(
    targets: Sequence[dict[str, Tensor]],
    grid_sizes: Sequence[tuple[int, int]],
    anchors: Tensor,
    strides: Sequence[int],
    num_classes: int,
    multi: bool,
    assign_iou: float,
) -> list[dict[str, Tensor]]:
    """Assign every truth of the batch to anchors and cells (see
    :meth:`~cnnzoo.models.detection.yolov3.YOLOv3.assign` for the rules and the returned
    dicts).

    Args:
        targets: one ``{"boxes", "labels"}`` per image.
        grid_sizes: ``(H_k, W_k)`` of each scale, finest first.
        anchors: ``(3 K, 2)`` anchors sorted by area; scale ``k`` uses rows ``3k .. 3k + 2``;
            their device is where everything is built.
        strides: pixels per cell of each scale.
        num_classes: ``C``.
        multi: YOLOv5's several positives (anchors above ``assign_iou``, two neighbour
            cells) instead of the paper's one.
        assign_iou: the shape IoU above which ``multi`` makes an anchor positive.

    Returns:
        Per scale ``{"pos", "box", "xyxy", "cls"}``.
    """
    dev = anchors.device
    n, c = len(targets), num_classes
    per_scale = len(anchors) // len(grid_sizes)
    out = [
        {
            "pos": torch.zeros(n, per_scale, h, w, dtype=torch.bool, device=dev),
            "box": torch.zeros(n, per_scale, h, w, 4, device=dev),
            "xyxy": torch.zeros(n, per_scale, h, w, 4, device=dev),
            "cls": torch.zeros(n, per_scale, h, w, c, device=dev),
        }
        for h, w in grid_sizes
    ]
    boxes, labels, image = batch_truths(targets, dev)
    t, q = len(boxes), len(anchors)
    if not t:
        return out
    wh = boxes[:, 2:] - boxes[:, :2]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    area = wh[:, 0] * wh[:, 1]
    shape_iou = anchor_iou(wh, anchors)  # (T, Q)
    qs = torch.arange(q, device=dev)
    is_best = qs[None] == shape_iou.argmax(1)[:, None]  # (T, Q)
    chosen = is_best | (shape_iou > assign_iou) if multi else is_best
    scale = qs // per_scale  # (Q,)
    stride = torch.as_tensor(strides, dtype=boxes.dtype, device=dev)[scale]
    heights = torch.as_tensor([h for h, _ in grid_sizes], device=dev)[scale]
    widths = torch.as_tensor([w for _, w in grid_sizes], device=dev)[scale]
    g = centre[:, None, :] / stride[None, :, None]  # (T, Q, 2)
    col = torch.minimum(g[..., 0].long().clamp(min=0), widths - 1)  # int(): toward zero
    row = torch.minimum(g[..., 1].long().clamp(min=0), heights - 1)
    # Candidate cells: the centre's, then (multi) the horizontal and vertical neighbour on
    # the centre's side of its cell.
    dx = torch.where(g[..., 0].double() - col < 0.5, -1, 1)
    dy = torch.where(g[..., 1].double() - row < 0.5, -1, 1)
    cols = torch.stack([col, col + dx, col], -1)  # (T, Q, 3)
    rows = torch.stack([row, row, row + dy], -1)
    inside = (cols >= 0) & (cols < widths[None, :, None]) & (rows >= 0)
    inside &= rows < heights[None, :, None]
    valid = chosen[..., None] & inside
    if not multi:
        valid[..., 1:] = False
    extra = torch.stack([~is_best, *([torch.ones_like(is_best)] * 2)], -1)
    # Creation order: truth, then its anchors (its best first, the others by index), then
    # centre / x-neighbour / y-neighbour.
    rank = torch.where(is_best, 0, 1 + qs[None]).argsort(1)  # (T, Q): anchors in rank order
    pick = rank[..., None].expand(t, q, 3)

    def claims(x: Tensor) -> Tensor:  # (T, Q, 3) -> the valid claims, in creation order
        return x.gather(1, pick).reshape(-1)[keep]

    keep = valid.gather(1, pick).reshape(-1)
    truth = claims(torch.arange(t, device=dev)[:, None, None].expand(t, q, 3))
    anchor = claims(qs[None, :, None].expand(t, q, 3))
    cell_col, cell_row, is_extra = claims(cols), claims(rows), claims(extra)
    # Later claims win: extra positives before own-best ones, smaller truths before larger
    # ones, creation order last (two stable sorts: the minor key first).
    order = area[truth].argsort(stable=True)
    order = order[(~is_extra[order]).long().argsort(stable=True)]
    priority = torch.empty_like(order)
    priority[order] = torch.arange(len(order), device=dev)
    k = scale[anchor]
    slot = anchor - k * per_scale
    sizes = [h * w * per_scale * n for h, w in grid_sizes]
    offset = torch.as_tensor([0, *sizes[:-1]], device=dev).cumsum(0)[k]
    slot_id = (
        offset
        + ((image[truth] * per_scale + slot) * heights[anchor] + cell_row) * widths[anchor]
        + cell_col
    )
    best_priority = torch.full((sum(sizes),), -1, dtype=priority.dtype, device=dev)
    best_priority.scatter_reduce_(0, slot_id, priority, "amax")
    win = best_priority[slot_id] == priority
    truth, anchor, k, slot = truth[win], anchor[win], k[win], slot[win]
    cell_col, cell_row, img = cell_col[win], cell_row[win], image[truth]
    cells = torch.stack([cell_col, cell_row], -1).to(boxes.dtype)
    encoded = yolo_encode(boxes[truth], cells, anchors[anchor], stride[anchor][:, None])
    one_hot = F.one_hot(labels[truth], c).to(boxes.dtype)
    for scale_k, target in enumerate(out):
        here = k == scale_k
        where = (img[here], slot[here], cell_row[here], cell_col[here])
        target["pos"][where] = True
        target["box"][where] = encoded[here]
        target["xyxy"][where] = boxes[truth[here]]
        target["cls"][where] = one_hot[here]
    return out


def ignore_mask(pred: Tensor, targets: Sequence[dict[str, Tensor]], threshold: float) -> Tensor:
    """Return YOLOv3's ignore rule for one scale: which predicted boxes overlap some truth
    of their image with IoU above ``threshold`` (these negatives get no objectness loss).

    Args:
        pred: ``(N, ..., 4)`` decoded xyxy boxes of one scale.
        targets: one ``{"boxes", "labels"}`` per image.
        threshold: the paper's 0.5.

    Returns:
        A bool tensor of ``pred``'s shape without its last dimension.
    """
    n = pred.shape[0]
    flat = pred.reshape(n, -1, 4)
    truths = [valid_boxes(t, pred.device)[0] for t in targets]
    most = max((len(b) for b in truths), default=0)
    if not most:
        return torch.zeros(flat.shape[:2], dtype=torch.bool, device=pred.device).view(
            pred.shape[:-1]
        )
    padded = torch.zeros(n, most, 4, dtype=flat.dtype, device=pred.device)
    for i, b in enumerate(truths):
        padded[i, : len(b)] = b
    lt = torch.maximum(flat[:, :, None, :2], padded[:, None, :, :2])
    rb = torch.minimum(flat[:, :, None, 2:], padded[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_p = (flat[..., 2:] - flat[..., :2]).clamp(min=0).prod(-1)
    area_t = (padded[..., 2:] - padded[..., :2]).clamp(min=0).prod(-1)
    iou = inter / (area_p[:, :, None] + area_t[:, None, :] - inter).clamp(min=1e-12)
    return (iou.amax(2) > threshold).view(pred.shape[:-1])
