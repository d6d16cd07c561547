"""Sliding-window detector: registration, window grid, crops, labelling and sampling, loss,
training and decoding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, box_iou

import cnnzoo
import cnnzoo.models.detection.sliding_window  # registers "sliding_window"
from cnnzoo.errors import CnnzooError
from cnnzoo.models.detection.coders import ssd_decode, ssd_encode
from cnnzoo.models.detection.sliding_window import SlidingWindowDetector
from cnnzoo.models.detection.windows import (
    crop_windows,
    label_windows,
    sample_windows,
    sliding_windows,
)
from cnnzoo.registry import list_models, model_info

TINY = dict(backbone="convnet", widths=(8, 16), crop_size=16)


def _tiny(num_classes: int = 3, **kwargs) -> SlidingWindowDetector:
    torch.manual_seed(0)
    return cnnzoo.create_model("sliding_window", num_classes=num_classes, **{**TINY, **kwargs})


def test_sliding_window_is_registered_for_detection() -> None:
    assert "sliding_window" in list_models("detection")
    info = model_info("sliding_window")
    assert info.task == "detection"
    assert info.family == "sliding_window"
    assert info.paper.startswith("Sermanet")
    assert info.input_size == (3, 96, 96)
    assert info.min_input_size == 32
    assert SlidingWindowDetector.uses_targets is True


def test_window_count_of_a_hand_computed_grid() -> None:
    # H=48, W=64, shorter side 48, stride = half the window.
    # s=0.5, a=1: 24x24, columns ceil(40/12)+1 = 5, rows ceil(24/12)+1 = 3 -> 15
    # s=0.5, a=2: 33.9x17.0, columns ceil(30.1/17.0)+1 = 3, rows ceil(31.0/8.49)+1 = 5 -> 15
    # s=1,   a=1: 48x48, columns ceil(16/24)+1 = 2, rows 1 -> 2
    # s=1,   a=2: 67.9 -> 64 wide x 33.9, columns 1, rows ceil(14.1/17.0)+1 = 2 -> 2
    windows = sliding_windows((48, 64), (0.5, 1.0), (1.0, 2.0), 0.5)
    assert windows.shape == (34, 4)
    wh = windows[:, 2:] - windows[:, :2]
    torch.testing.assert_close(wh[0], torch.tensor([24.0, 24.0]))
    torch.testing.assert_close(wh[15], torch.tensor([24 * math.sqrt(2), 24 / math.sqrt(2)]))
    torch.testing.assert_close(wh[-1], torch.tensor([64.0, 48 / math.sqrt(2)]))
    # Default settings: 529 + 79 + 19 windows on a 96x96 image.
    model = _tiny()
    assert model.num_windows((96, 96)) == 627
    assert model.windows((96, 96)) is model.windows((96, 96))  # cached


def test_windows_step_by_the_stride_fraction() -> None:
    windows = sliding_windows((64, 64), (0.5,), (1.0,), 0.25)
    assert windows.shape == (25, 4)
    assert windows[:5, 0].tolist() == [0.0, 8.0, 16.0, 24.0, 32.0]
    assert windows[::5, 1].tolist() == [0.0, 8.0, 16.0, 24.0, 32.0]
    assert ((windows[:, 2:] - windows[:, :2]) == 32).all()


@pytest.mark.parametrize(
    ("size", "scale", "ratio"),
    [((32, 32), 0.25, 1.0), ((48, 64), 0.3, 2.0), ((96, 80), 0.5, 0.5), ((40, 56), 0.9, 3.0)],
)
def test_windows_lie_inside_and_cover_the_image(size, scale, ratio) -> None:
    h, w = size
    windows = sliding_windows(size, (scale,), (ratio,), 0.25)
    assert (windows[:, :2] >= 0).all()
    assert (windows[:, 2] <= w + 1e-4).all() and (windows[:, 3] <= h + 1e-4).all()
    assert (windows[:, 2:] > windows[:, :2]).all()
    assert windows[:, 2].max().item() == pytest.approx(w, abs=1e-4)
    assert windows[:, 3].max().item() == pytest.approx(h, abs=1e-4)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    px, py = xs.reshape(-1, 1), ys.reshape(-1, 1)
    inside = (px >= windows[:, 0]) & (px <= windows[:, 2])
    inside &= (py >= windows[:, 1]) & (py <= windows[:, 3])
    assert inside.any(1).all()  # every pixel centre is in some window


def test_crop_of_an_integer_window_is_the_resized_slice() -> None:
    torch.manual_seed(0)
    images = torch.randn(2, 3, 40, 48)
    rois = torch.tensor(
        [
            [1.0, 8.0, 4.0, 40.0, 36.0],  # 32x32 of image 1, halved
            [0.0, 4.0, 4.0, 36.0, 36.0],  # 32x32 of image 0, quartered
            [0.0, 10.0, 6.0, 26.0, 22.0],  # 16x16 of image 0, kept
        ]
    )
    half = crop_windows(images, rois[:1], 16)[0]
    expected = images[1:, :, 4:36, 8:40]
    torch.testing.assert_close(half, F.interpolate(expected, size=16, mode="bilinear")[0])
    torch.testing.assert_close(half, F.avg_pool2d(expected, 2)[0])
    quarter = crop_windows(images, rois[1:2], 8)[0]
    torch.testing.assert_close(quarter, F.avg_pool2d(images[:1, :, 4:36, 4:36], 4)[0])
    same = crop_windows(images, rois[2:], 16)[0]
    torch.testing.assert_close(same, images[0, :, 6:22, 10:26])


def test_labelling_of_windows_against_a_truth() -> None:
    boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    labels = torch.tensor([2])
    windows = torch.tensor(
        [
            [0.0, 0.0, 32.0, 32.0],  # the truth itself
            [40.0, 40.0, 60.0, 60.0],  # far away
            [0.0, 0.0, 32.0, 48.0],  # IoU 1024 / 1536 = 0.67: positive
            [0.0, 0.0, 32.0, 80.0],  # IoU 1024 / 2560 = 0.4: ignored
            [0.0, 0.0, 32.0, 120.0],  # IoU 0.27: background
        ]
    )
    classes, offsets = label_windows(windows, boxes, labels)
    assert classes.tolist() == [3, 0, 3, -1, 0]
    torch.testing.assert_close(offsets[0], torch.zeros(4))
    prior = box_convert(windows[2], "xyxy", "cxcywh")
    torch.testing.assert_close(offsets[2], ssd_encode(boxes[0], prior))
    torch.testing.assert_close(ssd_decode(offsets[2], prior), boxes[0])
    assert offsets[[1, 3, 4]].abs().sum() == 0
    empty, _ = label_windows(windows, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert empty.tolist() == [0] * 5


def test_training_forward_samples_labelled_windows() -> None:
    model = _tiny(windows_per_image=16, positive_fraction=0.25)
    targets = [
        # A truth equal to a grid window (64x64 image, size 0.5, ratio 1, first position).
        {"boxes": torch.tensor([[0.0, 0.0, 32.0, 32.0]]), "labels": torch.tensor([1])},
        # A tiny truth: no grid window reaches IoU 0.5, jittered truths stand in.
        {"boxes": torch.tensor([[40.0, 40.0, 46.0, 46.0]]), "labels": torch.tensor([0])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    grid = model.windows((64, 64))
    assert (box_iou(grid, targets[1]["boxes"]) < 0.5).all()
    torch.manual_seed(3)
    out = model(torch.randn(3, 3, 64, 64), targets)
    assert out["logits"].shape == (48, 4) and out["deltas"].shape == (48, 4)
    assert out["batch_index"].tolist() == [0] * 16 + [1] * 16 + [2] * 16
    classes = out["classes"].view(3, 16)
    assert (classes >= 0).all()
    assert (classes > 0).sum(1).tolist() == [4, 4, 0]
    assert set(classes[0].tolist()) == {0, 2} and set(classes[1].tolist()) == {0, 1}
    # Every sampled window carries the label and offsets label_windows gives it.
    for i, target in enumerate(targets):
        windows = out["windows"].view(3, 16, 4)[i]
        expected, offsets = label_windows(windows, target["boxes"], target["labels"])
        assert expected.tolist() == classes[i].tolist()
        torch.testing.assert_close(out["offsets"].view(3, 16, 4)[i], offsets)


def test_sampler_takes_the_grid_positives_and_fills_with_background() -> None:
    windows = sliding_windows((64, 64), (0.5,), (1.0,), 0.25)  # 25 windows of 32x32
    boxes, labels = torch.tensor([[0.0, 0.0, 32.0, 32.0]]), torch.tensor([4])
    torch.manual_seed(0)
    sampled, classes, offsets = sample_windows(windows, boxes, labels, (64, 64), 40, 0.5)
    assert sampled.shape == (40, 4) and classes.shape == (40,) and offsets.shape == (40, 4)
    # Positives on the grid: shifts by 0 or 8 pixels (IoU 1, 0.6, 0.6, 0.39 -> 3 of them),
    # topped up to 20 with jittered truths; all 40 labelled consistently.
    assert (classes == 5).sum() == 20
    assert (classes == 0).sum() == 20
    again, _ = label_windows(sampled, boxes, labels)
    assert again.tolist() == classes.tolist()


def _scene():
    torch.manual_seed(1)
    image = torch.rand(1, 3, 48, 48) * 0.2
    image[:, 0, 6:30, 4:28] += 1.0  # a red square: class 1
    image[:, 2, 28:46, 20:46] += 1.0  # a blue rectangle: class 0
    targets = [
        {
            "boxes": torch.tensor([[4.0, 6.0, 28.0, 30.0], [20.0, 28.0, 46.0, 46.0]]),
            "labels": torch.tensor([1, 0]),
        }
    ]
    return image, targets


def test_loss_weights_and_components() -> None:
    image, targets = _scene()
    losses = []
    for cls_weight, box_weight in ((1.0, 1.0), (2.0, 0.5)):
        model = _tiny(cls_weight=cls_weight, box_weight=box_weight)
        torch.manual_seed(7)
        losses.append(model.loss(model(image, targets), targets, (48, 48)))
    first, second = losses
    assert set(first) == {"loss", "loss_cls", "loss_box"}
    assert all(torch.isfinite(v) and v > 0 for v in first.values())
    torch.testing.assert_close(first["loss"], first["loss_cls"] + first["loss_box"])
    torch.testing.assert_close(second["loss_cls"], 2.0 * first["loss_cls"])
    torch.testing.assert_close(second["loss_box"], 0.5 * first["loss_box"])
    # Near-uniform initial logits: cross-entropy close to log(C + 1).
    assert first["loss_cls"].item() == pytest.approx(math.log(4), abs=0.1)


def test_loss_decreases_when_training_on_one_image() -> None:
    image, targets = _scene()
    model = _tiny(windows_per_image=32)

    def measured() -> dict[str, float]:
        torch.manual_seed(123)  # the same sampled windows each time
        losses = model.loss(model(image, targets), targets, (48, 48))
        return {k: v.item() for k, v in losses.items()}

    initial = measured()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(30):
        loss = model.loss(model(image, targets), targets, (48, 48))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert all(math.isfinite(v) for v in history)
    final = measured()
    # The classes are learnt fast; the offsets, from globally pooled features, more slowly.
    assert final["loss_cls"] < 0.5 * initial["loss_cls"]
    assert final["loss_box"] < 0.85 * initial["loss_box"]
    assert final["loss"] < 0.7 * initial["loss"]


def test_loss_of_all_windows_labels_them_against_the_truths() -> None:
    model = _tiny().eval()
    image, targets = _scene()
    with torch.no_grad():
        out = model(image)
        losses = model.loss(out, targets, (48, 48))
        empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
        background = model.loss(out, [empty], (48, 48))
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box"] > 0
    assert background["loss_box"].item() == 0.0
    # Without objects every window is background: plain mean cross-entropy against class 0.
    expected = F.cross_entropy(out["logits"][0], torch.zeros(out["logits"].shape[1]).long())
    torch.testing.assert_close(background["loss_cls"], expected)
    with pytest.raises(CnnzooError, match="2 targets for a batch of 1"):
        model.loss(out, [empty, empty], (48, 48))


def test_inference_classifies_every_window_in_chunks() -> None:
    model = _tiny(chunk_size=10_000).eval()
    x = torch.randn(2, 3, 40, 56)
    k = model.num_windows((40, 56))
    with torch.no_grad():
        whole = model(x)
        model.chunk_size = 7
        chunked = model(x)
    assert whole["logits"].shape == (2, k, 4) and whole["deltas"].shape == (2, k, 4)
    torch.testing.assert_close(whole["windows"], model.windows((40, 56)))
    torch.testing.assert_close(chunked["logits"], whole["logits"])
    torch.testing.assert_close(chunked["deltas"], whole["deltas"])
    # Window j of image 1 is the crop of that window alone.
    j = k // 3
    roi = torch.cat([torch.ones(1, 1), model.windows((40, 56))[j : j + 1]], 1)
    with torch.no_grad():
        logits, _ = model.classify(x, roi)
    torch.testing.assert_close(logits[0], whole["logits"][1, j])


def test_decoded_boxes_lie_inside_the_image_sorted_by_score() -> None:
    model = _tiny(num_classes=3).eval()
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


@pytest.mark.parametrize("k", [0, 2])
def test_a_classifier_forced_to_class_k_detects_class_k(k: int) -> None:
    model = _tiny(num_classes=3).eval()
    offset = torch.tensor([0.5, -0.5, 0.0, 0.0])
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[k + 1] = 10.0  # index 0 is background
        model.box_head.weight.zero_()
        model.box_head.bias.copy_(offset)
        out = model(torch.randn(1, 3, 48, 48))
    dets = model.decode(out, (48, 48), score_threshold=0.5)[0]
    assert dets["labels"].numel() > 0
    assert (dets["labels"] == k).all()
    assert (dets["scores"] > 0.99).all()
    # Every box is a window moved by the offsets: +5% of its width, -5% of its height.
    windows = model.windows((48, 48))
    wh = windows[:, 2:] - windows[:, :2]
    shift = torch.stack([0.05 * wh[:, 0], -0.05 * wh[:, 1]], -1)
    moved = (windows + shift.repeat(1, 2)).clamp(0, 48)
    distance = (dets["boxes"][:, None] - moved[None]).abs().amax(-1).min(1).values
    assert (distance < 1e-3).all()


def test_decode_refuses_training_outputs() -> None:
    model = _tiny()
    image, targets = _scene()
    out = model(image, targets)
    with pytest.raises(CnnzooError, match="all windows"):
        model.decode(out, (48, 48))
    with pytest.raises(CnnzooError, match="1 targets for a batch of 2"):
        model(torch.randn(2, 3, 48, 48), targets)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 0}, "num_classes must be >= 1, got 0"),
        ({"window_sizes": ()}, r"window_sizes .* got \(\)"),
        ({"window_sizes": (0.5, 0.0)}, r"window_sizes .* got \(0.5, 0.0\)"),
        ({"window_sizes": (1.5,)}, r"got \(1.5,\)"),
        ({"aspect_ratios": (1.0, -2.0)}, r"aspect_ratios .* got \(1.0, -2.0\)"),
        ({"aspect_ratios": ()}, r"aspect_ratios .* got \(\)"),
        ({"stride_fraction": 0.0}, "stride_fraction must be in .* got 0.0"),
        ({"crop_size": 0}, "crop_size must be a positive integer, got 0"),
        ({"windows_per_image": 0}, "windows_per_image must be a positive integer, got 0"),
        ({"chunk_size": -3}, "chunk_size must be a positive integer, got -3"),
        ({"positive_fraction": 1.5}, "positive_fraction must be in .* got 1.5"),
        ({"fg_iou": 0.2, "bg_iou": 0.4}, "bg_iou=0.4, fg_iou=0.2"),
    ],
)
def test_bad_arguments_raise_cnnzoo_error(kwargs, message) -> None:
    with pytest.raises(CnnzooError, match=message):
        SlidingWindowDetector(**{**TINY, **kwargs})


def test_bad_sizes_raise_cnnzoo_error() -> None:
    with pytest.raises(CnnzooError, match=r"image_size .* got \(0, 32\)"):
        sliding_windows((0, 32))
    with pytest.raises(CnnzooError, match="rois"):
        crop_windows(torch.zeros(1, 3, 8, 8), torch.zeros(2, 4), 4)
    with pytest.raises(CnnzooError, match="num_samples must be >= 1, got 0"):
        sample_windows(torch.zeros(1, 4), torch.zeros(0, 4), torch.zeros(0), (8, 8), 0)
