"""The modern recipe's training ingredients on hand-built cases: YOLOv3's multi-positive
assignment, IoU-family box losses on the decoded boxes (YOLOv3, SSD), and the EMA update."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torchvision.ops import complete_box_iou_loss

from cnnzoo import create_model
from cnnzoo.errors import CnnzooError
from cnnzoo.models.detection.coders import ssd_decode, ssd_encode
from cnnzoo.tasks.ema import ramped_decay, ramped_ema_fn

ANCHORS = [[4, 4], [6, 6], [8, 8], [10, 10], [12, 12], [14, 14], [16, 16], [20, 20], [24, 24]]
SIZE = 128


def _yolo(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("yolov3", num_classes=3, backbone="convnet", widths=[8, 16, 16],
                         neck_channels=8, anchors=ANCHORS, **kwargs)  # fmt: skip
    return model.eval()


def _grids(model: nn.Module) -> list[tuple[int, int]]:
    return [(SIZE // s, SIZE // s) for s in model.strides]


def _box(cx: float, cy: float, side: float) -> list[float]:
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def _positives(assigned: list[dict[str, torch.Tensor]]) -> set[tuple[int, int, int, int]]:
    """(scale, anchor slot, row, col) of every positive of image 0."""
    return {(k, *idx) for k, a in enumerate(assigned) for idx in a["pos"][0].nonzero().tolist()}


def test_the_paper_assigner_gives_one_anchor_at_one_cell() -> None:
    model = _yolo()
    s1 = model.strides[1]
    target = {"boxes": torch.tensor([_box(2.25 * s1, 2.75 * s1, 12)]), "labels": torch.tensor([1])}
    assigned = model.assign([target], _grids(model))
    assert _positives(assigned) == {(1, 1, 2, 2)}  # the 12x12 anchor, the centre's cell


def test_the_multi_assigner_adds_similar_anchors_and_the_two_nearest_neighbour_cells() -> None:
    model = _yolo(assigner="multi", assign_iou=0.5)
    s1, s2 = model.strides[1], model.strides[2]
    assert s2 == 2 * s1
    # A 12x12 truth whose centre lies in the lower-left quarter of cell (row 2, col 2) of
    # scale 1, i.e. the upper-left quarter of cell (1, 1) of scale 2. Shape IoU with the
    # anchors: 10 -> 0.69, 12 -> 1, 14 -> 0.73, 16 -> 0.56 (all > 0.5), 8 -> 0.44, 20 -> 0.36.
    target = {"boxes": torch.tensor([_box(2.25 * s1, 2.75 * s1, 12)]), "labels": torch.tensor([1])}
    assigned = model.assign([target], _grids(model))
    scale1 = {(1, slot, r, c) for slot in (0, 1, 2) for r, c in ((2, 2), (2, 1), (3, 2))}
    scale2 = {(2, 0, r, c) for r, c in ((1, 1), (1, 0), (0, 1))}
    assert _positives(assigned) == scale1 | scale2
    # Every positive learns the same box and class; the neighbours' offsets are clamped
    # into their cells.
    for k, slot, r, c in scale1 | scale2:
        assert assigned[k]["xyxy"][0, slot, r, c].tolist() == target["boxes"][0].tolist()
        assert assigned[k]["cls"][0, slot, r, c].tolist() == [0.0, 1.0, 0.0]
    offset = assigned[1]["box"][0, 1, 2, 1, :2]  # left neighbour: centre at x = 1.25 cells
    assert offset[0].item() == pytest.approx(1.0, abs=1e-5)


def test_a_truths_own_best_anchor_wins_over_another_truths_extra_claim() -> None:
    model = _yolo(assigner="multi", assign_iou=0.5)
    s1 = model.strides[1]
    big = _box(2.25 * s1, 2.5 * s1, 14)  # best anchor 14 (slot 2); extra: 12 at cell (2, 1)
    small = _box(1.5 * s1, 2.5 * s1, 12)  # best anchor 12 (slot 1) at cell (2, 1)
    target = {"boxes": torch.tensor([big, small]), "labels": torch.tensor([0, 2])}
    assigned = model.assign([target], _grids(model))
    assert assigned[1]["xyxy"][0, 1, 2, 1].tolist() == small
    assert assigned[1]["cls"][0, 1, 2, 1].argmax().item() == 2
    assert assigned[1]["xyxy"][0, 2, 2, 2].tolist() == big


def _perfect_outputs(
    model: nn.Module, targets: list[dict[str, torch.Tensor]]
) -> list[torch.Tensor]:
    """Raw outputs whose decoded boxes at the assigned anchors are exactly the truths."""
    outputs = [torch.zeros(1, 3, h, w, 5 + model.num_classes) for h, w in _grids(model)]
    for o, a in zip(outputs, model.assign(targets, _grids(model)), strict=True):
        pos = a["pos"]
        o[..., :2][pos] = torch.logit(a["box"][..., :2][pos])
        o[..., 2:4][pos] = a["box"][..., 2:4][pos]
    return outputs


def test_yolov3_iou_loss_is_zero_for_exact_boxes_and_ciou_of_the_decoded_box_otherwise() -> None:
    model = _yolo(box_loss="ciou")
    target = {"boxes": torch.tensor([_box(40.0, 52.0, 12)]), "labels": torch.tensor([0])}
    outputs = _perfect_outputs(model, [target])
    assert model.loss(outputs, [target], (SIZE, SIZE))["loss_box"].item() == pytest.approx(
        0, abs=1e-4
    )
    assigned = model.assign([target], _grids(model))
    (k,) = [k for k, a in enumerate(assigned) if a["pos"].any()]
    pos = assigned[k]["pos"]
    outputs[k][..., 0][pos] += 1.0  # move the centre right
    outputs[k][..., 3][pos] += 0.3  # and make the box taller
    decoded = model.decode_boxes(outputs[k], k)[pos]
    expected = complete_box_iou_loss(decoded, target["boxes"], reduction="sum")
    got = model.loss(outputs, [target], (SIZE, SIZE))["loss_box"]
    assert got.item() == pytest.approx(expected.item(), rel=1e-5) and got.item() > 0.05


def test_yolov3_paper_loss_is_unchanged_by_the_new_options() -> None:
    target = {"boxes": torch.tensor([_box(40.0, 52.0, 12)]), "labels": torch.tensor([0])}
    x = torch.randn(1, 3, SIZE, SIZE)
    paper, explicit = _yolo(), _yolo(box_loss="mse", assigner="best")
    with torch.no_grad():
        a = paper.loss(paper(x), [target], (SIZE, SIZE))
        b = explicit.loss(explicit(x), [target], (SIZE, SIZE))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_iou_objectness_target_is_the_decoded_boxs_iou_with_its_truth() -> None:
    target = {"boxes": torch.tensor([_box(40.0, 52.0, 12)]), "labels": torch.tensor([0])}
    paper, ours = _yolo(), _yolo(obj_target="iou")
    outputs = _perfect_outputs(ours, [target])
    assigned = ours.assign([target], _grids(ours))
    (k,) = [k for k, a in enumerate(assigned) if a["pos"].any()]
    pos = assigned[k]["pos"]
    outputs[k][..., 2][pos] += 0.5  # the box grows wider: IoU exp(-0.5) with the truth
    logit = 2.0
    for o in outputs:
        o[..., 4] = -20.0  # negatives (and ignored anchors) cost ~0
    outputs[k][..., 4][pos] = logit
    iou = math.exp(-0.5)
    expected = -(iou * math.log(torch.sigmoid(torch.tensor(logit)).item())
                 + (1 - iou) * math.log(1 - torch.sigmoid(torch.tensor(logit)).item()))  # fmt: skip
    got = ours.loss(outputs, [target], (SIZE, SIZE))["loss_obj"].item()
    assert got == pytest.approx(expected, rel=1e-3)
    paper_obj = paper.loss(outputs, [target], (SIZE, SIZE))["loss_obj"].item()
    expected_paper = -math.log(torch.sigmoid(torch.tensor(logit)).item())
    assert paper_obj == pytest.approx(expected_paper, rel=1e-3)
    assert abs(got - paper_obj) > 0.1


def test_ssd_iou_loss_is_zero_for_the_matched_offsets_and_ciou_for_others() -> None:
    torch.manual_seed(0)
    model = create_model("ssd", num_classes=2, backbone="convnet", widths=[8, 16, 16],
                         box_loss="ciou").eval()  # fmt: skip
    target = {"boxes": torch.tensor([[20.0, 24, 60, 70]]), "labels": torch.tensor([1])}
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, 96, 96))
    offsets, classes = model.targets(outputs["priors"], [target])
    outputs["deltas"] = offsets.clone()
    assert model.loss(outputs, [target], (96, 96))["loss_box"].item() == pytest.approx(0, abs=1e-5)
    positive = classes[0] > 0
    outputs["deltas"][0, positive, 0] += 2.0  # centres moved by 0.2 prior widths
    truth = target["boxes"].expand(int(positive.sum()), 4)
    priors = outputs["priors"][positive]
    assert torch.allclose(ssd_encode(truth, priors), offsets[0, positive], atol=1e-5)
    pred = ssd_decode(outputs["deltas"][0, positive], priors)
    expected = complete_box_iou_loss(pred, truth, reduction="sum") / positive.sum()
    got = model.loss(outputs, [target], (96, 96))["loss_box"]
    assert got.item() == pytest.approx(expected.item(), rel=1e-5) and got.item() > 0.01


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        ("yolov3", {"box_loss": "l2"}, "box_loss='l2' is unknown; expected one of mse, giou"),
        ("yolov3", {"assigner": "all"}, "assigner='all' is unknown"),
        ("yolov3", {"obj_target": "giou"}, "obj_target='giou' is unknown"),
        ("ssd", {"box_loss": "mse"}, "box_loss='mse' is unknown; expected one of smooth_l1"),
    ],
)
def test_unknown_loss_options_are_one_line_errors(model: str, kwargs, message: str) -> None:
    with pytest.raises(CnnzooError, match=message.replace("(", r"\(")):
        create_model(model, num_classes=2, backbone="convnet", widths=[8, 16, 16], **kwargs)


def test_the_ema_follows_the_ramped_decay_formula_and_differs_from_the_raw_weights() -> None:
    net = nn.Linear(2, 1, bias=False)
    ema = AveragedModel(net, multi_avg_fn=ramped_ema_fn(0.9, ramp=2.0), use_buffers=True)
    values = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -2.0]]), torch.tensor([[0.0, 4.0]])]
    expected = None
    for n, value in enumerate(values):
        with torch.no_grad():
            net.weight.copy_(value)
        ema.update_parameters(net)
        d = ramped_decay(0.9, n, 2.0)  # the n-th update averages n earlier ones
        expected = value.clone() if expected is None else d * expected + (1 - d) * value
    assert ramped_decay(0.9, 1, 2.0) == pytest.approx(0.9 * (1 - math.exp(-0.5)))
    assert torch.allclose(ema.module.weight, expected)
    assert not torch.allclose(ema.module.weight, net.weight)


def test_ema_decay_outside_zero_one_is_refused() -> None:
    with pytest.raises(CnnzooError, match="--ema-decay 1.0 is out of range"):
        ramped_ema_fn(1.0)
