"""SSD: registration, default-box counts, matching, hard negative mining, training and
decoding."""

from __future__ import annotations

import math

import pytest
import torch

import cnnzoo
import cnnzoo.models.detection.ssd  # registers "ssd"
from cnnzoo.models.detection.coders import default_boxes, ssd_decode, ssd_encode
from cnnzoo.models.detection.ssd import (
    SSD,
    default_aspect_ratios,
    hard_negative_mask,
    ssd_match,
    ssd_scales,
)
from cnnzoo.registry import list_models, model_info

TINY = dict(backbone="convnet", widths=(8, 16, 16), extra_channels=(16, 16))


def _tiny(num_classes: int = 3, **kwargs) -> SSD:
    torch.manual_seed(0)
    return cnnzoo.create_model("ssd", num_classes=num_classes, **{**TINY, **kwargs})


def test_ssd_is_registered_for_detection() -> None:
    assert "ssd" in list_models("detection")
    info = model_info("ssd")
    assert info.task == "detection"
    assert info.paper.startswith("Liu")
    assert info.input_size == (3, 96, 96)
    assert info.min_input_size == 32


def test_scales_are_linear_from_smin_to_smax() -> None:
    scales = ssd_scales(4)
    assert scales[0] == pytest.approx(0.2) and scales[3] == pytest.approx(0.9)
    assert scales == pytest.approx([0.2, 0.2 + 0.7 / 3, 0.2 + 1.4 / 3, 0.9, 0.9 + 0.7 / 3])
    assert default_aspect_ratios(4) == [[2.0], [2.0, 3.0], [2.0, 3.0], [2.0]]


@pytest.mark.parametrize(
    ("size", "maps", "count"),
    [
        # ResNet-18: stride 16 and 32, then two stride-2 extras; 4, 6, 6, 4 boxes per location.
        ((64, 64), [(4, 4), (2, 2), (1, 1), (1, 1)], 16 * 4 + 4 * 6 + 1 * 6 + 1 * 4),
        ((96, 80), [(6, 5), (3, 3), (2, 2), (1, 1)], 30 * 4 + 9 * 6 + 4 * 6 + 1 * 4),
        ((32, 32), [(2, 2), (1, 1), (1, 1), (1, 1)], 4 * 4 + 1 * 6 + 1 * 6 + 1 * 4),
    ],
)
def test_outputs_match_the_default_boxes_of_the_input_size(size, maps, count) -> None:
    torch.manual_seed(0)
    model = cnnzoo.create_model("ssd", num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out["deltas"].shape == (2, count, 4)
    assert out["logits"].shape == (2, count, 6)
    expected = default_boxes(maps, size, ssd_scales(4), default_aspect_ratios(4))
    assert expected.shape == (count, 4)
    torch.testing.assert_close(out["priors"], expected)


def test_first_map_default_boxes_are_where_the_paper_puts_them() -> None:
    model = cnnzoo.create_model("ssd", num_classes=2).eval()
    with torch.no_grad():
        priors = model(torch.zeros(1, 3, 96, 96))["priors"]
    # First location of the 6x6 map: centre (8, 8); ratio-1 box of scale 0.2 -> 19.2 pixels,
    # i.e. -1.6 .. 17.6, clipped to 0 .. 17.6.
    torch.testing.assert_close(priors[0], torch.tensor([8.8, 8.8, 17.6, 17.6]))
    s = math.sqrt(0.2 * (0.2 + 0.7 / 3)) * 96  # second box, sqrt(s_1 s_2); clipped at 0
    torch.testing.assert_close(priors[1, 2:], torch.full((2,), (8 + s / 2)))


# Priors (cxcywh): four 32x32 quadrants of a 64x64 image, the whole image, a 40x40 corner.
PRIORS = torch.tensor(
    [
        [16.0, 16.0, 32.0, 32.0],
        [48.0, 16.0, 32.0, 32.0],
        [16.0, 48.0, 32.0, 32.0],
        [48.0, 48.0, 32.0, 32.0],
        [32.0, 32.0, 64.0, 64.0],
        [20.0, 20.0, 40.0, 40.0],
    ]
)


def test_matching_on_a_hand_made_example() -> None:
    boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0], [40.0, 40.0, 50.0, 50.0]])
    labels = torch.tensor([4, 1])
    offsets, classes = ssd_match(boxes, labels, PRIORS)
    # Truth 0 equals prior 0 (zero offsets); prior 5 overlaps it with IoU 1024/1600 > 0.5;
    # truth 1 overlaps prior 3 by only 100/1024 but it is its best, so it is matched anyway;
    # the whole-image prior has IoU 0.25 with truth 0: background.
    assert classes.tolist() == [5, 0, 0, 2, 0, 5]
    torch.testing.assert_close(offsets[0], torch.zeros(4))
    torch.testing.assert_close(offsets[5], ssd_encode(boxes[0], PRIORS[5]))
    torch.testing.assert_close(offsets[3], ssd_encode(boxes[1], PRIORS[3]))
    assert offsets[[1, 2, 4]].abs().sum() == 0
    # Round trip: decoding the targets gives back the truths.
    torch.testing.assert_close(ssd_decode(offsets[3], PRIORS[3]), boxes[1])


