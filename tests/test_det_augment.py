"""Mosaic, scale and colour jitter of detection batches: the boxes stay on their objects."""

from __future__ import annotations

import pytest
import torch

from cnnzoo.data.det_augment import MosaicAugment
from cnnzoo.errors import CnnzooError

COLOURS = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=torch.uint8)


def _painted_batch(n: int = 6, size: int = 64) -> tuple[torch.Tensor, list[dict]]:
    """Black images with one or two solid rectangles each; a rectangle's label is its colour."""
    gen = torch.Generator().manual_seed(1)
    images = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    targets = []
    for i in range(n):
        boxes, labels = [], []
        for j in range(1 + i % 2):
            w, h = torch.randint(12, 24, (2,), generator=gen).tolist()
            x = int(torch.randint(0, size - w, (), generator=gen)) if j == 0 else 0
            y = 0 if j == 0 else size - h  # the two never overlap
            label = (i + j) % len(COLOURS)
            images[i, :, y : y + h, x : x + w] = COLOURS[label][:, None, None]
            boxes.append([x, y, x + w, y + h])
            labels.append(label)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.tensor(labels)})  # fmt: skip
    return images, targets


def _geometry_only(**kwargs) -> MosaicAugment:
    return MosaicAugment(brightness=0, contrast=0, saturation=0, hue=0, **kwargs)


@pytest.mark.parametrize("mosaic", [0.0, 1.0])
def test_boxes_stay_on_the_pixels_of_their_objects(mosaic: float) -> None:
    images, targets = _painted_batch()
    gen = torch.Generator().manual_seed(0)
    out, out_targets = _geometry_only(mosaic=mosaic, min_size=1)(images, targets, gen)
    assert out.shape == images.shape and out.dtype == torch.uint8
    seen = 0
    for image, target in zip(out, out_targets, strict=True):
        covered = torch.zeros(image.shape[-2:], dtype=torch.bool)
        for box, label in zip(target["boxes"], target["labels"], strict=True):
            x1, y1, x2, y2 = box.tolist()
            inner = image[:, int(y1) + 2 : int(y2) - 1, int(x1) + 2 : int(x2) - 1].float()
            if inner.numel():
                colour = inner.mean((1, 2))
                assert torch.allclose(colour, COLOURS[label].float(), atol=12), (box, colour)
                seen += 1
            covered[max(0, int(y1) - 2) : int(y2) + 3, max(0, int(x1) - 2) : int(x2) + 3] = True
        # Outside every box (with a 2-pixel margin for interpolation) the image stays black,
        # but for slivers under a pixel wide whose boxes were dropped.
        coloured = (image.float().amax(0) > 40) & ~covered
        assert coloured.float().mean() < 0.01
    assert seen >= len(images)


def test_mosaic_brings_objects_of_other_images() -> None:
    images, targets = _painted_batch(n=8)
    gen = torch.Generator().manual_seed(3)
    _, out = _geometry_only(mosaic=1.0, scale=(0.5, 0.5))(images, targets, gen)  # zoomed out
    before = sum(len(t["boxes"]) for t in targets)
    after = sum(len(t["boxes"]) for t in out)
    assert after > 1.5 * before  # each image now shows parts of four


@pytest.mark.parametrize("zoom", [0.5, 2.0])
def test_scale_jitter_zooms_boxes_with_the_image(zoom: float) -> None:
    image = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    image[0, :, 26:38, 28:36] = 200  # an 8 x 12 object centred at (32, 32)
    target = {"boxes": torch.tensor([[28.0, 26, 36, 38]]), "labels": torch.tensor([0])}
    aug = _geometry_only(mosaic=0.0, scale=(zoom, zoom), translate=0.0)
    out, (result,) = aug(image, [target], torch.Generator().manual_seed(0))
    expected = [32 - 4 * zoom, 32 - 6 * zoom, 32 + 4 * zoom, 32 + 6 * zoom]
    assert result["boxes"][0].tolist() == pytest.approx(expected, abs=0.01)
    x1, y1, x2, y2 = (round(v) for v in expected)
    assert out[0, :, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].float().mean() == pytest.approx(200, abs=8)
    assert out[0, :, : y1 - 1].float().max() == 0 and out[0, :, y2 + 1 :].float().max() == 0


def test_colour_jitter_changes_pixels_but_not_boxes() -> None:
    images, targets = _painted_batch(n=4)
    aug = MosaicAugment(mosaic=0.0, scale=(1.0, 1.0), translate=0.0, brightness=0.5,
                        contrast=0.5, saturation=0.5, hue=0.1)  # fmt: skip
    out, out_targets = aug(images, targets, torch.Generator().manual_seed(0))
    assert not torch.equal(out, images)
    for a, b in zip(targets, out_targets, strict=True):
        assert torch.equal(a["boxes"], b["boxes"])


def test_the_same_generator_gives_the_same_batch() -> None:
    images, targets = _painted_batch()
    aug = MosaicAugment()
    a, ta = aug(images, targets, torch.Generator().manual_seed(5))
    b, tb = aug(images, targets, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(ta, tb, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"mosaic": 1.5}, "mosaic probability"), ({"scale": (1.5, 0.5)}, "scale range"),
     ({"hue": 0.7}, "colour jitter"), ({"translate": 0.6}, "translate")],
)  # fmt: skip
def test_bad_settings_are_refused(kwargs, message: str) -> None:
    with pytest.raises(CnnzooError, match=message):
        MosaicAugment(**kwargs)


def test_a_float_batch_is_refused() -> None:
    with pytest.raises(CnnzooError, match="uint8"):
        MosaicAugment()(torch.zeros(2, 3, 8, 8), [{}, {}])
