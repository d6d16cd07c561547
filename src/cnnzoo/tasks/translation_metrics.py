"""Test metrics of image-to-image translation: how close the translations come to the true
targets (paired data) or to the target domain (unpaired data).

**Paired** data (pix2pix, pix2pixHD; ``paired:PATH``, ``fmnist-edges``): every A has its true
B, so each A -> B translation is compared with it, pixel by pixel, on [0, 1] images (the
generator's [-1, 1] output mapped by ``(x + 1) / 2`` and clamped, the target's uint8 divided by
255 — the conventions of :mod:`cnnzoo.tasks.reconstruction`, so the numbers are comparable):

- ``l1``: mean absolute error over all pixels and channels (torchmetrics'
  ``MeanAbsoluteError``);
- ``psnr``: ``10 log10(1 / MSE)`` dB with the MSE pooled over all test pixels (torchmetrics'
  ``PeakSignalNoiseRatio(data_range=1.0)``, as the reconstruction task);
- ``ssim``: the mean SSIM per image (torchmetrics' ``StructuralSimilarityIndexMeasure
  (data_range=1.0)``: 11x11 Gaussian window, sigma 1.5; colour images over their channels).

**Unpaired** data (CycleGAN, UNIT; ``unpaired:PATH``, ``fmnist-invert``, ``fmnist-shoes``):
nothing says what the translation of an A should be, only which domain it should look like,
so the translations are scored as a set against the real images of the target domain:

- ``fid_ab``: :data:`~cnnzoo.tasks.fid.FID_NAME` of the A -> B translations against real B
  images, ``fid_ba`` of the B -> A translations against real A images (one-way models:
  ``fid_ab`` only); ``fid_samples``: the images of each set. Colour images are turned grey by
  :func:`grey` (ITU-R BT.601 luma) first, since the features come from a 1-channel
  Fashion-MNIST classifier; other sizes than 28x28 are resized by
  :func:`~cnnzoo.tasks.fid.as_fid_images`;
- ``target_class_ab`` / ``target_class_ba`` (only when each domain is one Fashion-MNIST class,
  e.g. ``fmnist-shoes``): the share of translations that the FID extractor's own classifier
  head (its argmax over the 10 Fashion-MNIST classes) assigns to the target domain's class —
  the "FCN-score" idea of Isola et al., "Image-to-Image Translation with Conditional
  Adversarial Networks", CVPR 2017 (Sec. 4.1): a translation is good if an off-the-shelf
  recogniser sees the target class in it. The shipped extractor recognises real
  test sneakers and ankle boots at about 97 % and 95 %, the ceiling of this score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from cnnzoo.errors import CnnzooError
from cnnzoo.tasks.fid import fid_extractor, fid_metric
from cnnzoo.tasks.reconstruction import to_unit

LUMA_601 = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights of R, G, B: how colour images are made grey for the FID."""

Translate = Callable[[Tensor, str], Tensor]
"""``translate(source batch as loaded, "AB" or "BA") -> translations in [0, 1]``."""


def grey(images: Tensor) -> Tensor:
    """Return images (N, C, H, W) as 1 channel: grey images unchanged, RGB as ITU-R BT.601
    luma ``0.299 R + 0.587 G + 0.114 B`` (uint8 stays uint8, rounded).

    Raises:
        CnnzooError: for a tensor that is not (N, 1 or 3, H, W).
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise CnnzooError(
            f"expected grey or RGB images (N, 1 or 3, H, W), got {tuple(images.shape)}"
        )
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(LUMA_601, device=images.device).view(1, 3, 1, 1)
    y = (images.float() * weights).sum(1, keepdim=True)
    return y.round().clamp(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else y


class PairedTranslationScores:
    """``l1``, ``psnr`` and ``ssim`` of A -> B translations against their true B, over all
    the batches given (see the module docstring). The torchmetrics states synchronise over
    DDP ranks in :meth:`compute`.

    Args:
        device: where the metrics' states live.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.metrics = {
            "l1": MeanAbsoluteError().to(device),
            "psnr": PeakSignalNoiseRatio(data_range=1.0).to(device),
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0).to(device),
        }
        self.seen = 0

    def add(self, batch: Mapping[str, Tensor], translate: Translate) -> None:
        """Translate a test batch ``{"A", "B"}`` and score the translations against its B."""
        self.update(translate(batch["A"], "AB"), batch["B"])

    def update(self, fake: Tensor, real: Tensor) -> None:
        """Score translations ``fake`` (floats in [0, 1]) against targets ``real`` (uint8 or
        [0, 1]) of the same shape.

        Raises:
            CnnzooError: for tensors of different shapes.
        """
        if fake.shape != real.shape:
            raise CnnzooError(
                f"translations {tuple(fake.shape)} and targets {tuple(real.shape)} differ in shape"
            )
        fake, real = fake.float().clamp(0, 1), to_unit(real).float()
        self.seen += len(fake)
        for metric in self.metrics.values():
            metric.update(fake, real)

    def compute(self) -> dict[str, float]:
        """Return ``{"l1", "psnr", "ssim"}`` of everything added (all ranks).

        Raises:
            CnnzooError: when nothing was added.
        """
        if not self.seen:
            raise CnnzooError("no test images were translated: the test split is empty")
        return {name: float(metric.compute()) for name, metric in self.metrics.items()}


