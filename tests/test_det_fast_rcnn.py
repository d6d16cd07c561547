"""Fast R-CNN: registration, RoI pooling, RoI sampling, RPN anchor labelling, the proposal
sources (RPN, simplified selective search, given boxes), training, loss and decoding."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou

import cnnzoo
import cnnzoo.models.detection.fast_rcnn  # registers "fast_rcnn"
from cnnzoo.errors import CnnzooError
from cnnzoo.models.detection.fast_rcnn import FastRCNN, label_rois, pool_rois, sample_rois
from cnnzoo.models.detection.proposals import (
    anchor_shapes,
    grid_anchors,
    label_anchors,
    sample_balanced,
    selective_search,
)
from cnnzoo.registry import list_models, model_info

TINY = dict(backbone="convnet", widths=(8, 16, 16), head_channels=32, rpn_channels=16)


def _tiny(num_classes: int = 3, **kwargs) -> FastRCNN:
    torch.manual_seed(0)
    return cnnzoo.create_model("fast_rcnn", num_classes=num_classes, **{**TINY, **kwargs})


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        {"boxes": torch.tensor([[8.0, 10.0, 40.0, 44.0]]), "labels": torch.tensor([2])},
        {
            "boxes": torch.tensor([[30.0, 4.0, 60.0, 30.0], [2.0, 30.0, 28.0, 62.0]]),
            "labels": torch.tensor([0, 1]),
        },
    ]


def test_fast_rcnn_is_registered_for_detection() -> None:
    assert "fast_rcnn" in list_models("detection")
    info = model_info("fast_rcnn")
    assert info.task == "detection"
    assert info.paper.startswith("Girshick") and "Fast R-CNN" in info.paper
    assert info.input_size == (3, 96, 96)
    assert info.min_input_size == 32
    assert info.family == "rcnn"
    assert FastRCNN.uses_targets is True


def test_shared_map_is_the_stride_16_stage_or_the_deepest_below() -> None:
    assert _tiny().stride == 8.0  # convnet stages: strides 2, 4, 8
    assert _tiny(feature_stride=4).stride == 4.0
    assert _tiny(feature_stride=None).stride == 8.0
    model = _tiny(feature_stride=4)
    assert model.backbone.feature_info.channels() == [16]


@pytest.mark.parametrize("op", ["align", "pool"])
def test_roi_pooling_of_a_constant_region_gives_that_constant(op: str) -> None:
    features = torch.zeros(2, 4, 16, 16)
    features[1, :, 4:12, 4:12] = 3.0  # feature cells 4..11 = pixels 16..48 at stride 4
    rois = [torch.zeros(0, 4), torch.tensor([[20.0, 20.0, 44.0, 44.0], [0.0, 0.0, 12.0, 12.0]])]
    pooled = pool_rois(features, rois, 5, 4.0, op)
    assert pooled.shape == (2, 4, 5, 5)
    torch.testing.assert_close(pooled[0], torch.full((4, 5, 5), 3.0))
    torch.testing.assert_close(pooled[1], torch.zeros(4, 5, 5))
    with pytest.raises(CnnzooError, match="'bilinear'"):
        pool_rois(features, rois, 5, 4.0, "bilinear")


def test_roi_sampling_keeps_a_quarter_of_foreground_with_the_right_labels() -> None:
    torch.manual_seed(0)
    gt = torch.tensor([[10.0, 10.0, 40.0, 40.0]])
    near = gt + torch.randn(100, 4) * 2  # mostly IoU >= 0.5
    mid = torch.tensor([[10.0, 10.0, 40.0, 40.0]]) + torch.tensor([[20.0, 0, 20.0, 0]])  # 1/5
    far = torch.tensor([[60.0, 60.0, 90.0, 90.0]]).repeat(100, 1)  # IoU 0
    proposals = torch.cat([near, mid.repeat(100, 1), far])
    rois, classes, matched = sample_rois(proposals, gt, torch.tensor([4]), 64, 0.25)
    assert rois.shape == (64, 4) and classes.shape == (64,)
    iou = box_iou(rois, gt).flatten()
    fg = classes > 0
    assert fg.sum() == 16  # 25% of 64, enough candidates
    assert (iou[fg] >= 0.5).all() and (classes[fg] == 5).all()
    torch.testing.assert_close(matched[fg], gt.expand(16, 4))
    # Background from [0.1, 0.5) first: 100 such proposals, 48 needed, no zero-IoU ones.
    assert (iou[~fg] < 0.5).all() and (iou[~fg] >= 0.1).all()
    torch.testing.assert_close(matched[~fg], rois[~fg])


def test_roi_sampling_adds_the_ground_truth_and_tops_up_background() -> None:
    gt = torch.tensor([[10.0, 10.0, 40.0, 40.0], [50.0, 50.0, 60.0, 60.0]])
    far = torch.tensor([[70.0, 0.0, 90.0, 20.0]]).repeat(10, 1)
    rois, classes, _ = sample_rois(far, gt, torch.tensor([0, 2]), 64, 0.25)
    # Only the two added ground truths are foreground; 10 zero-IoU proposals fill in.
    assert sorted(classes[classes > 0].tolist()) == [1, 3]
    assert rois.shape[0] == 12 and (classes == 0).sum() == 10
    # No objects: all background, still sampled.
    rois, classes, _ = sample_rois(far, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 8)
    assert rois.shape[0] == 8 and (classes == 0).all()


def test_label_rois_without_sampling() -> None:
    gt = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    rois = torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 20.0, 30.0], [30.0, 30, 40, 40]])
    classes, matched = label_rois(rois, gt, torch.tensor([1]))
    assert classes.tolist() == [2, 2, 0]
    torch.testing.assert_close(matched[1], gt[0])


def test_rpn_anchor_labelling() -> None:
    gt = torch.tensor([[0.0, 0.0, 32.0, 32.0], [50.0, 50.0, 60.0, 60.0]])
    anchors = torch.tensor(
        [
            [0.0, 0.0, 32.0, 32.0],  # equals truth 0: positive
            [0.0, 0.0, 32.0, 40.0],  # IoU 0.8 with truth 0: positive
            [8.0, 8.0, 40.0, 40.0],  # IoU 0.39: ignored
            [70.0, 70.0, 90.0, 90.0],  # far from both: negative
            [45.0, 45.0, 65.0, 65.0],  # IoU 0.25 with truth 1, but its best: positive
        ]
    )
    labels, matched = label_anchors(anchors, gt)
    assert labels.tolist() == [1, 1, -1, 0, 1]
    assert matched[[0, 1, 4]].tolist() == [0, 0, 1]
    labels, _ = label_anchors(anchors, torch.zeros(0, 4))
    assert (labels == 0).all()


def test_every_truth_gets_a_positive_grid_anchor_and_sampling_is_balanced() -> None:
    anchors = grid_anchors((8, 8), 8.0, (64, 64), anchor_shapes((16, 32), (0.5, 1.0, 2.0)))
    assert anchors.shape == (8 * 8 * 6, 4)
    assert anchors.min() >= 0 and anchors.max() <= 64
    gt = torch.tensor([[3.0, 5.0, 9.0, 9.0], [10.0, 20.0, 60.0, 30.0], [0.0, 0.0, 64.0, 64.0]])
    labels, matched = label_anchors(anchors, gt)
    for g in range(3):
        assert ((labels == 1) & (matched == g)).any()
    torch.manual_seed(0)
    pos, neg = sample_balanced(labels, 16, 0.5)
    assert pos.numel() <= 8 and pos.numel() + neg.numel() == 16
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()


def _square_image(size: int = 64) -> torch.Tensor:
    image = torch.empty(3, size, size)
    image[:] = torch.tensor([0.2, 0.3, 0.8])[:, None, None]
    image[:, 18:45, 21:47] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    return image


def test_selective_search_finds_a_uniform_square() -> None:
    boxes = selective_search(_square_image(), cell_size=4)
    assert boxes.dim() == 2 and boxes.shape[1] == 4 and boxes.shape[0] > 10
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    assert box_iou(boxes, torch.tensor([[21.0, 18.0, 47.0, 45.0]])).max() >= 0.7
    assert boxes.unique(dim=0).shape[0] == boxes.shape[0]  # no duplicates
    # Deterministic, and capped.
    torch.testing.assert_close(selective_search(_square_image(), max_boxes=7), boxes[:7])


def test_selective_proposals_in_the_model() -> None:
    model = _tiny(proposals="selective", num_proposals=(50, 30)).eval()
    images = torch.stack([_square_image(), _square_image().flip(-1)])
    with torch.no_grad():
        out = model(images)
    assert out["num_regions"].tolist() == [30, 30]
    assert "rpn_logits" not in out
    for props in out["proposals"]:
        assert (props >= 0).all() and (props <= 64).all()
    losses = model.loss(out, _targets(), (64, 64))
    assert losses["loss_rpn_obj"] == 0 and losses["loss_rpn_box"] == 0
    assert torch.isfinite(losses["loss"]) and losses["loss_cls"] > 0


def test_given_proposals_are_used_verbatim() -> None:
    model = _tiny(proposals="given").eval()
    given = [
        torch.tensor([[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 60.0, 50.0], [0.0, 0.0, 9.0, 9.0]]),
        torch.tensor([[10.0, 10.0, 20.0, 20.0]]),
    ]
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64), proposals=given)
    for got, want in zip(out["proposals"], given, strict=True):
        assert torch.equal(got, want)
    for got, want in zip(out["rois"], given, strict=True):
        assert torch.equal(got, want)
    assert out["num_regions"].tolist() == [3, 1]
    assert out["logits"].shape == (4, 4) and out["deltas"].shape == (4, 3, 4)
    # From the targets in training.
    targets = [{**t, "proposals": p} for t, p in zip(_targets(), given, strict=True)]
    train_out = model.train()(torch.randn(2, 3, 64, 64), targets)
    assert torch.equal(train_out["proposals"][1], given[1])
    with pytest.raises(CnnzooError, match="proposals='given'"):
        model.eval()(torch.randn(2, 3, 64, 64))
    with pytest.raises(CnnzooError, match="proposals='given'"):
        model.train()(torch.randn(2, 3, 64, 64), _targets())
    with pytest.raises(CnnzooError, match="'rpn'"):
        _tiny()(torch.randn(2, 3, 64, 64), proposals=given)


@pytest.mark.parametrize("op", ["align", "pool"])
def test_training_outputs_sample_rois_and_losses_add_up(op: str) -> None:
    model = _tiny(cls_weight=2.0, box_weight=0.5, rpn_weight=3.0, rois_per_image=32, roi_op=op)
    out = model(torch.randn(2, 3, 64, 64), _targets())
    assert out["num_regions"].tolist() == [32, 32]
    fg = out["roi_classes"] > 0
    assert 3 <= fg.sum() <= 16  # the 3 truths at least, 25% of 32 per image at most
    assert out["rpn_logits"].shape == (2, 8 * 8 * 9)
    losses = model.loss(out, _targets(), (64, 64))
    assert set(losses) == {"loss", "loss_cls", "loss_box", "loss_rpn_obj", "loss_rpn_box"}
    assert all(torch.isfinite(v) for v in losses.values())
    parts = sum(v for k, v in losses.items() if k != "loss")
    torch.testing.assert_close(losses["loss"], parts)
    # Weighted: CE of 4 classes at init is about log(4), times 2; BCE about log(2), times 3.
    assert losses["loss_cls"].item() == pytest.approx(2 * math.log(4), rel=0.1)
    assert losses["loss_rpn_obj"].item() == pytest.approx(3 * math.log(2), rel=0.1)
    losses["loss"].backward()
    assert model.proposer.conv.weight.grad.abs().sum() > 0
    assert model.backbone.model.stages[0][0].conv.weight.grad.abs().sum() > 0


def test_eval_outputs_give_a_validation_loss() -> None:
    model = _tiny(num_proposals=(40, 20)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert "roi_classes" not in out
    assert (out["num_regions"] <= 20).all()
    assert out["num_regions"].tolist() == [p.shape[0] for p in out["proposals"]]
    losses = model.loss(out, _targets(), (64, 64))
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_rpn_obj"] > 0 and losses["loss_cls"] > 0


def test_few_steps_of_training_lower_the_loss() -> None:
    torch.manual_seed(3)
    image = torch.rand(1, 3, 64, 64) * 0.2
    image[:, 0, 10:40, 8:36] = 1.0
    image[:, 2, 36:60, 34:62] = 1.0
    targets = [
        {"boxes": torch.tensor([[8.0, 10.0, 36.0, 40.0], [34.0, 36.0, 62.0, 60.0]]),
         "labels": torch.tensor([0, 2])}
    ]  # fmt: skip
    model = _tiny()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for _ in range(30):
        loss = model.loss(model(image, targets), targets, (64, 64))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert all(math.isfinite(v) for v in history)
    assert sum(history[-3:]) / 3 < 0.6 * history[0]


def test_decode_of_hand_set_outputs() -> None:
    model = _tiny(num_classes=4, proposals="given").eval()
    rois = [torch.tensor([[10.0, 10.0, 30.0, 40.0], [0.0, 0.0, 64.0, 64.0]])]
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 64), proposals=rois)
    out["logits"] = torch.tensor([[0.0, 0, 0, 20.0, 0], [20.0, 0, 0, 0, 0]])  # class 2; bg
    out["deltas"] = torch.zeros(2, 4, 4)
    out["deltas"][0, 2] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # +0.1 width to the right
    dets = model.decode(out, (64, 64), score_threshold=0.5)
    assert dets[0]["labels"].tolist() == [2]
    assert dets[0]["scores"].item() > 0.99
    torch.testing.assert_close(dets[0]["boxes"][0], torch.tensor([12.0, 10.0, 32.0, 40.0]))


def test_decoded_boxes_lie_inside_the_image_sorted_with_valid_labels() -> None:
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


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_classes=0), "num_classes.*got 0"),
        (dict(proposals="edgeboxes"), "'edgeboxes'.*rpn, selective, given"),
        (dict(roi_op="warp"), "'warp'.*align, pool"),
        (dict(num_proposals=0), "num_proposals"),
        (dict(fg_fraction=1.5), "1.5"),
        (dict(bg_iou=(0.5, 0.1)), "bg_iou"),
        (dict(cls_weight=-1.0), "cls_weight=-1.0"),
    ],
)
def test_bad_arguments_raise(kwargs, match) -> None:
    with pytest.raises(CnnzooError, match=match):
        cnnzoo.create_model("fast_rcnn", **{**TINY, **kwargs})


def test_builder_class_checks_its_arguments_itself() -> None:
    with pytest.raises(CnnzooError, match="num_classes must be >= 1, got 0"):
        FastRCNN(num_classes=0, **TINY)


def test_wrong_number_of_targets_raises() -> None:
    model = _tiny()
    with pytest.raises(CnnzooError, match="1 targets for a batch of 2"):
        model(torch.randn(2, 3, 64, 64), _targets()[:1])
