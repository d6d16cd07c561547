"""Training pieces shared by the GANs: the image pool, the adversarial and feature-matching
losses, freezing the discriminators for a generator step, and the translation-model contract.

* :class:`ImagePool`: Shrivastava et al., "Learning from Simulated and Unsupervised Images
  through Adversarial Training", CVPR 2017 (Sec. 2.3), as CycleGAN uses it (Sec. 4): the
  discriminators see a history of 50 generated images, not only the latest ones.
* :func:`lsgan_loss`: Mao et al., "Least Squares Generative Adversarial Networks", ICCV 2017:
  ``(D(x) - 1)^2`` for real, ``D(G(z))^2`` for fake (a = 0, b = c = 1).
* :func:`feature_matching_loss`: pix2pixHD Eq. 4, L1 between D's intermediate features of
  real and fake pairs.
* :class:`TranslationGAN`: the interface every translation model answers (generator and
  discriminator parameters and steps, ``translate``), so a training task never special-cases
  an architecture.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers.gan import DIRECTIONS, GAN_MODES


# -- image history -------------------------------------------------------------------------
class ImagePool:
    """A history of generated images for the discriminator updates (Shrivastava et al. 2017).

    :meth:`query` takes a batch of fresh fakes and returns a batch of the same size: while the
    pool holds fewer than ``size`` images, each fresh image is stored and returned; once full,
    each fresh image is, with probability 0.5, swapped for a random stored one (the stored
    one is returned, the fresh one takes its place), else returned as it is.

    Args:
        size: capacity (50 in CycleGAN); 0 disables the pool (query returns its input).
        generator: a seeded ``torch.Generator`` for reproducible draws (tests); default: the
            global RNG.

    Raises:
        CnnzooError: for a negative size.
    """

    def __init__(self, size: int = 50, generator: torch.Generator | None = None) -> None:
        if not isinstance(size, int) or size < 0:
            raise CnnzooError(f"size must be an integer >= 0, got {size!r}")
        self.size = size
        self.generator = generator
        self.images: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def _rand(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def query(self, images: Tensor) -> Tensor:
        """Return a batch like ``images`` (N, C, H, W) mixing fresh and stored images.

        The inputs are stored detached; the result carries no gradient.
        """
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif self._rand() < 0.5:
                i = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[i])
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)


# -- losses --------------------------------------------------------------------------------
def _as_list(pred: Tensor | Sequence[Tensor]) -> list[Tensor]:
    return [pred] if isinstance(pred, Tensor) else list(pred)


def lsgan_loss(pred: Tensor | Sequence[Tensor], target_is_real: bool) -> Tensor:
    """Least-squares GAN loss: mean of ``(pred - 1)^2`` (real) or ``pred^2`` (fake).

    Args:
        pred: a discriminator's logit map, or a list of them (one per scale): then the mean
            over the list.
        target_is_real: the target label (True for real images, and for the generator's
            loss on fakes).

    Returns:
        A scalar tensor.
    """
    target = 1.0 if target_is_real else 0.0
    preds = _as_list(pred)
    return sum(((p - target) ** 2).mean() for p in preds) / len(preds)


def bce_gan_loss(pred: Tensor | Sequence[Tensor], target_is_real: bool) -> Tensor:
    """The original GAN loss (Goodfellow et al. 2014) on logits: binary cross-entropy.

    The generator uses the non-saturating form (maximise log D(G(z))) by passing
    ``target_is_real=True``. Lists are averaged as in :func:`lsgan_loss`.

    Returns:
        A scalar tensor.
    """
    preds = _as_list(pred)
    total = sum(
        F.binary_cross_entropy_with_logits(p, torch.full_like(p, float(target_is_real)))
        for p in preds
    )
    return total / len(preds)


def gan_loss(pred: Tensor | Sequence[Tensor], target_is_real: bool, mode: str) -> Tensor:
    """Return :func:`lsgan_loss` (``mode="lsgan"``) or :func:`bce_gan_loss` (``"vanilla"``).

    Raises:
        CnnzooError: for an unknown ``mode``.
    """
    if mode == "lsgan":
        return lsgan_loss(pred, target_is_real)
    if mode == "vanilla":
        return bce_gan_loss(pred, target_is_real)
    raise CnnzooError(f"unknown gan_mode {mode!r}; expected one of {GAN_MODES}")


def feature_matching_loss(
    feats_fake: Sequence[Tensor] | Sequence[Sequence[Tensor]],
    feats_real: Sequence[Tensor] | Sequence[Sequence[Tensor]],
) -> Tensor:
    """pix2pixHD's feature-matching loss (Eq. 4): L1 between D's features of fake and real.

    Args:
        feats_fake: one list of feature maps per scale (or a single list for one scale),
            the discriminator's intermediate outputs for the generated input; pass them
            without the final logit map (``[f[:-1] for f in D(x)]``).
        feats_real: the same for the real input; detached here, so only the generator
            receives gradients.

    Returns:
        A scalar: mean absolute difference, averaged over layers, then over scales (the
        paper sums over layers with weights 1/N_i; averaging only rescales the weight).

    Raises:
        CnnzooError: if the two structures differ in length.
    """
    if feats_fake and isinstance(feats_fake[0], Tensor):
        feats_fake, feats_real = [feats_fake], [feats_real]  # type: ignore[list-item]
    if len(feats_fake) != len(feats_real) or any(
        len(f) != len(r) for f, r in zip(feats_fake, feats_real, strict=False)
    ):
        raise CnnzooError("feature_matching_loss needs the same scales and layers for both")
    per_scale = [
        sum(F.l1_loss(f, r.detach()) for f, r in zip(fs, rs, strict=True)) / len(fs)
        for fs, rs in zip(feats_fake, feats_real, strict=True)
        if len(fs)
    ]
    if not per_scale:
        raise CnnzooError("feature_matching_loss got no features")
    return sum(per_scale) / len(per_scale)


def kl_unit_gaussian(mu: Tensor) -> Tensor:
    """KL(N(mu, I) || N(0, I)) per latent entry, averaged: ``mean(mu^2) / 2``.

    UNIT's simplified VAE (Liu et al. 2017, Sec. 2): the encoder outputs only the mean, the
    variance is fixed to one, and the KL term reduces to ``||mu||^2 / 2`` up to a constant.

    Returns:
        A scalar tensor.
    """
    return mu.pow(2).mean() / 2


# -- the interface of translation models ----------------------------------------------------
@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Within the block, the modules' parameters need no gradient (restored afterwards).

    A generator step builds its graph inside this for the discriminators, so its backward
    pass leaves no gradients on them.
    """
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


