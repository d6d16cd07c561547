"""Fréchet distance of generated images with cnnzoo's own Fashion-MNIST features.

FID (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", NeurIPS 2017) fits a Gaussian to the features of real and of generated
images and reports ``|mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))``. The paper's
features are Inception-v3's pool3 activations of ImageNet images; for 28x28 grey
Fashion-MNIST items cnnzoo uses a small classifier of its own registry trained on
Fashion-MNIST instead, so **the numbers are not comparable with Inception FIDs** and are
always reported under :data:`FID_NAME`.

The extractor is ``create_model("convnet", widths=[16, 32, 64], hidden=128, head_size=3)``
(147k parameters) trained on the 60,000 Fashion-MNIST training images by
``scripts/make_fid_extractor.py``; its weights ship with the package (fp16 safetensors in
``cnnzoo/data/bundled/``, with the test accuracy, seed and date in the metadata), so FID needs
no download. Features: the **128** activations (after ReLU) of its penultimate layer
``fc1``, fed by the 3x3 average-pooled last stage; dropout is off. The distance itself is
torchmetrics' :class:`~torchmetrics.image.fid.FrechetInceptionDistance` given this module as
``feature``.

FID is biased upwards for small sample counts: compare FIDs only at the same count, which is
reported with every FID (``test/fid_samples``, the number of real images and of generated
images each; default :data:`DEFAULT_FID_SAMPLES`). For scale, with the shipped weights: 2000
test vs 2000 *training* images (both real) give 0.48; the mini test set against itself
with Gaussian noise of sigma 0.05 / 0.15 / 0.4 gives about 11 / 66 / 111 (500 images).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError

if TYPE_CHECKING:
    import lightning as L

FID_NAME = "FID (cnnzoo-fmnist features)"
FID_FORMAT = "cnnzoo-fid-extractor-v1"
WEIGHTS_FILE = "fid-fmnist-convnet.safetensors"
DEFAULT_FID_SAMPLES = 2000
"""Real and generated images per FID at the end of ``cnnzoo train`` and in ``cnnzoo eval``
(each; fewer when the test split is smaller)."""
IMAGE_SIZE = 28
FMNIST_MEAN = 0.2860
FMNIST_STD = 0.3530
"""The normalisation the extractor was trained with (cnnzoo's Fashion-MNIST data module)."""

logger = logging.getLogger("cnnzoo")


class FIDFeatures(nn.Module):
    """A frozen classifier as FID feature extractor: images in, penultimate activations out.

    ``forward(images) -> (N, num_features)`` for images (N, 1, H, W), float in [0, 1] or
    uint8 in [0, 255]; other sizes than 28x28 are resized (bilinear, antialiased). It stays
    in eval mode (``train()`` is ignored) so that torchmetrics and Lightning cannot switch
    on dropout or batch-norm updates.

    Args:
        classifier: a cnnzoo classifier (``forward_features`` / ``forward_head``).
        num_features: the width of its penultimate layer.
        mean, std: the normalisation it was trained with.
    """

    def __init__(self, classifier: nn.Module, num_features: int, mean: float, std: float) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = num_features
        self.mean = mean
        self.std = std
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FIDFeatures:
        """Stay in eval mode whatever ``mode`` says (a frozen feature extractor)."""
        return super().train(False)

    def _normalized(self, images: Tensor) -> Tensor:
        x = as_fid_images(images).to(next(self.classifier.parameters()).dtype)
        return (x - self.mean) / self.std

    def forward(self, images: Tensor) -> Tensor:
        device = images.device.type if isinstance(images, Tensor) else "cpu"
        # full precision under a mixed-precision trainer: the FID must not depend on it
        with torch.autocast(device, enabled=False):
            features = self.classifier.forward_features(self._normalized(images))
            return self.classifier.forward_head(features, pre_logits=True)

    def logits(self, images: Tensor) -> Tensor:
        """Return the classifier's Fashion-MNIST logits (N, 10) of the same inputs."""
        return self.classifier(self._normalized(images))


def as_fid_images(images: Tensor) -> Tensor:
    """Return ``images`` as float (N, 1, 28, 28) in [0, 1], the extractor's input.

    uint8 images are divided by 255; 1-channel images of another size are resized.

    Raises:
        CnnzooError: for a tensor that is not (N, 1, H, W), or float values outside [0, 1]
            (e.g. a GAN's [-1, 1] output: map it with ``(x + 1) / 2`` first).
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise CnnzooError(
            f"{FID_NAME} takes grey images (N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}) in [0, 1] or "
            f"uint8, got {shape}"
        )
    if images.dtype == torch.uint8:
        x = images.float() / 255
    elif images.is_floating_point():
        x = images.float()
        if x.numel() and (float(x.min()) < -1e-3 or float(x.max()) > 1 + 1e-3):
            raise CnnzooError(
                f"{FID_NAME} takes images in [0, 1]; got values in "
                f"[{float(x.min()):.3f}, {float(x.max()):.3f}]"
            )
        x = x.clamp(0, 1)
    else:
        raise CnnzooError(f"{FID_NAME} takes float or uint8 images, got {images.dtype}")
    if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True)
    return x


@functools.lru_cache(maxsize=1)
def _bundled() -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    path = resources.files("cnnzoo.data").joinpath("bundled", WEIGHTS_FILE)
    with resources.as_file(path) as file:
        if not file.is_file():
            raise CnnzooError(
                f"the FID extractor's weights {file} are missing: reinstall cnnzoo, or make "
                "them with scripts/make_fid_extractor.py"
            )
        with safe_open(str(file), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    if metadata.get("format") != FID_FORMAT:
        raise CnnzooError(f"{file} is not a cnnzoo FID extractor (format {FID_FORMAT} expected)")
    return state, metadata


def extractor_metadata() -> dict[str, str]:
    """Return the shipped extractor's metadata (``test_accuracy``, ``seed``, ``kwargs``,
    ``date`` ...).

    Raises:
        CnnzooError: if the weights file is missing or not an extractor.
    """
    return dict(_bundled()[1])


def fid_extractor() -> FIDFeatures:
    """Return the shipped Fashion-MNIST feature extractor (float32, eval mode, frozen); no
    download. ``num_features`` is 128.

    Raises:
        CnnzooError: if the weights file is missing or not an extractor.
    """
    from cnnzoo.registry import create_model

    state, metadata = _bundled()
    kwargs = json.loads(metadata["kwargs"])
    classifier = create_model(
        metadata["model"], num_classes=int(metadata["num_classes"]), in_channels=1, **kwargs
    )
    classifier.load_state_dict({k: v.float() if v.is_floating_point() else v
                                for k, v in state.items()})  # fmt: skip
    num_features = classifier.get_classifier().in_features
    return FIDFeatures(classifier, num_features, float(metadata["mean"]), float(metadata["std"]))


def fid_metric(extractor: nn.Module | None = None) -> nn.Module:
    """Return a torchmetrics ``FrechetInceptionDistance`` on the cnnzoo features
    (``update(images, real=...)`` with images as :func:`as_fid_images` accepts them).

    Raises:
        CnnzooError: if the extractor's weights are missing.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=extractor or fid_extractor(), normalize=True)


