"""Box mathematics of detection: YOLO / SSD coders, default boxes, YOLOv1 targets, k-means
anchors and post-processing."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnzoo.errors import CnnzooError
from cnnzoo.models.detection.anchors import (
    anchor_iou,
    kmeans_anchors,
    mean_best_iou,
    uniform_anchors,
)
from cnnzoo.models.detection.coders import (
    default_boxes,
    ssd_decode,
    ssd_encode,
    yolo_decode,
    yolo_encode,
    yolov1_targets,
)
from cnnzoo.models.detection.postprocess import clip_boxes, postprocess, score_candidates

IMAGE = 640.0
size_px = st.floats(2.0, 400.0)
coord_px = st.floats(0.0, IMAGE - 1e-3)


# --------------------------------------------------------------------------------------------
# YOLOv3 coder
# --------------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    cx=coord_px,
    cy=coord_px,
    w=size_px,
    h=size_px,
    pw=st.floats(5.0, 300.0),
    ph=st.floats(5.0, 300.0),
    stride=st.sampled_from([8, 16, 32]),
)
def test_yolo_encode_decode_round_trip(cx, cy, w, h, pw, ph, stride):
    box = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    cell = torch.tensor([math.floor(cx / stride), math.floor(cy / stride)])
    anchor = torch.tensor([pw, ph])
    target = yolo_encode(box, cell, anchor, stride)
    assert ((target[:2] > 0) & (target[:2] < 1)).all()
    n = math.ceil(IMAGE / stride)
    t = torch.zeros(1, n, n, 4)
    t[0, cell[1], cell[0]] = torch.cat([torch.logit(target[:2]), target[2:]])
    decoded = yolo_decode(t, anchor[None], stride)[0, cell[1], cell[0]]
    torch.testing.assert_close(decoded, box, atol=1e-3, rtol=0)


def test_yolo_decode_known_values():
    # t = 0: centre in the middle of the cell, size = the anchor; two anchors, 2 x 3 grid.
    anchors = torch.tensor([[10.0, 20.0], [40.0, 8.0]])
    t = torch.zeros(2, 2, 3, 4)
    t[1, 1, 2] = torch.tensor([0.0, 0.0, math.log(2.0), 0.0])
    out = yolo_decode(t, anchors, stride=16)
    assert out.shape == (2, 2, 3, 4)
    # anchor 0, row 1, col 2: centre (2.5 * 16, 1.5 * 16) = (40, 24), size 10 x 20
    torch.testing.assert_close(out[0, 1, 2], torch.tensor([35.0, 14.0, 45.0, 34.0]))
    # anchor 1, same cell, width doubled by exp(log 2): 80 x 8
    torch.testing.assert_close(out[1, 1, 2], torch.tensor([0.0, 20.0, 80.0, 28.0]))
    # anchor 1, row 0, col 0: centre (8, 8)
    torch.testing.assert_close(out[1, 0, 0], torch.tensor([-12.0, 4.0, 28.0, 12.0]))


def test_yolo_encode_clamps_offsets_and_rejects_bad_boxes():
    # centre exactly on the cell's left/top border -> offset clamped to eps, not 0
    target = yolo_encode(
        torch.tensor([28.0, 28.0, 36.0, 36.0]), torch.tensor([1, 1]), torch.tensor([8.0, 8.0]), 32
    )
    assert 0 < target[0] < 1e-5 and 0 < target[1] < 1e-5
    torch.testing.assert_close(target[2:], torch.zeros(2))
    with pytest.raises(CnnzooError, match="1 box"):
        yolo_encode(
            torch.tensor([[0.0, 0, 5, 5], [5.0, 0, 5, 5]]),
            torch.zeros(2, 2),
            torch.ones(2),
            8,
        )


# --------------------------------------------------------------------------------------------
# SSD coder and default boxes
# --------------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    cx=coord_px,
    cy=coord_px,
    w=size_px,
    h=size_px,
    pcx=coord_px,
    pcy=coord_px,
    pw=size_px,
    ph=size_px,
)
def test_ssd_encode_decode_round_trip(cx, cy, w, h, pcx, pcy, pw, ph):
    box = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])
    prior = torch.tensor([[pcx, pcy, pw, ph]])
    deltas = ssd_encode(box, prior)
    torch.testing.assert_close(ssd_decode(deltas, prior), box, atol=1e-3, rtol=0)


def test_ssd_encode_known_values_and_variances():
    prior = torch.tensor([50.0, 40.0, 20.0, 10.0])
    # same box -> zero deltas
    same = torch.tensor([40.0, 35.0, 60.0, 45.0])
    torch.testing.assert_close(ssd_encode(same, prior), torch.zeros(4))
    # centre moved by 0.1 * w and 0.2 * h, width doubled: (1, 2, log 2 / 0.2, 0)
    moved = torch.tensor([52.0 - 20, 42.0 - 5, 52.0 + 20, 42.0 + 5])  # cxcywh (52, 42, 40, 10)
    expected = torch.tensor([1.0, 2.0, math.log(2.0) / 0.2, 0.0])
    torch.testing.assert_close(ssd_encode(moved, prior), expected)
    # variances (1, 1) -> raw offsets
    raw = torch.tensor([0.1, 0.2, math.log(2.0), 0.0])
    torch.testing.assert_close(ssd_encode(moved, prior, (1.0, 1.0)), raw)
    with pytest.raises(CnnzooError, match="variances"):
        ssd_encode(moved, prior, (0.1, 0.0))


def test_default_boxes_count_and_positions():
    priors = default_boxes([2, 1], (100, 100), [0.2, 0.5, 0.8], [[2], []])
    # map 1: 2 x 2 locations x (2 + 2 * 1); map 2: 1 location x 2
    assert priors.shape == (2 * 2 * 4 + 1 * 2, 4)
    s_prime = math.sqrt(0.2 * 0.5) * 100
    r2 = math.sqrt(2.0)
    expected_first_location = torch.tensor(
        [
            [25.0, 25.0, 20.0, 20.0],
            [25.0, 25.0, s_prime, s_prime],
            [25.0, 25.0, 20.0 * r2, 20.0 / r2],
            [25.0, 25.0, 20.0 / r2, 20.0 * r2],
        ]
    )
    torch.testing.assert_close(priors[:4], expected_first_location)
    # second location is row 0, column 1 -> centre (75, 25)
    torch.testing.assert_close(priors[4:8, :2], torch.tensor([[75.0, 25.0]] * 4))
    # fourth location is row 1, column 1 -> centre (75, 75)
    torch.testing.assert_close(priors[12:16, :2], torch.tensor([[75.0, 75.0]] * 4))
    s2_prime = math.sqrt(0.5 * 0.8) * 100
    torch.testing.assert_close(
        priors[16:], torch.tensor([[50.0, 50.0, 50.0, 50.0], [50.0, 50.0, s2_prime, s2_prime]])
    )


def test_default_boxes_non_square_image_and_clipping():
    # H = 100, W = 200: widths scale with W, heights with H; ratio 4 -> sqrt(4) = 2
    priors = default_boxes([1], (100, 200), [0.5, 3.2], [4])
    expected = torch.tensor(
        [
            [100.0, 50.0, 100.0, 50.0],
            [100.0, 50.0, 200.0, 100.0],  # sqrt(0.5 * 3.2) = 1.265 -> clipped to the image
            [100.0, 50.0, 200.0, 25.0],
            [100.0, 50.0, 50.0, 100.0],
        ]
    )
    torch.testing.assert_close(priors, expected)
    # a corner prior sticking out keeps its inside part: x -15..65 -> 0..65
    corner = default_boxes([2], (100, 100), [0.8, 0.8], [])
    assert corner.shape == (8, 4)
    torch.testing.assert_close(corner[0], torch.tensor([32.5, 32.5, 65.0, 65.0]))
    torch.testing.assert_close(corner[6], torch.tensor([67.5, 67.5, 65.0, 65.0]))


def test_default_boxes_errors():
    with pytest.raises(CnnzooError, match="scales"):
        default_boxes([2, 1], (100, 100), [0.2, 0.5], [2])
    with pytest.raises(CnnzooError, match="!= 1"):
        default_boxes([2], (100, 100), [0.2, 0.5], [1])
    with pytest.raises(CnnzooError, match="one aspect-ratio list per feature map"):
        default_boxes([2, 1], (100, 100), [0.2, 0.5, 0.8], [[2]])


# --------------------------------------------------------------------------------------------
# YOLOv1 targets
# --------------------------------------------------------------------------------------------


def test_yolov1_targets_hand_made_example():
    # 448 x 448 image, S = 7 -> 64 px cells; B = 2, C = 3 -> 5 * 2 + 3 = 13 channels
    boxes = torch.tensor(
        [
            [10.0, 20.0, 110.0, 80.0],  # centre (60, 50): cell row 0, col 0; label 2
            [160.0, 300.0, 224.0, 340.0],  # centre (192, 320) = (3 * 64, 5 * 64): boundary
            [40.0, 40.0, 60.0, 60.0],  # centre (50, 50): also cell (0, 0) but smaller
        ]
    )
    labels = torch.tensor([2, 0, 1])
    target, mask = yolov1_targets(boxes, labels, 7, 2, 3, (448, 448))
    assert target.shape == (7, 7, 13)
    assert mask.dtype == torch.bool and mask.shape == (7, 7)
    expected_mask = torch.zeros(7, 7, dtype=torch.bool)
    expected_mask[0, 0] = True
    # boundary rule: the centre on the line x = 3 * 64, y = 5 * 64 belongs to the cell to its
    # right / below, i.e. row 5, column 3, with offsets (0, 0)
    expected_mask[5, 3] = True
    assert torch.equal(mask, expected_mask)
    assert (target[~mask] == 0).all()

    slot_a = [60 / 64, 50 / 64, 100 / 448, 60 / 448, 1.0]
    torch.testing.assert_close(target[0, 0], torch.tensor([*slot_a, *slot_a, 0.0, 0.0, 1.0]))
    slot_b = [0.0, 0.0, 64 / 448, 40 / 448, 1.0]
    torch.testing.assert_close(target[5, 3], torch.tensor([*slot_b, *slot_b, 1.0, 0.0, 0.0]))


def test_yolov1_targets_image_edge_and_errors():
    # centre on the right / bottom image edge goes to the last cell with offset 1
    target, mask = yolov1_targets(
        torch.tensor([[440.0, 440.0, 456.0, 456.0]]), torch.tensor([0]), 7, 1, 1, (448, 448)
    )
    assert mask[6, 6] and mask.sum() == 1
    torch.testing.assert_close(target[6, 6, :2], torch.tensor([1.0, 1.0]))
    with pytest.raises(CnnzooError, match="1 label"):
        yolov1_targets(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([3]), 7, 2, 3, (64, 64))
    with pytest.raises(CnnzooError, match="outside"):
        yolov1_targets(torch.tensor([[60.0, 0, 80, 10]]), torch.tensor([0]), 7, 2, 3, (64, 64))


# --------------------------------------------------------------------------------------------
# k-means anchors
# --------------------------------------------------------------------------------------------


def _clustered_wh(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[10.0, 30.0], [60.0, 20.0], [120.0, 120.0], [25.0, 90.0]])
    idx = torch.randint(len(centres), (400,), generator=gen)
    jitter = 1 + 0.1 * (2 * torch.rand(400, 2, generator=gen) - 1)
    return centres[idx] * jitter


def _scene_like_wh(seed: int = 0) -> torch.Tensor:
    # items pasted as 20-48 px squares; the object inside is narrower in one direction
    gen = torch.Generator().manual_seed(seed)
    side = 20 + 28 * torch.rand(500, generator=gen)
    ratio = torch.exp((2 * torch.rand(500, generator=gen) - 1) * math.log(2.5))
    return torch.stack([side * ratio.clamp(max=1), side * (1 / ratio).clamp(max=1)], 1)


def test_anchor_iou_known_values():
    wh = torch.tensor([[10.0, 10.0], [20.0, 5.0]])
    anchors = torch.tensor([[10.0, 10.0], [5.0, 20.0]])
    expected = torch.tensor([[1.0, 50 / 150], [50 / 150, 25 / 175]])
    torch.testing.assert_close(anchor_iou(wh, anchors), expected)
    assert mean_best_iou(wh, anchors) == pytest.approx((1 + 50 / 150) / 2)


@pytest.mark.parametrize(("make_wh", "k"), [(_clustered_wh, 4), (_scene_like_wh, 5)])
def test_kmeans_beats_uniform_anchors(make_wh, k):
    wh = make_wh()
    anchors, mean_iou = kmeans_anchors(wh, k)
    uniform = mean_best_iou(wh, uniform_anchors(wh, k))
    assert anchors.shape == (k, 2)
    assert mean_iou == pytest.approx(mean_best_iou(wh, anchors), abs=1e-6)
    assert mean_iou > uniform + 0.02, (mean_iou, uniform)
    areas = anchors[:, 0] * anchors[:, 1]
    assert (areas[1:] >= areas[:-1]).all()


def test_kmeans_finds_the_clusters_and_is_a_fixed_point():
    wh = _clustered_wh()
    anchors, mean_iou = kmeans_anchors(wh, 4)
    assert mean_iou > 0.85
    # sorted by area: (10, 30), (60, 20), (25, 90), (120, 120)
    truth = torch.tensor([[10.0, 30.0], [60.0, 20.0], [25.0, 90.0], [120.0, 120.0]])
    torch.testing.assert_close(anchors, truth, rtol=0.05, atol=0)
    # each anchor is the mean of the boxes closest to it (converged)
    assign = anchor_iou(wh, anchors).argmax(1)
    for j in range(4):
        torch.testing.assert_close(anchors[j], wh[assign == j].mean(0), rtol=1e-4, atol=1e-4)


def test_kmeans_deterministic_given_seed():
    wh = _scene_like_wh()
    a1, m1 = kmeans_anchors(wh, 6, seed=3)
    a2, m2 = kmeans_anchors(wh, 6, seed=3)
    assert torch.equal(a1, a2) and m1 == m2
    # the seed does drive the initialisation (these two seeds reach different optima)
    assert not torch.equal(kmeans_anchors(wh, 5, seed=0)[0], kmeans_anchors(wh, 5, seed=1)[0])


def test_kmeans_errors():
    wh = torch.tensor([[10.0, 10.0], [10.0, 10.0], [5.0, 8.0]])
    with pytest.raises(CnnzooError, match="k must be >= 1"):
        kmeans_anchors(wh, 0)
    with pytest.raises(CnnzooError, match="only 2 distinct"):
        kmeans_anchors(wh, 3)
    assert kmeans_anchors(wh, 2)[1] == pytest.approx(1.0)
    bad = torch.tensor([[10.0, 0.0], [-1.0, 4.0], [3.0, 3.0], [4.0, 5.0], [6.0, 7.0]])
    with pytest.raises(CnnzooError, match="2 of 5 box"):
        kmeans_anchors(bad, 2)


# --------------------------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------------------------


def test_postprocess_nms_is_class_aware():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1.0, 1, 11, 11]])  # IoU 81 / 119 = 0.68
    scores = torch.tensor([0.8, 0.9])
    same = postprocess(boxes, scores, torch.tensor([1, 1]))
    torch.testing.assert_close(same["boxes"], boxes[1:])
    torch.testing.assert_close(same["scores"], torch.tensor([0.9]))
    assert same["labels"].tolist() == [1]
    diff = postprocess(boxes, scores, torch.tensor([1, 2]))
    assert diff["scores"].tolist() == pytest.approx([0.9, 0.8])
    assert diff["labels"].tolist() == [2, 1]
    # IoU 0.68 below a 0.7 threshold: both kept even within a class
    assert len(postprocess(boxes, scores, torch.tensor([1, 1]), iou_threshold=0.7)["boxes"]) == 2


def test_postprocess_threshold_and_max_detections():
    boxes = torch.tensor([[20.0 * i, 0, 20 * i + 10, 10] for i in range(6)])  # disjoint
    scores = torch.tensor([0.3, 0.04, 0.9, 0.5, 0.06, 0.7])
    labels = torch.zeros(6, dtype=torch.long)
    out = postprocess(boxes, scores, labels)
    assert out["scores"].tolist() == pytest.approx([0.9, 0.7, 0.5, 0.3, 0.06])
    top = postprocess(boxes, scores, labels, max_detections=3)
    assert top["scores"].tolist() == pytest.approx([0.9, 0.7, 0.5])
    torch.testing.assert_close(top["boxes"], boxes[[2, 5, 3]])
    assert len(postprocess(boxes, scores, labels, score_threshold=0.95)["boxes"]) == 0
    with pytest.raises(CnnzooError, match="scores and labels"):
        postprocess(boxes, scores[:3], labels)


@pytest.mark.parametrize("max_detections", [0, 3, 100])
def test_score_candidates_batch_equals_image_by_image(max_detections):
    gen = torch.Generator().manual_seed(0)
    n, m, c, size = 4, 60, 3, (40, 50)
    xy = torch.rand(n, m, 2, generator=gen) * 50 - 5
    boxes = torch.cat([xy, xy + 4 + torch.rand(n, m, 2, generator=gen) * 20], -1)
    scores = torch.rand(n, m, c, generator=gen) * 0.3
    scores[2] = 0.0  # an image without candidates
    got = score_candidates(boxes, scores, size, 0.1, 0.5, max_detections)
    assert len(got) == n and len(got[2]["boxes"]) == 0
    for i in range(n):
        index, label = (scores[i] > 0.1).nonzero(as_tuple=True)
        want = postprocess(
            clip_boxes(boxes[i, index], size),
            scores[i, index, label],
            label,
            0.1,
            0.5,
            max_detections,
        )
        assert len(want["boxes"]) <= max_detections
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(got[i][key], want[key])
    total = sum(len(r["boxes"]) for r in got)
    assert total == 0 if max_detections == 0 else total > n
    with pytest.raises(CnnzooError, match="differ in N or M"):
        score_candidates(boxes, scores[:, :5], size, 0.1, 0.5, 10)


def test_clip_boxes():
    boxes = torch.tensor([[-5.0, -3.0, 50.0, 20.0], [10.0, 10.0, 300.0, 200.0]])
    expected = torch.tensor([[0.0, 0.0, 50.0, 20.0], [10.0, 10.0, 64.0, 48.0]])
    torch.testing.assert_close(clip_boxes(boxes, (48, 64)), expected)