class UnpairedTranslationScores:
    """``fid_ab``, ``fid_ba`` (and the target-class shares) of the translations of the first
    ``samples`` test items of each domain (see the module docstring).

    Colour (RGB) images, real and translated, enter the FID and the classifier as their
    ITU-R BT.601 luma (:func:`grey`); sizes other than 28x28 are resized (bilinear,
    antialiased) by :func:`~cnnzoo.tasks.fid.as_fid_images`. Items past the limit are not
    translated. Each DDP rank takes ``ceil(samples / world_size)`` items; the FID and
    class-share states are synchronised in :meth:`compute`.

    Args:
        samples: A and B images per FID (all ranks); at most the smaller domain's test
            images, so that no image counts twice (an unpaired test split repeats the
            smaller domain).
        device: where the extractor runs.
        world_size: the number of DDP processes.
        directions: the directions the model translates (``("AB",)`` for one-way models).
        classes: the Fashion-MNIST classes of the A and of the B domain: adds
            ``target_class_ab`` and ``target_class_ba``; None: no class shares.

    Raises:
        CnnzooError: if the extractor's weights are missing, or for ``samples < 2``.
    """

    def __init__(
        self,
        samples: int,
        device: torch.device | str = "cpu",
        world_size: int = 1,
        directions: tuple[str, ...] = ("AB", "BA"),
        classes: tuple[int, int] | None = None,
    ) -> None:
        if samples < 2:
            raise CnnzooError(f"FID needs at least 2 images per domain, got samples={samples}")
        self.limit = math.ceil(samples / max(1, world_size))
        self.seen = 0
        self.directions = tuple(d for d in ("AB", "BA") if d in directions)
        self.extractor = fid_extractor().to(device)
        self.fid = {d: fid_metric(self.extractor).to(device) for d in self.directions}
        self.targets = None if classes is None else {"AB": classes[1], "BA": classes[0]}
        self.shares = {d: MeanMetric().to(device) for d in self.directions}

    def add(self, batch: Mapping[str, Tensor], translate: Translate) -> None:
        """Translate this rank's share of a test batch ``{"A", "B"}`` both ways and add the
        real images and the translations."""
        take = min(len(batch["A"]), self.limit - self.seen)
        if take <= 0:
            return
        a, b = batch["A"][:take], batch["B"][:take]
        fakes = {d: translate(a if d == "AB" else b, d) for d in self.directions}
        self.update(a, b, fakes.get("AB"), fakes.get("BA"))

    def update(
        self, real_a: Tensor, real_b: Tensor, fake_ab: Tensor | None, fake_ba: Tensor | None
    ) -> None:
        """Add real A and B images (uint8 or [0, 1]) and their translations ([0, 1]; None
        for a direction the model lacks), 1 or 3 channels, any size."""
        self.seen += len(real_a)
        for direction, real, fake in (("AB", real_b, fake_ab), ("BA", real_a, fake_ba)):
            if direction not in self.fid or fake is None:
                continue
            fake = grey(fake.float().clamp(0, 1))
            self.fid[direction].update(grey(real), real=True)
            self.fid[direction].update(fake, real=False)
            if self.targets is not None:
                predicted = self.extractor.logits(fake).argmax(1)
                self.shares[direction].update((predicted == self.targets[direction]).float())

    def compute(self) -> dict[str, float]:
        """Return ``{"fid_ab", "fid_ba", "fid_samples"}`` (``fid_samples``: this rank's
        count) and, with ``classes``, ``"target_class_ab"``, ``"target_class_ba"``; a
        one-way model has no ``*_ba``.

        Raises:
            CnnzooError: when fewer than 2 images per domain were added.
        """
        if self.seen < 2:
            raise CnnzooError(f"FID needs at least 2 test images per domain, got {self.seen}")
        out: dict[str, float] = {}
        for direction in self.directions:
            key = direction.lower()
            out[f"fid_{key}"] = float(self.fid[direction].compute())
            if self.targets is not None:
                out[f"target_class_{key}"] = float(self.shares[direction].compute())
        out["fid_samples"] = float(self.seen)
        return out
