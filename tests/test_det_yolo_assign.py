"""YOLOv3's batched target assignment and ignore rule (models/detection/yolo_assign.py)
against a plain per-truth loop that states the rules one claim at a time."""

from __future__ import annotations

import pytest
import torch

import cnnzoo.models  # noqa: F401  (registers yolov3)
from cnnzoo.models.detection.anchors import anchor_iou
from cnnzoo.models.detection.coders import yolo_encode
from cnnzoo.models.detection.ops import box_iou
from cnnzoo.models.detection.postprocess import valid_boxes
from cnnzoo.models.detection.yolo_assign import ignore_mask
from cnnzoo.registry import create_model

TINY = {"backbone": "convnet", "widths": (8, 16, 32)}


def _loop_assign(model, targets, grid_sizes):
    """The rules, one claim at a time: each truth claims its best-shape anchor at its centre's
    cell (``multi``: also every anchor above ``assign_iou``, and for each chosen anchor the
    horizontal and vertical neighbour on the centre's side); claims are written extra ones
    first, then own-best ones, smaller truths before larger, so the last write wins."""
    a, c, anchors = model.num_anchors, model.num_classes, model.anchors
    out = [
        {
            "pos": torch.zeros(len(targets), a, h, w, dtype=torch.bool),
            "box": torch.zeros(len(targets), a, h, w, 4),
            "xyxy": torch.zeros(len(targets), a, h, w, 4),
            "cls": torch.zeros(len(targets), a, h, w, c),
        }
        for h, w in grid_sizes
    ]
    multi = model.assigner == "multi"
    for i, target in enumerate(targets):
        boxes, labels = valid_boxes(target, torch.device("cpu"))
        wh = boxes[:, 2:] - boxes[:, :2]
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        shape_iou = anchor_iou(wh, anchors)
        claims = []
        for j in range(len(boxes)):
            best = int(shape_iou[j].argmax())
            chosen = [best]
            if multi:
                chosen += [q for q in (shape_iou[j] > model.assign_iou).nonzero().flatten().tolist()
                           if q != best]  # fmt: skip
            for q in chosen:
                k = q // a
                h, w = grid_sizes[k]
                g = centre[j] / model.strides[k]
                col, row = min(max(int(g[0]), 0), w - 1), min(max(int(g[1]), 0), h - 1)
                area = float(wh[j, 0] * wh[j, 1])
                claims.append((int(q != best), area, j, q, row, col))
                if multi:
                    dx = -1 if float(g[0]) - col < 0.5 else 1
                    dy = -1 if float(g[1]) - row < 0.5 else 1
                    if 0 <= col + dx < w:
                        claims.append((1, area, j, q, row, col + dx))
                    if 0 <= row + dy < h:
                        claims.append((1, area, j, q, row + dy, col))
        for _, _, j, q, row, col in sorted(claims, key=lambda t: (-t[0], t[1])):
            k, slot = divmod(q, a)
            cell = torch.tensor([col, row], dtype=torch.float32)
            out[k]["pos"][i, slot, row, col] = True
            out[k]["box"][i, slot, row, col] = yolo_encode(
                boxes[j], cell, anchors[q], model.strides[k]
            )
            out[k]["xyxy"][i, slot, row, col] = boxes[j]
            out[k]["cls"][i, slot, row, col] = 0.0
            out[k]["cls"][i, slot, row, col, int(labels[j])] = 1.0
    return out


def _scene_targets(gen: torch.Generator, images: int, size: int, crowded: bool):
    targets = []
    for _ in range(images):
        n = int(torch.randint(0, 9, (1,), generator=gen))
        xy = torch.rand(n, 2, generator=gen) * size - (8 if crowded else 0)
        wh = 2 + torch.rand(n, 2, generator=gen) * (size / 2)
        boxes = torch.cat([xy, xy + wh], 1)
        if crowded and n > 1:  # duplicates and same-centre boxes: several truths per slot
            boxes[1] = boxes[0]
            boxes[-1, 2:] = boxes[-1, :2] + (boxes[0, 2:] - boxes[0, :2]) * 0.9
        if n:
            boxes[0, 2] = boxes[0, 0]  # an empty box: not a truth
        targets.append({"boxes": boxes, "labels": torch.randint(0, 3, (n,), generator=gen)})
    return targets


@pytest.mark.parametrize("assigner", ["best", "multi"])
@pytest.mark.parametrize("extra", [(), (24, 24)])
@pytest.mark.parametrize("seed", range(4))
def test_batched_assignment_is_the_per_claim_rule(assigner, extra, seed):
    model = create_model("yolov3", num_classes=3, assigner=assigner, assign_iou=0.3,
                         extra_channels=extra, **TINY)  # fmt: skip
    size = 64
    grids = [(size // s, size // s) for s in model.strides]
    gen = torch.Generator().manual_seed(seed)
    targets = _scene_targets(gen, 6, size, crowded=seed % 2 == 1)
    got = model.assign(targets, grids)
    want = _loop_assign(model, targets, grids)
    assert sum(int(w["pos"].sum()) for w in want) > 0
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g["pos"], w["pos"])
        assert torch.equal(g["cls"], w["cls"]) and torch.equal(g["xyxy"], w["xyxy"])
        torch.testing.assert_close(g["box"], w["box"], rtol=0, atol=1e-6)


def test_assignment_of_a_batch_without_truths_is_all_negative():
    model = create_model("yolov3", num_classes=3, assigner="multi", **TINY)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    out = model.assign([empty, empty], [(32, 32), (16, 16), (8, 8)])
    assert [tuple(o["pos"].shape) for o in out] == [(2, 3, n, n) for n in (32, 16, 8)]
    assert not any(bool(o["pos"].any()) for o in out)


@pytest.mark.parametrize("seed", range(3))
def test_ignore_mask_is_the_best_iou_per_image(seed):
    gen = torch.Generator().manual_seed(seed)
    targets = _scene_targets(gen, 5, 64, crowded=True)
    xy = torch.rand(5, 3, 4, 4, 2, generator=gen) * 60
    pred = torch.cat([xy, xy + 4 + torch.rand(5, 3, 4, 4, 2, generator=gen) * 30], -1)
    mask = ignore_mask(pred, targets, 0.3)
    assert mask.shape == (5, 3, 4, 4)
    for i, t in enumerate(targets):
        truth = valid_boxes(t, torch.device("cpu"))[0]
        want = (
            box_iou(pred[i].reshape(-1, 4), truth).amax(1) > 0.3
            if len(truth)
            else torch.zeros(48, dtype=torch.bool)
        )
        assert torch.equal(mask[i].reshape(-1), want)
    assert bool(mask.any()) and not bool(mask.all())
