"""YOLOv1 and YOLOv3: registration, shapes, target assignment, losses and decoding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import cnnzoo.models  # noqa: F401  (registers yolov1 / yolov3)
from cnnzoo.errors import CnnzooError
from cnnzoo.models.detection.coders import yolov1_targets
from cnnzoo.registry import create_model, list_models, model_info

# A tiny backbone with stages at strides 2, 4, 8 (fast on CPU).
TINY = {"backbone": "convnet", "widths": (8, 16, 32)}
# Anchors for the hand-made YOLOv3 examples (sorted by area); scale k gets rows 3k..3k+2.
ANCHORS = [(4, 4), (6, 6), (8, 8), (12, 12), (16, 16), (20, 20), (28, 28), (36, 36), (48, 48)]


def _target(boxes, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def test_registered_as_detection():
    names = list_models("detection")
    for name in ("yolov1", "yolov3"):
        assert name in names
        info = model_info(name)
        assert info.task == "detection"
        assert info.input_size == (3, 96, 96)
        assert info.min_input_size == 32
        assert "Redmon" in info.paper and "20" in info.paper


@pytest.mark.parametrize("size", [(64, 64), (96, 80)])
def test_forward_shapes(size):
    h, w = size
    x = torch.randn(2, 3, h, w)
    v1 = create_model("yolov1", num_classes=3).eval()
    assert v1.num_classes == 3
    with torch.no_grad():
        assert v1(x).shape == (2, 7, 7, 5 * 2 + 3)

    v3 = create_model("yolov3", num_classes=3).eval()
    assert v3.strides == (8, 16, 32)
    with torch.no_grad():
        outs = v3(x)
    assert [tuple(o.shape) for o in outs] == [
        (2, 3, math.ceil(h / s), math.ceil(w / s), 5 + 3) for s in (8, 16, 32)
    ]


def test_forward_shapes_other_grid_and_backbone():
    x = torch.randn(2, 3, 64, 64)
    v1 = create_model("yolov1", num_classes=2, grid=5, num_boxes=3, **TINY).eval()
    v3 = create_model("yolov3", num_classes=2, **TINY).eval()
    with torch.no_grad():
        assert v1(x).shape == (2, 5, 5, 17)
        assert [tuple(o.shape) for o in v3(x)] == [(2, 3, n, n, 7) for n in (32, 16, 8)]
    assert v3.strides == (2, 4, 8)


@pytest.mark.parametrize(
    ("extra", "strides"), [((), (2, 4, 8)), ((24,), (4, 8, 16)), ((24, 40), (8, 16, 32))]
)
def test_yolov3_extra_layers_move_the_scales_to_coarser_strides(extra, strides):
    v3 = create_model("yolov3", num_classes=2, extra_channels=extra, **TINY).eval()
    assert v3.strides == strides
    assert len(v3.extras) == len(extra)
    # each extra layer: 1x1 bottleneck to half its width, then a 3x3 stride-2 convolution
    for layer, width in zip(v3.extras, extra, strict=True):
        assert layer[0].conv.kernel_size == (1, 1) and layer[0].conv.out_channels == width // 2
        assert layer[1].conv.stride == (2, 2) and layer[1].conv.out_channels == width
    with torch.no_grad():
        outs = v3(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 3, 64 // s, 64 // s, 7) for s in strides]
    # the boxes decode at the new strides: a centred cell offset lands in its own cell
    boxes = v3.decode_boxes(torch.zeros_like(outs[-1]), len(strides) - 1)
    s = strides[-1]
    torch.testing.assert_close(
        (boxes[0, 0, 1, 1, :2] + boxes[0, 0, 1, 1, 2:]) / 2, torch.tensor([1.5 * s, 1.5 * s])
    )
    loss = v3.loss(outs, [_target([[10, 10, 40, 50]], [1]), _target([], [])], (64, 64))
    assert torch.isfinite(loss["loss"]) and float(loss["loss_box"]) > 0


def test_yolov3_tiny_is_yolov3_at_the_papers_strides_on_a_narrow_backbone():
    tiny = create_model("yolov3_tiny", num_classes=4)
    assert type(tiny) is type(create_model("yolov3", num_classes=4, **TINY))
    assert tiny.strides == (8, 16, 32) and tiny.box_weight == 5.0
    assert tiny.backbone.feature_info.channels() == [64]
    assert sum(p.numel() for p in tiny.parameters()) < 400_000
    # every yolov3 option applies
    other = create_model("yolov3_tiny", num_classes=4, box_weight=1.0, extra_channels=(32,))
    assert other.strides == (4, 8, 16) and other.box_weight == 1.0


@pytest.mark.parametrize("extra", [(8, 8, 8), (0,), (16, -4)])
def test_yolov3_bad_extra_layers_rejected(extra):
    with pytest.raises(CnnzooError, match="extra_channels"):
        create_model("yolov3", num_classes=2, extra_channels=extra, **TINY)


def test_yolov3_default_anchors_sorted_and_bad_anchors_rejected():
    v3 = create_model("yolov3", num_classes=2, **TINY)
    area = v3.anchors.prod(1)
    assert v3.anchors.shape == (9, 2)
    assert bool((area[1:] >= area[:-1]).all())
    with pytest.raises(CnnzooError):
        create_model("yolov3", num_classes=2, anchors=ANCHORS[:8], **TINY)
    with pytest.raises(CnnzooError):
        create_model("yolov3", num_classes=2, anchors=[(0, 4), *ANCHORS[1:]], **TINY)


# --------------------------------------------------------------------------------------------
# YOLOv3 target assignment and ignore rule
# --------------------------------------------------------------------------------------------


def test_yolov3_assignment_by_hand():
    v3 = create_model("yolov3", num_classes=3, anchors=ANCHORS, **TINY)
    grids = [(32, 32), (16, 16), (8, 8)]  # 64x64 image at strides 2, 4, 8
    # Box 1: 18x14 centred at (21, 37): best anchor (16, 16) = #4 -> scale 1 (stride 4),
    # slot 1, cell col 5 row 9, offsets (0.25, 0.25).
    # Box 2: 40x40 centred at (50, 20): best anchor (36, 36) = #7 -> scale 2 (stride 8),
    # slot 1, cell col 6 row 2, offsets (0.25, 0.5).
    targets = [_target([[12, 30, 30, 44], [30, 0, 70, 40]], [2, 0])]
    out = v3.assign(targets, grids)
    assert [int(a["pos"].sum()) for a in out] == [0, 1, 1]
    assert bool(out[1]["pos"][0, 1, 9, 5]) and bool(out[2]["pos"][0, 1, 2, 6])
    torch.testing.assert_close(
        out[1]["box"][0, 1, 9, 5],
        torch.tensor([0.25, 0.25, math.log(18 / 16), math.log(14 / 16)]),
    )
    torch.testing.assert_close(
        out[2]["box"][0, 1, 2, 6], torch.tensor([0.25, 0.5, math.log(40 / 36), math.log(40 / 36)])
    )
    assert out[1]["cls"][0, 1, 9, 5].tolist() == [0, 0, 1]
    assert out[2]["cls"][0, 1, 2, 6].tolist() == [1, 0, 0]
    assert float(out[1]["cls"].sum() + out[2]["cls"].sum()) == 2


def _v3_outputs(v3, batch=1, size=64, num_classes=3):
    """Raw outputs with tiny boxes (t_w = t_h = -10, no overlap with anything), logits 0."""
    outs = []
    for s in v3.strides:
        o = torch.zeros(batch, 3, size // s, size // s, 5 + num_classes)
        o[..., 2:4] = -10.0
        outs.append(o)
    return outs


def test_yolov3_ignore_rule():
    v3 = create_model("yolov3", num_classes=3, anchors=ANCHORS, **TINY)
    targets = [_target([[12, 30, 30, 44]], [2])]  # positive: scale 1, slot 1, cell (9, 5)

    def loss_obj(overlap: bool, logit: float) -> float:
        outs = _v3_outputs(v3)
        neg = outs[1][0, 2, 9, 5]  # slot 2 (anchor 20x20) of the same cell: a negative
        if overlap:  # decode exactly to the truth box (IoU 1 > 0.5)
            neg[:2] = torch.logit(torch.tensor([0.25, 0.25]))
            neg[2:4] = torch.tensor([math.log(18 / 20), math.log(14 / 20)])
        neg[4] = logit
        return float(v3.loss(outs, targets, (64, 64))["loss_obj"])

    baseline = float(v3.loss(_v3_outputs(v3), targets, (64, 64))["loss_obj"])
    ignored_low, ignored_high = loss_obj(True, 0.0), loss_obj(True, 8.0)
    counted_high = loss_obj(False, 8.0)
    # Overlapping negative: no objectness loss whatever its logit (its ln 2 has gone).
    assert ignored_low == pytest.approx(ignored_high, abs=1e-4)
    assert baseline - ignored_low == pytest.approx(math.log(2), abs=1e-4)
    # Not overlapping: BCE(8, 0) = softplus(8) counts.
    assert counted_high - ignored_low == pytest.approx(
        float(F.softplus(torch.tensor(8.0))), abs=1e-3
    )


def test_yolov3_positive_is_never_ignored():
    v3 = create_model("yolov3", num_classes=3, anchors=ANCHORS, **TINY)
    targets = [_target([[12, 30, 30, 44]], [2])]
    outs = _v3_outputs(v3)
    pos = outs[1][0, 1, 9, 5]
    pos[:2] = torch.logit(torch.tensor([0.25, 0.25]))
    pos[2:4] = torch.tensor([math.log(18 / 16), math.log(14 / 16)])
    pos[4] = -8.0  # a perfect box with low objectness still gets BCE(-8, 1)
    loss = v3.loss(outs, targets, (64, 64))
    assert float(loss["loss_box"]) == pytest.approx(0.0, abs=1e-6)
    n_neg = sum(o[..., 4].numel() for o in outs) - 1
    expected = n_neg * math.log(2) + float(F.softplus(torch.tensor(8.0)))
    assert float(loss["loss_obj"]) == pytest.approx(expected, rel=1e-4)


# --------------------------------------------------------------------------------------------
# YOLOv1 responsible predictor
# --------------------------------------------------------------------------------------------


def _v1_raw(v1, target, image_size, slots):
    """Raw YOLOv1 outputs for one image: ``slots`` = per predictor ``(x, y, w, h, conf)`` for
    the object cell (w, h relative, conf in (0, 1)); other cells confidence ~0."""
    s, b, c = v1.grid, v1.num_boxes, v1.num_classes
    raw = torch.zeros(1, s, s, 5 * b + c)
    raw[..., 4 : 5 * b : 5] = -20.0
    _, mask = yolov1_targets(target["boxes"], target["labels"], s, b, c, image_size)
    row, col = mask.nonzero()[0].tolist()
    for k, (x, y, w, h, conf) in enumerate(slots):
        values = torch.tensor([x, y, math.sqrt(w), math.sqrt(h), conf])
        raw[0, row, col, 5 * k : 5 * k + 5] = torch.logit(values.clamp(1e-6, 1 - 1e-6))
    return raw, (row, col)


@pytest.mark.parametrize("good", [0, 1])
def test_yolov1_responsible_predictor_has_highest_iou(good):
    v1 = create_model("yolov1", num_classes=3, grid=2, **TINY)
    # 64x64 image, grid 2 (32 px cells): box 20x20 centred at (16, 16) -> cell (0, 0).
    target = _target([[6, 6, 26, 26]], [1])
    exact = (0.5, 0.5, 20 / 64, 20 / 64, 0.5)
    small = (0.5, 0.5, 5 / 64, 5 / 64, 0.5)  # same centre, IoU 25 / 400
    slots = [exact, small] if good == 0 else [small, exact]
    raw, (row, col) = _v1_raw(v1, target, (64, 64), slots)
    m = v1.match(raw, [target], (64, 64))
    assert (row, col) == (0, 0) and bool(m["mask"][0, 0, 0]) and int(m["mask"].sum()) == 1
    assert int(m["responsible"][0, 0, 0]) == good
    torch.testing.assert_close(m["iou"][0, 0, 0, good], torch.tensor(1.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        m["iou"][0, 0, 0, 1 - good], torch.tensor(25 / 400), atol=1e-4, rtol=0
    )
    loss = v1.loss(raw, [target], (64, 64))
    # Only the responsible (exact) predictor's coordinates count: no box loss.
    assert float(loss["loss_box"]) == pytest.approx(0.0, abs=1e-6)
    # conf 0.5 vs IoU 1 for the responsible one, lambda_noobj * 0.5^2 for the other.
    assert float(loss["loss_obj"]) == pytest.approx(0.25 + 0.5 * 0.25, abs=1e-4)


def test_yolov1_rescore_false_uses_one_and_box_weight_scales():
    v1 = create_model("yolov1", num_classes=3, grid=2, rescore=False, box_weight=2.0, **TINY)
    target = _target([[6, 6, 26, 26]], [1])
    slots = [(0.25, 0.5, 20 / 64, 20 / 64, 0.9), (0.5, 0.5, 2 / 64, 2 / 64, 0.5)]
    raw, _ = _v1_raw(v1, target, (64, 64), slots)
    loss = v1.loss(raw, [target], (64, 64))
    # Predictor 0 has the higher IoU although off-centre; its coordinate error is 0.25^2.
    assert float(loss["loss_box"]) == pytest.approx(2.0 * 0.0625, abs=1e-4)
    assert float(loss["loss_obj"]) == pytest.approx(0.01 + 0.5 * 0.25, abs=1e-4)


# --------------------------------------------------------------------------------------------
# Training and decoding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["yolov1", "yolov3"])
def test_loss_finite_and_decreasing(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **TINY)
    images = torch.randn(2, 3, 64, 64)
    targets = [
        _target([[8, 10, 32, 40], [36, 30, 60, 58]], [0, 2]),
        _target([[20, 16, 46, 44]], [1]),
    ]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        out = model.loss(model(images), targets, (64, 64))
        assert set(out) >= {"loss", "loss_box", "loss_obj", "loss_cls"}
        total = out["loss"]
        assert torch.isfinite(total)
        assert float(total.detach()) == pytest.approx(
            float((out["loss_box"] + out["loss_obj"] + out["loss_cls"]).detach()), rel=1e-5
        )
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(total.detach()))
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("name", ["yolov1", "yolov3"])
def test_decode_inside_image_and_capped(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **TINY).eval()
    h, w = 64, 48
    with torch.no_grad():
        out = model(torch.randn(2, 3, h, w))
    # Inflate the raw outputs so that many boxes stick out of the image.
    out = out * 4 if isinstance(out, torch.Tensor) else [o * 4 for o in out]
    dets = model.decode(out, (h, w), score_threshold=0.0, max_detections=5)
    assert len(dets) == 2
    for d in dets:
        assert d["boxes"].shape == (5, 4) and d["scores"].shape == (5,)
        assert d["labels"].dtype == torch.int64 and bool((d["labels"] < 3).all())
        b = d["boxes"]
        assert bool((b[:, 0] >= 0).all() and (b[:, 1] >= 0).all())
        assert bool((b[:, 2] <= w).all() and (b[:, 3] <= h).all())
        assert bool((d["scores"][:-1] >= d["scores"][1:]).all())


def test_yolov1_decode_round_trip():
    v1 = create_model("yolov1", num_classes=3, **TINY)
    box = [10.0, 20.0, 40.0, 44.0]
    target = _target([box], [1])
    tgt, mask = yolov1_targets(target["boxes"], target["labels"], 7, 2, 3, (64, 64))
    row, col = mask.nonzero()[0].tolist()
    raw = torch.full((1, 7, 7, 13), 0.0)
    raw[..., 4:10:5] = -20.0
    slot = tgt[row, col, :5].clone()
    slot[2:4] = slot[2:4].sqrt()  # the network predicts sqrt(w), sqrt(h)
    slot[4] = 1 - 1e-6
    raw[0, row, col, :5] = torch.logit(slot.clamp(1e-6, 1 - 1e-6))
    raw[0, row, col, 10:] = torch.tensor([-10.0, 10.0, -10.0])
    (det,) = v1.decode(raw, (64, 64))
    assert len(det["boxes"]) == 1
    torch.testing.assert_close(det["boxes"][0], torch.tensor(box), atol=1e-2, rtol=0)
    assert int(det["labels"][0]) == 1 and float(det["scores"][0]) > 0.99


def test_yolov3_decode_round_trip():
    v3 = create_model("yolov3", num_classes=3, anchors=ANCHORS, **TINY)
    box = [12.0, 30.0, 30.0, 44.0]
    target = _target([box], [2])
    outs = [torch.zeros(1, 3, n, n, 8) for n in (32, 16, 8)]
    for o in outs:
        o[..., 4] = -20.0
    assigned = v3.assign([target], [(32, 32), (16, 16), (8, 8)])
    for o, a in zip(outs, assigned, strict=True):
        pos = a["pos"]
        if pos.any():
            t = a["box"][pos]
            o[pos] = torch.cat(
                [
                    torch.logit(t[:, :2]),
                    t[:, 2:4],
                    torch.full((len(t), 1), 20.0),
                    (a["cls"][pos] * 40 - 20),
                ],
                1,
            )
    (det,) = v3.decode(outs, (64, 64))
    assert len(det["boxes"]) == 1
    torch.testing.assert_close(det["boxes"][0], torch.tensor(box), atol=1e-3, rtol=0)
    assert int(det["labels"][0]) == 2 and float(det["scores"][0]) > 0.99


def test_empty_targets_give_finite_loss():
    for name in ("yolov1", "yolov3"):
        model = create_model(name, num_classes=3, **TINY)
        out = model(torch.randn(2, 3, 64, 64))
        empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
        loss = model.loss(out, [empty, empty], (64, 64))
        assert torch.isfinite(loss["loss"])
        assert float(loss["loss_box"].detach()) == 0 and float(loss["loss_cls"].detach()) == 0
