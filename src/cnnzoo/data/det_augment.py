"""Strong detection augmentation on whole batches: mosaic, scale jitter, colour jitter.

The modern recipe's augmentation (``--det-augment mosaic``), after YOLOv4/v5 (Bochkovskiy
et al. 2020, "mosaic": four training images in one, so every image shows objects at more
scales and in more contexts than it has) — written on ``torchvision.transforms.v2``'s
functional ops with ``tv_tensors.BoundingBoxes``, so the boxes follow every crop and resize
of the pixels. It runs on the uint8 batch after the transfer to the device (as the
classifiers' :class:`~cnnzoo.data.transforms.BatchAugment`), so a cached dataset still needs
no decoding and no per-sample transform beyond today's resize and flip.

For each image ``i`` of a batch of ``N``:

1. with probability ``mosaic``, a ``2H x 2W`` canvas holds image ``i`` and three other
   images of the batch (drawn at random) as its quadrants, their boxes shifted with them;
   otherwise the canvas is image ``i`` alone;
2. scale jitter: a window of ``(H / r, W / r)``, ``r`` uniform in ``scale``, centred at a
   random point of the canvas's middle (the centre half of a mosaic, so every quadrant can
   contribute; within ``translate`` of the centre of a single image) is cropped —
   zero-padded where it leaves the canvas — and resized to ``H x W``: ``r < 1`` zooms out,
   ``r > 1`` in;
3. boxes are clipped to the image and those under ``min_size`` pixels dropped (with their
   labels and any other per-box field);
4. colour jitter: brightness, contrast (and for 3 channels saturation and hue) by random
   factors in ``1 +- brightness`` ..., per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from cnnzoo.errors import CnnzooError

DetTargets = list[dict[str, Tensor]]


def _per_box(value: object, count: int) -> bool:
    """Whether a target entry has one row per box (labels, ``difficult``)."""
    return isinstance(value, Tensor) and value.ndim >= 1 and len(value) == count


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


@dataclass
class MosaicAugment:
    """Mosaic + scale jitter + colour jitter of a uint8 detection batch (see the module).

    Args:
        mosaic: probability that an image becomes a mosaic of four.
        scale: range of the zoom factor ``r``.
        brightness, contrast, saturation, hue: colour jitter strengths (0: off); hue is a
            fraction of the colour circle.
        translate: a single image's crop centre moves by up to this fraction of its side.
        min_size: boxes narrower or lower than this many pixels after the crop are dropped
            (with them, slivers of objects cut by the crop).

    Raises:
        CnnzooError: for a probability outside [0, 1], a scale range not ``0 < lo <= hi``,
            or negative jitter.
    """

    mosaic: float = 0.5
    scale: tuple[float, float] = (0.5, 1.5)
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.5
    hue: float = 0.015
    translate: float = 0.1
    min_size: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.mosaic <= 1:
            raise CnnzooError(f"mosaic probability must be in [0, 1], got {self.mosaic}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise CnnzooError(f"scale range must be 0 < lo <= hi, got {tuple(self.scale)}")
        jitter = (self.brightness, self.contrast, self.saturation, self.hue)
        if min(jitter) < 0 or self.hue > 0.5:
            raise CnnzooError(f"colour jitter must be >= 0 (hue <= 0.5), got {jitter}")
        if not 0 <= self.translate <= 0.5:
            raise CnnzooError(f"translate must be in [0, 0.5], got {self.translate}")

    def __call__(
        self, images: Tensor, targets: Sequence[dict[str, Tensor]],
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, DetTargets]:  # fmt: skip
        """Return the augmented ``(images uint8 (N, C, H, W), targets)``.

        Raises:
            CnnzooError: for images that are not a uint8 ``(N, C, H, W)`` batch or a target
                count that differs from N.
        """
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise CnnzooError(
                f"images must be a uint8 (N, C, H, W) batch, got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        if len(targets) != len(images):
            raise CnnzooError(f"{len(images)} images but {len(targets)} targets")
        out_images, out_targets = [], []
        for i in range(len(images)):
            canvas, target = self._canvas(images, targets, i, generator)
            image, target = self._crop(canvas, target, images.shape[-2:], generator)
            out_images.append(self._colour(image, generator))
            out_targets.append(target)
        return torch.stack(out_images), out_targets

    def _canvas(
        self, images: Tensor, targets: Sequence[dict[str, Tensor]], i: int,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, dict[str, Tensor]]:  # fmt: skip
        n, _, h, w = images.shape
        if n < 2 or float(torch.rand((), generator=generator)) >= self.mosaic:
            return images[i], dict(targets[i])
        others = torch.randint(n, (3,), generator=generator, device="cpu").tolist()
        tiles = [i, *others]
        canvas = torch.cat(
            [torch.cat([images[tiles[0]], images[tiles[1]]], -1),
             torch.cat([images[tiles[2]], images[tiles[3]]], -1)], -2,
        )  # fmt: skip
        shifts = ((0, 0), (w, 0), (0, h), (w, h))
        merged: dict[str, list[Tensor]] = {}
        for t, (dx, dy) in zip(tiles, shifts, strict=True):
            target = targets[t]
            count = len(target["boxes"])
            for key, value in target.items():
                if key == "boxes":
                    shift = torch.tensor([dx, dy, dx, dy], dtype=value.dtype, device=value.device)
                    merged.setdefault(key, []).append(value + shift)
                elif _per_box(value, count):
                    merged.setdefault(key, []).append(value)
        return canvas, {k: torch.cat(v) for k, v in merged.items()}

    def _crop(
        self, canvas: Tensor, target: dict[str, Tensor], size: Sequence[int],
        generator: torch.Generator | None,
    ) -> tuple[Tensor, dict[str, Tensor]]:  # fmt: skip
        h, w = int(size[0]), int(size[1])
        ch, cw = canvas.shape[-2:]
        mosaic = ch > h
        r = _uniform(*self.scale, generator)
        win_h, win_w = max(1, round(h / r)), max(1, round(w / r))
        spread = 0.25 if mosaic else self.translate  # the centre's range, share of the side
        cy = _uniform(ch * (0.5 - spread), ch * (0.5 + spread), generator)
        cx = _uniform(cw * (0.5 - spread), cw * (0.5 + spread), generator)
        top, left = round(cy - win_h / 2), round(cx - win_w / 2)
        boxes = tv_tensors.BoundingBoxes(
            target["boxes"].float(), format="XYXY", canvas_size=(int(ch), int(cw))
        )
        image = TF.resized_crop(tv_tensors.Image(canvas), top, left, win_h, win_w, [h, w],
                                antialias=True)  # fmt: skip
        boxes = TF.clamp_bounding_boxes(TF.resized_crop(boxes, top, left, win_h, win_w, [h, w]))
        _, valid = TF.sanitize_bounding_boxes(boxes, min_size=self.min_size)
        n = len(target["boxes"])
        out = {k: v[valid] if _per_box(v, n) else v for k, v in target.items()}
        out["boxes"] = boxes.as_subclass(Tensor)[valid].float()
        return image.as_subclass(Tensor), out

    def _colour(self, image: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.brightness:
            b = self.brightness
            image = TF.adjust_brightness(image, _uniform(1 - b, 1 + b, generator))
        if self.contrast:
            c = self.contrast
            image = TF.adjust_contrast(image, _uniform(1 - c, 1 + c, generator))
        if image.shape[0] == 3 and self.saturation:
            s = self.saturation
            image = TF.adjust_saturation(image, _uniform(1 - s, 1 + s, generator))
        if image.shape[0] == 3 and self.hue:
            image = TF.adjust_hue(image, _uniform(-self.hue, self.hue, generator))
        return image


__all__ = ["MosaicAugment"]