def compute_fid(real: Tensor, fake: Tensor, batch_size: int = 500) -> float:
    """Return the FID (cnnzoo Fashion-MNIST features) between two sets of images.

    Args:
        real, fake: (N, 1, H, W) images in [0, 1] (or uint8), at least 2 each; 28x28 is
            the native size, others are resized.
        batch_size: images per forward pass of the extractor.

    Returns:
        :data:`FID_NAME` of the two sets (0 for identical sets; lower is closer).

    Raises:
        CnnzooError: for images of another shape or range, fewer than 2 images in a set, or
            missing extractor weights.
    """
    sets = {"real": as_fid_images(real), "fake": as_fid_images(fake)}
    for name, images in sets.items():
        if len(images) < 2:
            raise CnnzooError(f"FID needs at least 2 {name} images, got {len(images)}")
    if batch_size < 1:
        raise CnnzooError(f"batch_size must be a positive integer, got {batch_size}")
    metric = fid_metric()
    with torch.no_grad():
        for name, images in sets.items():
            is_real = name == "real"
            for start in range(0, len(images), batch_size):
                metric.update(images[start : start + batch_size], real=is_real)
        return float(metric.compute())


class TestFID:
    """FID in a Lightning test loop: real test images as they arrive, then as many
    generated ones, one synchronised torchmetrics state (so DDP ranks give the FID of all
    their images together).

    Args:
        samples: real (and generated) images in all (split over ``world_size`` ranks).
        device: where the extractor runs.
        world_size, rank: the process group's; each rank takes ``ceil(samples / world_size)``
            real images and seeds its generator with ``seed + rank``.
        seed: seed of the generated images' latent codes.
    """

    __test__ = False  # not a pytest class

    def __init__(
        self,
        samples: int,
        device: torch.device | str = "cpu",
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
    ) -> None:
        self.limit = math.ceil(samples / max(1, world_size))
        self.metric = fid_metric().to(device)
        self.real = 0
        self.labels: list[Tensor] = []
        self.seed = seed + rank

    def add_real(self, images: Tensor, labels: Tensor | None = None) -> None:
        """Add real images (in [0, 1] or uint8) up to this rank's share; their labels are
        kept for class-conditional generators."""
        take = min(len(images), self.limit - self.real)
        if take <= 0:
            return
        self.metric.update(images[:take], real=True)
        self.real += take
        if labels is not None:
            self.labels.append(labels[:take].detach().cpu())

    def compute(
        self,
        generate: Callable[[int, Tensor | None, torch.Generator], Tensor],
        batch_size: int = 500,
    ) -> float:
        """Generate as many images as real ones were added and return the FID.

        ``generate(n, labels or None, generator) -> (n, 1, H, W)`` images in [0, 1];
        ``labels`` are those of the real images (conditional models get the same classes).

        Raises:
            CnnzooError: when fewer than 2 real images were seen.
        """
        if self.real < 2:
            raise CnnzooError(f"FID needs at least 2 test images, got {self.real}")
        labels = torch.cat(self.labels) if self.labels else None
        gen = torch.Generator().manual_seed(self.seed)
        for start in range(0, self.real, batch_size):
            n = min(batch_size, self.real - start)
            part = None if labels is None else labels[start : start + n]
            self.metric.update(generate(n, part, gen).float(), real=False)
        return float(self.metric.compute())


def log_test_fid(
    module: L.LightningModule,
    fid: TestFID,
    generate: Callable[[int, Tensor | None, torch.Generator], Tensor],
) -> float:
    """Compute ``fid`` with ``generate`` (see :meth:`TestFID.compute`) and log it from
    ``module`` as ``test/fid``, with the number of real (= generated) images as
    ``test/fid_samples``.

    Returns:
        The FID.
    """
    value = fid.compute(generate)
    module.log("test/fid", value, sync_dist=True)
    module.log("test/fid_samples", float(fid.real), sync_dist=True, reduce_fx="sum")
    if module.global_rank == 0:
        logger.info("%s: %.3f (%d generated vs %d test images per process)", FID_NAME, value,
                    fid.real, fid.real)  # fmt: skip
    return value
