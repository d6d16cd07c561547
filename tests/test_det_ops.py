"""cnnzoo's box operations are torchvision's (the oracle here), and a detector's inference
does not import torchvision's Python package (1.1 s of ``torch._dynamo``)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision.ops as tv

from cnnzoo.models.detection import ops


def _boxes(n: int, seed: int, scale: float = 90.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale
    wh = torch.rand(n, 2, generator=g) * scale / 3 + 0.5
    return torch.cat((xy, xy + wh), 1)


@pytest.mark.parametrize("seed", range(5))
def test_nms_and_batched_nms_keep_what_torchvision_keeps(seed):
    boxes = _boxes(300, seed)
    scores = torch.rand(300, generator=torch.Generator().manual_seed(seed + 100))
    groups = torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(seed + 200))
    for threshold in (0.3, 0.5, 0.7):
        assert torch.equal(ops.nms(boxes, scores, threshold), tv.nms(boxes, scores, threshold))
        mine = ops.batched_nms(boxes, scores, groups, threshold)
        theirs = tv.batched_nms(boxes, scores, groups, threshold)
        assert torch.equal(mine, theirs)
        # suppression happens within a group only: overlapping boxes of two groups survive
        assert len(mine) > len(ops.nms(boxes, scores, threshold))


def test_batched_nms_of_no_boxes_is_empty():
    kept = ops.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert kept.shape == (0,) and kept.dtype == torch.int64


@pytest.mark.parametrize("fmt_in", ["xyxy", "xywh", "cxcywh"])
@pytest.mark.parametrize("fmt_out", ["xyxy", "xywh", "cxcywh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_convert_is_torchvisions(fmt_in, fmt_out, dtype):
    boxes = _boxes(50, 3).to(dtype)
    mine = ops.box_convert(boxes, fmt_in, fmt_out)
    assert mine.dtype == dtype
    torch.testing.assert_close(mine, tv.box_convert(boxes, fmt_in, fmt_out))
    batched = _boxes(24, 4).view(2, 3, 4, 4)  # any leading shape
    torch.testing.assert_close(
        ops.box_convert(batched, fmt_in, fmt_out), tv.box_convert(batched, fmt_in, fmt_out)
    )


def test_box_convert_refuses_an_unknown_format():
    with pytest.raises(ValueError, match="xyxy"):
        ops.box_convert(_boxes(2, 0), "xyxy", "yxyx")


def test_remove_small_boxes_is_torchvisions():
    boxes = _boxes(200, 6, scale=12.0)
    for min_size in (0.5, 1.0, 2.0, 3.5):
        kept = ops.remove_small_boxes(boxes, min_size)
        assert torch.equal(kept, tv.remove_small_boxes(boxes, min_size))
        assert 0 < len(kept) < len(boxes) or min_size == 0.5


def test_clip_boxes_is_torchvisions():
    boxes = _boxes(80, 5, scale=140.0) - 20  # some outside a 96 x 120 image on every side
    clipped = ops.clip_boxes_to_image(boxes, (96, 120))
    assert torch.equal(clipped, tv.clip_boxes_to_image(boxes, (96, 120)))
    assert clipped[:, 0::2].max() <= 120 and clipped[:, 1::2].max() <= 96 and clipped.min() >= 0
    stacked = boxes.view(2, 40, 4)
    assert torch.equal(ops.clip_boxes_to_image(stacked, (96, 120)), clipped.view(2, 40, 4))


def test_a_detectors_inference_does_not_import_torchvision():
    code = (
        "import sys, torch, cnnzoo\n"
        "m = cnnzoo.create_model('yolov3', num_classes=3, in_channels=1, backbone='convnet',"
        " widths=[8, 16, 32]).eval()\n"
        "with torch.no_grad():\n"
        "    out = m.decode(m(torch.rand(1, 1, 64, 64)), (64, 64), 0.0, 0.5, 10)\n"
        "assert set(out[0]) >= {'boxes', 'scores', 'labels'} and len(out[0]['boxes']) > 0\n"
        "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("op", ["align", "pool"])
@pytest.mark.parametrize("as_list", [True, False])
def test_roi_ops_and_their_gradients_are_torchvisions(op, as_list):
    g = torch.Generator().manual_seed(0)
    features = torch.rand(2, 3, 12, 16, generator=g, dtype=torch.float64)
    per_image = [_boxes(5, 1, scale=40.0).double(), _boxes(3, 2, scale=40.0).double()]
    indexed = [
        torch.cat((torch.full((len(b), 1), float(i), dtype=b.dtype), b), 1)
        for i, b in enumerate(per_image)
    ]
    boxes = per_image if as_list else torch.cat(indexed)
    results = []
    for module in (ops, tv):
        x = features.clone().requires_grad_(True)
        if op == "align":
            out = module.roi_align(x, boxes, (4, 3), 0.25, 2, True)
        else:
            out = module.roi_pool(x, boxes, 4, 0.25)
        (out * torch.arange(out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results.append((out.detach(), x.grad))
    assert results[0][0].shape == (8, 3, 4, 3 if op == "align" else 4)
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    assert results[0][1].abs().sum() > 0
