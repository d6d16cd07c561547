"""Region proposal sources of :mod:`cnnzoo.models.detection.fast_rcnn`, pluggable by name.

Every source is an ``nn.Module`` called as ``source(images, features, image_size, num,
given)`` and returning ``(proposals, extras)``: one ``(R_i, 4)`` xyxy pixel tensor per image
(at most ``num`` boxes, inside the image, detached from the graph) and a dict of tensors the
detector keeps in its outputs (the RPN's raw outputs; empty for the others).

- ``"rpn"``: :class:`RegionProposalNetwork`, the learned proposer of Ren, He, Girshick, Sun,
  "Faster R-CNN: Towards Real-Time Object Detection with Region Proposal Networks",
  NeurIPS 2015 (Sec. 3.1): a 3x3 convolution on the shared feature map, then per location
  and anchor an objectness logit and 4 box deltas. Anchors of ``len(sizes) x len(ratios)``
  shapes sit at every feature location (centre ``(j + 0.5) * stride``); they are clipped to
  the image (the paper instead ignores anchors crossing the border in training: at 96
  pixels that would drop most large anchors). Training (Sec. 3.1.2): an anchor is positive
  when its IoU with a ground truth is >= 0.7 or it is (one of) the best anchor(s) of a
  ground truth, negative when its best IoU is < 0.3, ignored otherwise; 256 anchors per
  image are sampled, at most half positive, the rest negative. Proposals: decoded boxes,
  clipped, boxes under ``min_size`` dropped, the ``pre_nms_top_n`` best scores, NMS at 0.7,
  the ``num`` best kept. Box deltas use the R-CNN parameterisation of
  :func:`~cnnzoo.models.detection.coders.ssd_encode` with variances ``(0.1, 0.2)`` (a fixed
  normalisation of the targets, as Fast R-CNN normalises them to unit variance).
- ``"selective"``: :class:`SelectiveSearch`, a *simplified* selective search (Uijlings,
  van de Sande, Gevers, Smeulders, "Selective Search for Object Recognition", IJCV 2013),
  non-learned, see :func:`selective_search`.
- ``"given"``: :class:`GivenProposals`, boxes supplied by the caller, used verbatim.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.models.detection.coders import SSD_VARIANCES, ssd_decode, ssd_encode
from cnnzoo.models.detection.ops import box_convert, box_iou, nms, remove_small_boxes
from cnnzoo.models.detection.postprocess import clip_boxes, valid_boxes

PROPOSAL_SOURCES = ("rpn", "selective", "given")

# Largest log size ratio a decoded box may have (as in the R-CNN reference code).
_MAX_LOG_RATIO = math.log(1000.0 / 16)


def decode_deltas(
    deltas: Tensor, boxes: Tensor, variances: Sequence[float] = SSD_VARIANCES
) -> Tensor:
    """Return the xyxy boxes that R-CNN ``deltas (..., 4)`` describe relative to xyxy
    ``boxes`` (broadcast against ``deltas``); size deltas are clamped so that a box grows
    at most ``1000 / 16`` times (no overflow of ``exp``)."""
    v1 = float(variances[1])
    deltas = torch.cat([deltas[..., :2], deltas[..., 2:].clamp(max=_MAX_LOG_RATIO / v1)], -1)
    return ssd_decode(deltas, box_convert(boxes.to(deltas), "xyxy", "cxcywh"), variances)


def encode_boxes(
    boxes: Tensor, references: Tensor, variances: Sequence[float] = SSD_VARIANCES
) -> Tensor:
    """Return the R-CNN deltas ``(..., 4)`` of xyxy ``boxes`` relative to xyxy ``references``.

    Raises:
        CnnzooError: for boxes or references without positive width and height.
    """
    return ssd_encode(boxes, box_convert(references.to(boxes), "xyxy", "cxcywh"), variances)


def anchor_shapes(sizes: Sequence[float], ratios: Sequence[float]) -> Tensor:
    """Return the ``(len(sizes) * len(ratios), 2)`` anchor ``(w, h)``: for each size ``s``
    (outer loop) and ratio ``r = h / w`` (inner loop), ``w = s / sqrt(r)``, ``h = s sqrt(r)``
    (area ``s^2``).

    Raises:
        CnnzooError: for an empty list or a non-positive size or ratio.
    """
    if not sizes or not ratios or min(sizes) <= 0 or min(ratios) <= 0:
        raise CnnzooError(
            f"anchor sizes and ratios must be non-empty and positive, got sizes="
            f"{tuple(sizes)}, ratios={tuple(ratios)}"
        )
    return torch.tensor(
        [[s / math.sqrt(r), s * math.sqrt(r)] for s in sizes for r in ratios], dtype=torch.float32
    )


def grid_anchors(
    feature_size: tuple[int, int], stride: float, image_size: tuple[int, int], shapes: Tensor
) -> Tensor:
    """Return the ``(H * W * A, 4)`` xyxy anchors of an ``H x W`` map, clipped to the image.

    Order: rows, then columns, then the ``A`` shapes (that of the RPN outputs). The anchors
    of cell ``(i, j)`` are centred on ``((j + 0.5) stride, (i + 0.5) stride)``.
    """
    h, w = feature_size
    cy, cx = torch.meshgrid(
        (torch.arange(h, dtype=torch.float32) + 0.5) * stride,
        (torch.arange(w, dtype=torch.float32) + 0.5) * stride,
        indexing="ij",
    )
    centres = torch.stack([cx, cy], -1).reshape(-1, 1, 2).expand(-1, shapes.shape[0], 2)
    wh = shapes[None].expand_as(centres)
    boxes = torch.cat([centres - wh / 2, centres + wh / 2], -1).reshape(-1, 4)
    return clip_boxes(boxes, image_size)


def label_anchors(
    anchors: Tensor,
    gt_boxes: Tensor,
    positive_iou: float = 0.7,
    negative_iou: float = 0.3,
) -> tuple[Tensor, Tensor]:
    """Return the RPN labels ``(A,)`` (1 positive, 0 negative, -1 ignored) of xyxy
    ``anchors (A, 4)`` and the index ``(A,)`` of the ground truth each one is matched to.

    Rules (Ren et al. 2015, Sec. 3.1.2): best IoU ``>= positive_iou``: positive; ``<
    negative_iou``: negative; in between: ignored. Then every anchor whose IoU with a
    ground truth equals that truth's highest IoU (> 0) is positive and matched to it, so
    each truth has a positive anchor (an anchor that is the best of several truths goes to
    the one it overlaps most, so a truth may lose it only to a better-matching one).
    Without ground truths every anchor is negative (matched index 0).
    """
    num = anchors.shape[0]
    matched = torch.zeros(num, dtype=torch.long, device=anchors.device)
    if gt_boxes.shape[0] == 0:
        return torch.zeros(num, dtype=torch.long, device=anchors.device), matched
    iou = box_iou(gt_boxes.to(anchors), anchors)  # (G, A)
    best_iou, matched = iou.max(0)
    labels = torch.full((num,), -1, dtype=torch.long, device=anchors.device)
    labels[best_iou < negative_iou] = 0
    labels[best_iou >= positive_iou] = 1
    best_per_gt = iou.max(1, keepdim=True).values
    forced = (iou == best_per_gt) & (best_per_gt > 0)  # (G, A)
    anchor_idx = forced.any(0).nonzero().flatten()
    labels[anchor_idx] = 1
    matched[anchor_idx] = (iou * forced)[:, anchor_idx].argmax(0)
    return labels, matched


def sample_balanced(labels: Tensor, total: int, positive_fraction: float) -> tuple[Tensor, Tensor]:
    """Return random indices ``(positives, negatives)`` of ``labels`` (1 / 0, -1 ignored):
    at most ``round(total * positive_fraction)`` positives, then negatives up to ``total``
    in all (fewer when there are not enough)."""
    pos = (labels == 1).nonzero().flatten()
    neg = (labels == 0).nonzero().flatten()
    num_pos = min(pos.numel(), round(total * positive_fraction))
    num_neg = min(neg.numel(), total - num_pos)
    pos = pos[torch.randperm(pos.numel(), device=pos.device)[:num_pos]]
    neg = neg[torch.randperm(neg.numel(), device=neg.device)[:num_neg]]
    return pos, neg


class RegionProposalNetwork(nn.Module):
    """The learned proposer ("rpn"): 3x3 conv + ReLU, then 1x1 objectness and delta layers.

    Args:
        in_channels: channels of the shared feature map.
        stride: pixels per feature-map cell.
        channels: width of the 3x3 convolution (None: ``in_channels``).
        anchor_sizes: anchor sides in pixels (square root of the area).
        anchor_ratios: anchor height / width ratios.
        nms_threshold: IoU of the NMS among proposals (0.7).
        pre_nms_top_n: best-scored boxes kept before NMS.
        min_size: proposals narrower or lower than this (pixels) are dropped.
        anchors_per_image: anchors sampled per image for the loss (256).
        positive_fraction: most positive share of the sample (0.5).
        positive_iou, negative_iou: the labelling thresholds (0.7, 0.3).

    ``forward(images, features, image_size, num, given)`` returns the proposals and
    ``{"rpn_logits": (N, A), "rpn_deltas": (N, A, 4), "anchors": (A, 4)}`` with ``A`` the
    anchors of the map (xyxy, order of :func:`grid_anchors`).
    """

    def __init__(
        self,
        in_channels: int,
        stride: float,
        channels: int | None = None,
        anchor_sizes: Sequence[float] = (20.0, 40.0, 80.0),
        anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        nms_threshold: float = 0.7,
        pre_nms_top_n: int = 2000,
        min_size: float = 1.0,
        anchors_per_image: int = 256,
        positive_fraction: float = 0.5,
        positive_iou: float = 0.7,
        negative_iou: float = 0.3,
    ) -> None:
        super().__init__()
        channels = channels or in_channels
        self.stride = float(stride)
        self.register_buffer("shapes", anchor_shapes(anchor_sizes, anchor_ratios), False)
        num_anchors = self.shapes.shape[0]
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, num_anchors, 1)
        self.deltas = nn.Conv2d(channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, 0, 0.01)
            nn.init.zeros_(layer.bias)
        self.nms_threshold = float(nms_threshold)
        self.pre_nms_top_n = int(pre_nms_top_n)
        self.min_size = float(min_size)
        self.anchors_per_image = int(anchors_per_image)
        self.positive_fraction = float(positive_fraction)
        self.positive_iou = float(positive_iou)
        self.negative_iou = float(negative_iou)

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location."""
        return int(self.shapes.shape[0])

    def anchors(self, feature_size: tuple[int, int], image_size: tuple[int, int]) -> Tensor:
        """Return the ``(H * W * A, 4)`` xyxy anchors of this map and image size."""
        return grid_anchors(feature_size, self.stride, image_size, self.shapes.cpu()).to(
            self.shapes.device
        )

    def forward(
        self,
        images: Tensor,
        features: Tensor,
        image_size: tuple[int, int],
        num: int,
        given: Any = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Return ``(proposals, {"rpn_logits", "rpn_deltas", "anchors"})``: up to ``num``
        proposals per image (see the class docstring)."""
        n, _, h, w = features.shape
        y = F.relu(self.conv(features))
        logits = self.objectness(y).permute(0, 2, 3, 1).reshape(n, -1)
        deltas = self.deltas(y).view(n, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
        anchors = self.anchors((h, w), image_size)
        proposals = []
        with torch.no_grad():
            boxes_all = clip_boxes(decode_deltas(deltas.detach().float(), anchors), image_size)
            for boxes, scores in zip(boxes_all, logits.detach().float(), strict=True):
                keep = remove_small_boxes(boxes, self.min_size)
                boxes, scores = boxes[keep], scores[keep]
                top = scores.topk(min(self.pre_nms_top_n, scores.numel())).indices
                boxes, scores = boxes[top], scores[top]
                keep = nms(boxes, scores, self.nms_threshold)[:num]
                proposals.append(boxes[keep])
        return proposals, {"rpn_logits": logits, "rpn_deltas": deltas, "anchors": anchors}

    def loss(
        self, outputs: dict[str, Any], targets: Sequence[dict[str, Tensor]]
    ) -> tuple[Tensor, Tensor]:
        """Return the RPN's ``(objectness, box)`` losses over the sampled anchors.

        Per image ``anchors_per_image`` anchors are sampled (:func:`label_anchors`,
        :func:`sample_balanced`); objectness: binary cross-entropy averaged over all sampled
        anchors of the batch; box: smooth L1 (beta 1) of the positives' deltas, summed and
        divided by the number of sampled anchors.
        """
        logits, deltas, anchors = outputs["rpn_logits"], outputs["rpn_deltas"], outputs["anchors"]
        obj_terms, box_terms, count = [], [], 0
        for i, target in enumerate(targets):
            gt, _ = valid_boxes(target, anchors.device)
            labels, matched = label_anchors(anchors, gt, self.positive_iou, self.negative_iou)
            pos, neg = sample_balanced(labels, self.anchors_per_image, self.positive_fraction)
            index = torch.cat([pos, neg])
            goal = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).float()
            obj_terms.append(
                F.binary_cross_entropy_with_logits(logits[i, index].float(), goal, reduction="sum")
            )
            if pos.numel():
                goal_deltas = encode_boxes(gt[matched[pos]], anchors[pos])
                box_terms.append(
                    F.smooth_l1_loss(deltas[i, pos].float(), goal_deltas, reduction="sum")
                )
            count += index.numel()
        zero = logits.sum() * 0.0
        count = max(count, 1)
        obj = torch.stack(obj_terms).sum() / count if obj_terms else zero
        box = torch.stack(box_terms).sum() / count if box_terms else zero
        return obj, box


# --------------------------------------------------------------------------------------------
# Simplified selective search
# --------------------------------------------------------------------------------------------


def selective_search(
    image: Tensor,
    cell_size: int = 4,
    bins: int = 8,
    max_boxes: int | None = None,
    weights: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
) -> Tensor:
    """Return the boxes ``(K, 4)`` (xyxy pixels, inside the image) of a simplified selective
    search on one ``(channels, H, W)`` image, ranked as Uijlings et al. rank them.

    Steps (after Uijlings et al. 2013, Sec. 3):

    1. Initial regions: a grid of ``cell_size`` x ``cell_size`` pixel cells (the paper uses
       the graph-based over-segmentation of Felzenszwalb & Huttenlocher instead). Each
       channel is min-max scaled to ``[0, 1]`` over the image, and every region gets a colour
       histogram of ``bins`` bins per channel, L1-normalised over the whole descriptor.
    2. Hierarchical grouping: repeatedly merge the two *adjacent* regions of highest
       similarity ``w_c s_colour + w_s s_size + w_f s_fill`` (Sec. 3.2):
       ``s_colour`` = histogram intersection, ``s_size = 1 - (size_a + size_b) / size_image``
       (small regions merge first), ``s_fill = 1 - (bbox(a u b) - size_a - size_b) /
       size_image`` (regions that fill each other's gaps merge first). The merged region's
       histogram is the size-weighted mean, its neighbours the union of both; until one
       region is left.
    3. Every region *created by a merge* contributes its bounding box (not the initial
       cells). Ranking (Sec. 3.3): the region of merge ``m`` of ``M`` gets ``(M - m) * u``,
       ``u`` uniform in ``[0, 1)`` from a generator seeded with ``seed``; ascending, so the
       last (largest) regions tend to come first. Duplicate boxes are dropped, then the
       first ``max_boxes`` kept (None: all, at most ``cells - 1``).

    Departures: a single strategy (one colour space, one similarity combination) instead of
    the paper's diversification over colour spaces and starting segmentations; no texture
    similarity. Runs on the CPU, about ``H W / cell_size^2`` merges.

    Raises:
        CnnzooError: for an image that is not ``(channels, H, W)`` or ``cell_size``/``bins``
            below 1.
    """
    if image.dim() != 3:
        raise CnnzooError(f"image must be (channels, H, W), got shape {tuple(image.shape)}")
    if cell_size < 1 or bins < 1:
        raise CnnzooError(f"cell_size and bins must be >= 1, got {cell_size} and {bins}")
    img = image.detach().float().cpu()
    c, h, w = img.shape
    flat = img.flatten(1)
    lo = flat.min(1).values[:, None]
    span = (flat.max(1).values[:, None] - lo).clamp(min=1e-8)
    bin_index = ((flat - lo) / span * bins).long().clamp(0, bins - 1)  # (c, HW)
    gh, gw = -(-h // cell_size), -(-w // cell_size)
    rows = torch.arange(h) // cell_size
    cols = torch.arange(w) // cell_size
    cell = (rows[:, None] * gw + cols[None, :]).flatten()  # (HW,)
    n = gh * gw
    feature = bin_index + (torch.arange(c) * bins)[:, None]
    hist0 = torch.zeros(n, c * bins, dtype=torch.float64)
    hist0.index_put_(
        (cell.expand(c, -1).flatten(), feature.flatten()),
        torch.ones(c * h * w, dtype=torch.float64),
        accumulate=True,
    )
    hist0 /= hist0.sum(1, keepdim=True)
    size0 = torch.bincount(cell, minlength=n).double()
    r = torch.arange(gh).repeat_interleave(gw)
    q = torch.arange(gw).repeat(gh)
    box0 = torch.stack(
        [
            q * cell_size,
            r * cell_size,
            ((q + 1) * cell_size).clamp(max=w),
            ((r + 1) * cell_size).clamp(max=h),
        ],
        1,
    ).double()

    total = 2 * n - 1
    hist = np.zeros((total, c * bins))
    hist[:n] = hist0.numpy()
    size = np.zeros(total)
    size[:n] = size0.numpy()
    box = np.zeros((total, 4))
    box[:n] = box0.numpy()
    alive = np.zeros(total, dtype=bool)
    alive[:n] = True
    area = float(h * w)
    w_c, w_s, w_f = (float(v) for v in weights)

    def similarity(a: int, others: np.ndarray) -> np.ndarray:
        colour = np.minimum(hist[a], hist[others]).sum(1)
        both = size[a] + size[others]
        lt = np.minimum(box[a, :2], box[others, :2])
        rb = np.maximum(box[a, 2:], box[others, 2:])
        hull = (rb - lt).prod(1)
        return w_c * colour + w_s * (1 - both / area) + w_f * (1 - (hull - both) / area)

    neighbours: list[set[int]] = [set() for _ in range(total)]
    heap: list[tuple[float, int, int]] = []
    for a in range(n):
        right = [a + 1] if (a % gw) + 1 < gw else []
        down = [a + gw] if a + gw < n else []
        others = right + down
        for b in others:
            neighbours[a].add(b)
            neighbours[b].add(a)
        if others:
            for b, s in zip(others, similarity(a, np.array(others)), strict=True):
                heap.append((-float(s), a, b))
    heapq.heapify(heap)
    created: list[int] = []
    k = n
    while heap:
        _, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b]):
            continue
        both = size[a] + size[b]
        hist[k] = (size[a] * hist[a] + size[b] * hist[b]) / both
        size[k] = both
        box[k, :2] = np.minimum(box[a, :2], box[b, :2])
        box[k, 2:] = np.maximum(box[a, 2:], box[b, 2:])
        alive[a] = alive[b] = False
        alive[k] = True
        adjacent = (neighbours[a] | neighbours[b]) - {a, b}
        for other in adjacent:
            neighbours[other] -= {a, b}
            neighbours[other].add(k)
        neighbours[k] = adjacent
        if adjacent:
            others = np.fromiter(adjacent, dtype=np.int64)
            for other, s in zip(others.tolist(), similarity(k, others), strict=True):
                heapq.heappush(heap, (-float(s), k, other))
        created.append(k)
        k += 1

    if not created:
        return torch.tensor([[0.0, 0.0, float(w), float(h)]])
    num_merges = len(created)
    rng = np.random.default_rng(seed)
    rank = (num_merges - np.arange(num_merges)) * rng.random(num_merges)
    boxes = box[np.asarray(created)[np.argsort(rank, kind="stable")]]
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)]
    if max_boxes is not None:
        boxes = boxes[:max_boxes]
    return torch.from_numpy(boxes).float()


class SelectiveSearch(nn.Module):
    """The non-learned proposer ("selective"): :func:`selective_search` on each image.

    Args:
        cell_size: side of the initial grid cells in pixels.
        bins: colour histogram bins per channel.

    ``forward(images, features, image_size, num, given)`` returns up to ``num`` boxes per
    image (on the images' device) and no extras.
    """

    def __init__(self, cell_size: int = 4, bins: int = 8) -> None:
        super().__init__()
        if cell_size < 1 or bins < 1:
            raise CnnzooError(f"cell_size and bins must be >= 1, got {cell_size} and {bins}")
        self.cell_size = int(cell_size)
        self.bins = int(bins)

    def forward(
        self,
        images: Tensor,
        features: Tensor,
        image_size: tuple[int, int],
        num: int,
        given: Any = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Return ``(proposals, {})``."""
        proposals = [
            selective_search(img, self.cell_size, self.bins, num).to(images.device)
            for img in images
        ]
        return proposals, {}


class GivenProposals(nn.Module):
    """Proposals supplied by the caller ("given"), used verbatim (as float32 on the images'
    device): the ``proposals`` list passed to the detector's ``forward`` if any, else each
    target's ``"proposals"`` entry. ``num`` is ignored."""

    def forward(
        self,
        images: Tensor,
        features: Tensor,
        image_size: tuple[int, int],
        num: int,
        given: Any = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Return ``(proposals, {})``.

        Raises:
            CnnzooError: when no proposals were given, their number differs from the batch
                size, or one is not an ``(R, 4)`` tensor.
        """
        n = images.shape[0]
        if given is None:
            raise CnnzooError(
                "proposals='given' needs boxes: pass forward(x, proposals=[...]) or put a "
                "'proposals' (R, 4) tensor in every target"
            )
        if len(given) != n:
            raise CnnzooError(f"got {len(given)} proposal sets for a batch of {n} images")
        out = []
        for boxes in given:
            boxes = torch.as_tensor(boxes, dtype=torch.float32, device=images.device)
            if boxes.dim() != 2 or boxes.shape[1] != 4:
                raise CnnzooError(f"proposals must be (R, 4) xyxy, got {tuple(boxes.shape)}")
            out.append(boxes)
        return out, {}


def build_proposer(name: str, **kwargs: Any) -> nn.Module:
    """Return the proposal source called ``name`` (one of :data:`PROPOSAL_SOURCES`), built
    with ``kwargs`` (those of :class:`RegionProposalNetwork` or :class:`SelectiveSearch`).

    Raises:
        CnnzooError: for an unknown name; the message lists the choices.
    """
    sources: dict[str, type[nn.Module]] = {
        "rpn": RegionProposalNetwork,
        "selective": SelectiveSearch,
        "given": GivenProposals,
    }
    if name not in sources:
        raise CnnzooError(
            f"unknown proposals {name!r}; choose one of {', '.join(PROPOSAL_SOURCES)}"
        )
    return sources[name](**kwargs)