class TranslationGAN(nn.Module):
    """Base class of cnnzoo's translation models: the contract a GAN training task relies on.

    A batch is a dict ``{"A": (N, C_A, H, W), "B": (N, C_B, H, W)}`` of images in [-1, 1].
    Subclasses implement the methods below; ``forward(x)`` is ``translate(x, "AB")``.

    * :meth:`generator_parameters`, :meth:`discriminator_parameters`: for two optimisers.
    * :meth:`generator_step` -> ``(losses, fakes)``: ``losses["loss"]`` is the total weighted
      generator loss and the other entries its weighted components (they sum to it);
      ``fakes`` the generated tensors the discriminator step needs.
    * :meth:`discriminator_step` -> losses, ``"loss"`` and its components; fakes are
      detached inside.
    * :meth:`translate`: ``direction`` in :attr:`directions`.
    """

    directions: tuple[str, ...] = DIRECTIONS
    in_channels: int
    out_channels: int

    def generator_parameters(self) -> list[nn.Parameter]:
        """Return the parameters the generator optimiser updates."""
        raise NotImplementedError

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Return the parameters the discriminator optimiser updates."""
        raise NotImplementedError

    def generator_step(
        self, batch: Mapping[str, Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Return ``(losses, fakes)`` for one generator update (see the class docstring)."""
        raise NotImplementedError

    def discriminator_step(
        self, batch: Mapping[str, Tensor], fakes: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Return the discriminator losses (``"loss"`` and components) for one update."""
        raise NotImplementedError

    def translate(self, x: Tensor, direction: str = "AB") -> Tensor:
        """Return ``x`` translated in ``direction``, images in [-1, 1]."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Return ``translate(x, "AB")``."""
        return self.translate(x, "AB")

    def check_direction(self, direction: str) -> str:
        """Return ``direction`` if this model translates that way.

        Raises:
            CnnzooError: otherwise, naming the directions it supports.
        """
        if direction not in self.directions:
            raise CnnzooError(
                f"{type(self).__name__} translates {' or '.join(map(repr, self.directions))}, "
                f"not {direction!r}"
            )
        return direction

    @staticmethod
    def images(batch: Mapping[str, Tensor], key: str, channels: int) -> Tensor:
        """Return ``batch[key]``, checked to be a (N, channels, H, W) floating tensor.

        Raises:
            CnnzooError: if the key is missing or the tensor has another shape or dtype.
        """
        if not isinstance(batch, Mapping) or key not in batch:
            raise CnnzooError(
                f"expected a dict with images under {key!r} (a translation batch holds 'A' "
                "and 'B'; a generator step's fakes hold what its discriminator step reads)"
            )
        x = batch[key]
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise CnnzooError(
                f"batch[{key!r}] must be images of shape (N, {channels}, H, W), got {shape}"
            )
        if not x.is_floating_point():
            raise CnnzooError(f"batch[{key!r}] must be floating point in [-1, 1], got {x.dtype}")
        return x
