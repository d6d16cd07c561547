"""Box parameterisations of single-shot detectors: how a network's regression outputs map to
boxes and back, plus SSD default boxes and YOLOv1 grid targets.

Boxes are float tensors ``(x1, y1, x2, y2)`` in absolute pixels unless stated; ``cxcywh`` means
``(centre x, centre y, width, height)``, also in pixels.

- YOLOv3 (Redmon & Farhadi 2018, sec. 2.1): ``b_x = sigmoid(t_x) + c_x``,
  ``b_y = sigmoid(t_y) + c_y`` (in grid cells, times the stride for pixels),
  ``b_w = p_w exp(t_w)``, ``b_h = p_h exp(t_h)``.
- SSD (Liu et al. 2016; variances 0.1 / 0.2 as in the reference Caffe implementation):
  offsets of the centre relative to the prior's size, and log size ratios, each divided by
  a variance.
- YOLOv1 (Redmon et al. 2016, sec. 2): an S x S grid, the cell containing a box centre is
  responsible for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from cnnzoo.errors import CnnzooError
from cnnzoo.models.detection.ops import box_convert

SSD_VARIANCES = (0.1, 0.2)


def _check_last_dim(name: str, x: Tensor, size: int) -> None:
    if x.shape[-1:] != (size,):
        raise CnnzooError(f"{name} must have last dimension {size}, got shape {tuple(x.shape)}")


def _check_positive_wh(name: str, wh: Tensor) -> None:
    bad = int((wh <= 0).any(-1).sum())
    if bad:
        raise CnnzooError(f"{name}: {bad} box(es) have non-positive width or height")


# --------------------------------------------------------------------------------------------
# YOLOv3
# --------------------------------------------------------------------------------------------


def yolo_decode(t: Tensor, anchors_wh: Tensor, stride: float) -> Tensor:
    """Return the boxes (xyxy, pixels) that raw YOLOv3 outputs on a grid describe.

    Args:
        t: ``(..., A, H, W, 4)`` raw outputs ``(t_x, t_y, t_w, t_h)`` for ``A`` anchors on an
            ``H x W`` grid (the head's ``(N, A * (5 + C), H, W)`` reshaped to
            ``(N, A, 5 + C, H, W)``, permuted to ``(N, A, H, W, 5 + C)`` and sliced ``[..., :4]``).
        anchors_wh: ``(A, 2)`` anchor (prior) widths and heights ``p_w, p_h`` in pixels.
        stride: pixels per grid cell (e.g. 32, 16, 8).

    Returns:
        ``(..., A, H, W, 4)`` boxes: centre ``((sigmoid(t_x) + c_x) * stride, ...)``, with
        ``c_x`` the column and ``c_y`` the row of the cell, size ``p * exp(t)``.

    Raises:
        CnnzooError: if the shapes do not match.
    """
    _check_last_dim("t", t, 4)
    if t.dim() < 4 or anchors_wh.shape != (t.shape[-4], 2):
        raise CnnzooError(
            f"t must be (..., A, H, W, 4) and anchors_wh (A, 2); got {tuple(t.shape)} and "
            f"{tuple(anchors_wh.shape)}"
        )
    h, w = t.shape[-3], t.shape[-2]
    cy, cx = torch.meshgrid(
        torch.arange(h, device=t.device, dtype=t.dtype),
        torch.arange(w, device=t.device, dtype=t.dtype),
        indexing="ij",
    )
    bx = (t[..., 0].sigmoid() + cx) * stride
    by = (t[..., 1].sigmoid() + cy) * stride
    anchors = anchors_wh.to(t)[:, None, None, :]  # (A, 1, 1, 2)
    bw = anchors[..., 0] * t[..., 2].exp()
    bh = anchors[..., 1] * t[..., 3].exp()
    return box_convert(torch.stack([bx, by, bw, bh], -1), "cxcywh", "xyxy")


def yolo_encode(
    boxes: Tensor, cell_xy: Tensor, anchor_wh: Tensor, stride: float, eps: float = 1e-6
) -> Tensor:
    """Return YOLOv3 regression targets for boxes assigned to a cell and an anchor.

    Args:
        boxes: ``(..., 4)`` xyxy boxes in pixels.
        cell_xy: ``(..., 2)`` the responsible cell ``(c_x, c_y)`` = (column, row); normally
            ``floor(centre / stride)``.
        anchor_wh: ``(..., 2)`` the responsible anchor's ``(p_w, p_h)`` in pixels.
        stride: pixels per grid cell. All three broadcast against each other.
        eps: the fractional offsets are clamped to ``[eps, 1 - eps]``.

    Returns:
        ``(..., 4)``: ``(sigmoid(t_x), sigmoid(t_y))`` targets, i.e. the centre's fractional
        offset inside the cell, in ``(0, 1)`` (compare with the sigmoid of the output, as in
        YOLOv3's sum-of-squares / BCE on ``x, y``; ``torch.logit`` of it gives ``t_x``), then
        ``t_w = log(w / p_w)``, ``t_h = log(h / p_h)``.

    Raises:
        CnnzooError: for wrong shapes or boxes / anchors without positive width and height.
    """
    _check_last_dim("boxes", boxes, 4)
    _check_last_dim("cell_xy", cell_xy, 2)
    _check_last_dim("anchor_wh", anchor_wh, 2)
    cxcywh = box_convert(boxes, "xyxy", "cxcywh")
    _check_positive_wh("boxes", cxcywh[..., 2:])
    _check_positive_wh("anchor_wh", anchor_wh)
    offset = (cxcywh[..., :2] / stride - cell_xy.to(cxcywh)).clamp(eps, 1 - eps)
    log_wh = (cxcywh[..., 2:] / anchor_wh.to(cxcywh)).log()
    return torch.cat([offset, log_wh], -1)


# --------------------------------------------------------------------------------------------
# SSD
# --------------------------------------------------------------------------------------------


def ssd_encode(
    boxes: Tensor, priors_cxcywh: Tensor, variances: Sequence[float] = SSD_VARIANCES
) -> Tensor:
    """Return SSD regression targets of matched ``boxes`` (xyxy) against their priors.

    ``g_cx = (cx - p_cx) / (v0 p_w)``, ``g_cy = (cy - p_cy) / (v0 p_h)``,
    ``g_w = log(w / p_w) / v1``, ``g_h = log(h / p_h) / v1`` — ``(..., 4)``, broadcasting
    ``boxes (..., 4)`` against ``priors_cxcywh (..., 4)`` (same units, e.g. pixels).

    Raises:
        CnnzooError: for wrong shapes, non-positive sizes or variances.
    """
    _check_last_dim("boxes", boxes, 4)
    _check_last_dim("priors_cxcywh", priors_cxcywh, 4)
    v0, v1 = _variances(variances)
    g = box_convert(boxes, "xyxy", "cxcywh")
    _check_positive_wh("boxes", g[..., 2:])
    p = priors_cxcywh.to(g)
    _check_positive_wh("priors_cxcywh", p[..., 2:])
    centre = (g[..., :2] - p[..., :2]) / (v0 * p[..., 2:])
    size = (g[..., 2:] / p[..., 2:]).log() / v1
    return torch.cat([centre, size], -1)


def ssd_decode(
    deltas: Tensor, priors_cxcywh: Tensor, variances: Sequence[float] = SSD_VARIANCES
) -> Tensor:
    """Return the xyxy boxes that SSD regression outputs ``deltas (..., 4)`` describe
    relative to ``priors_cxcywh (..., 4)``; the inverse of :func:`ssd_encode`.

    Raises:
        CnnzooError: for wrong shapes or non-positive variances.
    """
    _check_last_dim("deltas", deltas, 4)
    _check_last_dim("priors_cxcywh", priors_cxcywh, 4)
    v0, v1 = _variances(variances)
    p = priors_cxcywh.to(deltas)
    centre = p[..., :2] + deltas[..., :2] * v0 * p[..., 2:]
    size = p[..., 2:] * (deltas[..., 2:] * v1).exp()
    return box_convert(torch.cat([centre, size], -1), "cxcywh", "xyxy")


def _variances(variances: Sequence[float]) -> tuple[float, float]:
    if len(variances) != 2 or min(variances) <= 0:
        raise CnnzooError(f"variances must be two positive numbers, got {tuple(variances)}")
    return float(variances[0]), float(variances[1])


def default_boxes(
    feature_sizes: Sequence[int | tuple[int, int]],
    image_size: tuple[int, int],
    scales: Sequence[float],
    aspect_ratios: Sequence[float] | Sequence[Sequence[float]],
) -> Tensor:
    """Return SSD default boxes (priors) as ``(P, 4)`` cxcywh in pixels, clipped to the image.

    Args:
        feature_sizes: per feature map ``k``, its size ``f`` (square) or ``(f_h, f_w)``.
        image_size: ``(H, W)`` in pixels.
        scales: ``m + 1`` scales ``s_1 .. s_{m+1}`` as fractions of the image side, for
            ``m = len(feature_sizes)`` maps (the last one only sizes the extra box of map ``m``,
            like the reference implementation's ``max_sizes``).
        aspect_ratios: extra ratios ``a != 1`` (each adds ``a`` and ``1 / a``), one list shared
            by all maps or one list per map, e.g. ``[[2], [2, 3], [2, 3], [2, 3], [2], [2]]``.

    Per location of map ``k`` (rows, then columns, centre ``((j + 0.5) W / f_w,
    (i + 0.5) H / f_h)``), in this order: ratio 1 at ``s_k``; ratio 1 at
    ``sqrt(s_k s_{k+1})``; then ``a, 1 / a`` for each extra ratio — ``2 + 2 len(ratios)``
    boxes, width ``s sqrt(a) W`` and height ``s / sqrt(a) H``. Maps follow each other in order.
    Clipping is done on the corners, so a prior sticking out of the image keeps only its part
    inside (its centre moves).

    Raises:
        CnnzooError: for mismatched lengths, non-positive sizes / scales, or ratios <= 0 or == 1.
    """
    m = len(feature_sizes)
    if m == 0:
        raise CnnzooError("default_boxes needs at least one feature map size")
    if len(scales) != m + 1:
        raise CnnzooError(
            f"need len(feature_sizes) + 1 = {m + 1} scales (s_1 .. s_m+1), got {len(scales)}"
        )
    if min(scales) <= 0:
        raise CnnzooError(f"scales must be positive, got {list(scales)}")
    if len(aspect_ratios) and isinstance(aspect_ratios[0], (int, float)):
        per_map = [list(aspect_ratios)] * m  # type: ignore[list-item]
    else:
        per_map = [list(r) for r in aspect_ratios]  # type: ignore[arg-type]
        if not per_map:
            per_map = [[]] * m
    if len(per_map) != m:
        raise CnnzooError(f"need one aspect-ratio list per feature map ({m}), got {len(per_map)}")
    for ratios in per_map:
        if any(a <= 0 or a == 1 for a in ratios):
            raise CnnzooError(f"extra aspect ratios must be > 0 and != 1, got {ratios}")
    img_h, img_w = image_size
    if img_h <= 0 or img_w <= 0:
        raise CnnzooError(f"image_size must be positive, got {tuple(image_size)}")

    out = []
    for k, (fsize, ratios) in enumerate(zip(feature_sizes, per_map, strict=True)):
        f_h, f_w = (fsize, fsize) if isinstance(fsize, int) else fsize
        if f_h <= 0 or f_w <= 0:
            raise CnnzooError(f"feature map sizes must be positive, got {fsize}")
        s_k, s_next = float(scales[k]), float(scales[k + 1])
        shapes = [(s_k, s_k), (math.sqrt(s_k * s_next),) * 2]
        for a in ratios:
            r = math.sqrt(a)
            shapes += [(s_k * r, s_k / r), (s_k / r, s_k * r)]
        wh = torch.tensor(shapes, dtype=torch.float64) * torch.tensor(
            [img_w, img_h], dtype=torch.float64
        )  # (B, 2)
        cy, cx = torch.meshgrid(
            (torch.arange(f_h, dtype=torch.float64) + 0.5) * img_h / f_h,
            (torch.arange(f_w, dtype=torch.float64) + 0.5) * img_w / f_w,
            indexing="ij",
        )
        centres = torch.stack([cx, cy], -1).reshape(-1, 1, 2).expand(-1, len(shapes), 2)
        boxes = torch.cat([centres, wh.expand_as(centres)], -1).reshape(-1, 4)
        out.append(boxes)
    priors = box_convert(torch.cat(out), "cxcywh", "xyxy")
    priors[:, 0::2] = priors[:, 0::2].clamp(0, img_w)
    priors[:, 1::2] = priors[:, 1::2].clamp(0, img_h)
    return box_convert(priors, "xyxy", "cxcywh").float()


# --------------------------------------------------------------------------------------------
# YOLOv1
# --------------------------------------------------------------------------------------------


def yolov1_targets(
    boxes: Tensor,
    labels: Tensor,
    grid: int = 7,
    num_boxes: int = 2,
    num_classes: int = 20,
    image_size: tuple[int, int] = (448, 448),
) -> tuple[Tensor, Tensor]:
    """Return the YOLOv1 ``(S, S, 5B + C)`` target tensor of one image and its
    ``(S, S)`` boolean ``responsible_mask``.

    Layout of a cell ``[row, col]`` (row = y, col = x): ``B`` slots of
    ``(x, y, w, h, confidence)`` then ``C`` one-hot class entries, i.e. channels
    ``5b .. 5b + 4`` for slot ``b`` and ``5B + c`` for class ``c`` — the order of the paper's
    ``S x S x (B * 5 + C)`` output. ``x, y`` are the centre's offset inside the cell in
    ``[0, 1)`` (cell widths), ``w, h`` the box size relative to the image (the loss takes the
    square roots). A responsible cell has the box written into *every* slot with
    confidence 1, so the loss can pick whichever predictor has the best IoU; other cells are
    all zero.

    Rules: the cell is ``floor(cx * S / W)``, ``floor(cy * S / H)``, so a centre exactly on a
    cell boundary belongs to the cell to its right / below (offset 0); a centre on the image's
    right / bottom edge goes to the last cell (offset 1). When several centres fall in the
    same cell (YOLOv1 detects one object per cell), the box of largest area is kept (the first
    one on ties).

    Args:
        boxes: ``(N, 4)`` xyxy in pixels; labels: ``(N,)`` class indices in ``[0, C)``.

    Raises:
        CnnzooError: for wrong shapes, empty boxes, labels out of range or centres outside
            the image.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:1]:
        raise CnnzooError(
            f"boxes must be (N, 4) and labels (N,), got {tuple(boxes.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if grid < 1 or num_boxes < 1 or num_classes < 1:
        raise CnnzooError("grid, num_boxes and num_classes must be >= 1")
    img_h, img_w = image_size
    cxcywh = box_convert(boxes.double(), "xyxy", "cxcywh")
    _check_positive_wh("boxes", cxcywh[:, 2:])
    bad = int(((labels < 0) | (labels >= num_classes)).sum())
    if bad:
        raise CnnzooError(f"{bad} label(s) outside [0, {num_classes})")
    cx, cy, w, h = cxcywh.unbind(-1)
    outside = int(((cx < 0) | (cx > img_w) | (cy < 0) | (cy > img_h)).sum())
    if outside:
        raise CnnzooError(f"{outside} box centre(s) lie outside the {img_h}x{img_w} image")

    target = torch.zeros(grid, grid, 5 * num_boxes + num_classes)
    mask = torch.zeros(grid, grid, dtype=torch.bool)
    gx, gy = cx * grid / img_w, cy * grid / img_h
    col = gx.floor().long().clamp(max=grid - 1)
    row = gy.floor().long().clamp(max=grid - 1)
    area = w * h
    # Largest first (stable, so the first on ties), skipping cells already taken.
    for i in torch.sort(area, descending=True, stable=True).indices.tolist():
        r, c = int(row[i]), int(col[i])
        if mask[r, c]:
            continue
        mask[r, c] = True
        slot = torch.tensor(
            [gx[i] - c, gy[i] - r, w[i] / img_w, h[i] / img_h, 1.0], dtype=target.dtype
        )
        target[r, c, : 5 * num_boxes] = slot.repeat(num_boxes)
        target[r, c, 5 * num_boxes + int(labels[i])] = 1.0
    return target, mask