def test_matching_threshold_and_empty_images() -> None:
    boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    _, classes = ssd_match(boxes, torch.tensor([0]), PRIORS, iou_threshold=0.7)
    assert classes.tolist() == [1, 0, 0, 0, 0, 0]  # IoU 0.64 of prior 5 is now too low
    offsets, classes = ssd_match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), PRIORS)
    assert classes.sum() == 0 and offsets.abs().sum() == 0


def test_hard_negative_mining_keeps_three_per_positive_with_the_highest_loss() -> None:
    torch.manual_seed(0)
    loss = torch.rand(3, 12)
    positive = torch.zeros(3, 12, dtype=torch.bool)
    positive[0, [1, 5]] = True  # 2 positives -> 6 negatives out of 10
    positive[1, [0, 2, 4, 6]] = True  # 4 positives -> 12 wanted, only 8 negatives: all
    # image 2: no positive -> no negative
    negative = hard_negative_mask(loss, positive, 3)
    assert negative.sum(1).tolist() == [6, 8, 0]
    assert not (negative & positive).any()
    candidates = loss[0].masked_fill(positive[0], -1.0)
    expected = set(candidates.topk(6).indices.tolist())
    assert set(negative[0].nonzero().flatten().tolist()) == expected
    assert negative[1].tolist() == (~positive[1]).tolist()
    assert hard_negative_mask(loss, positive, 1).sum(1).tolist() == [2, 4, 0]


def _batch():
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 64)
    targets = [
        {"boxes": torch.tensor([[8.0, 10.0, 40.0, 44.0]]), "labels": torch.tensor([2])},
        {
            "boxes": torch.tensor([[30.0, 4.0, 60.0, 30.0], [2.0, 36.0, 20.0, 62.0]]),
            "labels": torch.tensor([0, 1]),
        },
    ]
    return images, targets


def test_loss_is_finite_weighted_and_decreases() -> None:
    model = _tiny(cls_weight=2.0, box_weight=0.5)
    images, targets = _batch()
    losses = model.loss(model(images), targets, (64, 64))
    assert set(losses) == {"loss", "loss_box", "loss_cls"}
    assert all(torch.isfinite(v) for v in losses.values())
    torch.testing.assert_close(losses["loss"], 2.0 * losses["loss_cls"] + 0.5 * losses["loss_box"])

    model = _tiny()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(15):
        loss = model.loss(model(images), targets, (64, 64))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert all(math.isfinite(v) for v in history)
    assert history[-1] < 0.7 * history[0]


def test_loss_of_images_without_objects_is_zero_and_finite() -> None:
    model = _tiny()
    out = model(torch.randn(2, 3, 64, 64))
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    losses = model.loss(out, [empty, empty], (64, 64))
    assert losses["loss"].item() == 0.0


def test_decode_of_hand_set_outputs_returns_that_box_and_label() -> None:
    model = _tiny(num_classes=4).eval()
    with torch.no_grad():
        priors = model(torch.zeros(1, 3, 64, 64))["priors"]
    p = priors.shape[0]
    k = 37
    deltas = torch.zeros(1, p, 4)
    deltas[0, k] = torch.tensor([0.5, -0.5, 0.2, -0.1])
    logits = torch.zeros(1, p, 5)
    logits[..., 0] = 10.0  # background everywhere
    logits[0, k, 3] = 20.0  # ... except prior k: class index 3 = dataset label 2
    dets = model.decode({"deltas": deltas, "logits": logits, "priors": priors}, (64, 64), 0.5)
    assert len(dets) == 1
    assert dets[0]["labels"].tolist() == [2]
    assert dets[0]["scores"].item() > 0.99
    cx, cy, w, h = priors[k].tolist()
    expected = torch.tensor([cx + 0.05 * w, cy - 0.05 * h, w * math.exp(0.04), h * math.exp(-0.02)])
    expected = torch.cat([expected[:2] - expected[2:] / 2, expected[:2] + expected[2:] / 2])
    torch.testing.assert_close(dets[0]["boxes"][0], expected.clamp(0, 64))


def test_decoded_boxes_lie_inside_the_image() -> None:
    model = _tiny().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 48, 64))
    out["deltas"] = torch.randn_like(out["deltas"]) * 3
    out["logits"] = torch.randn_like(out["logits"]) * 3
    dets = model.decode(out, (48, 64), score_threshold=0.01, max_detections=50)
    assert len(dets) == 2
    for det in dets:
        boxes = det["boxes"]
        assert 0 < boxes.shape[0] <= 50
        assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= 64).all()
        assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= 48).all()
        assert det["labels"].min() >= 0 and det["labels"].max() < 3
        assert (det["scores"][:-1] >= det["scores"][1:]).all()
