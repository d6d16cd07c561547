"""DCGAN: a generator and a discriminator made of (transposed) strided convolutions.

Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014, the lecture's game
``min_G max_D E_x[log D(x)] + E_z[log(1 - D(G(z)))]``; Radford, Metz & Chintala,
"Unsupervised Representation Learning with Deep Convolutional Generative Adversarial
Networks", ICLR 2016, for the architecture (sec. 3, "architecture guidelines", and Fig. 1):

* Generator: ``z`` is projected by a matrix multiplication and reshaped to a small map (4x4,
  or 7x7 for 28x28 images), then each 4x4 stride-2 transposed convolution ("fractionally
  strided") doubles the size while halving the channels (Fig. 1: 4x4x1024 -> 8x8x512 ->
  16x16x256 -> 32x32x128 -> 64x64x3, i.e. ``ngf = 128``). BN and ReLU everywhere except the
  output, which is ``tanh``: images in [-1, 1].
* Discriminator: the mirror image; 4x4 stride-2 convolutions (no pooling), LeakyReLU with
  slope 0.2, BN on every layer but the first; the last map is flattened into one logit (a
  convolution covering the whole final map, which is that flatten + linear).
* Initialisation (sec. 4): weights N(0, 0.02); BN scales N(1, 0.02), shifts 0.
* Losses: the discriminator minimises the binary cross-entropy of real (target 1) and fake
  (target 0) images; the generator uses the non-saturating loss of Goodfellow et al. sec. 3,
  maximising ``log D(G(z))`` (BCE of the fakes against target 1) rather than minimising
  ``log(1 - D(G(z)))``. Train with Adam, lr 2e-4, betas (0.5, 0.999) (sec. 4).

Conditional variant (``num_classes > 0``; Mirza & Osindero, "Conditional Generative
Adversarial Nets", arXiv 2014): both networks see the label ``y``. G takes ``[z, e(y)]``, a
learned label embedding concatenated to the noise; D gets an extra input channel, a learned
per-class S x S plane. (The paper feeds one-hot ``y`` to MLPs; an embedding is a linear map
of the one-hot vector, and a plane is how a convolutional D can take it at its input.)

Departures: ``z ~ N(0, I)`` instead of the paper's uniform noise; 28x28 (start at 7x7, two
upsamplings) and 32x32 (start at 4x4, three) as well as the paper's 64x64; the projection is
a bias-free linear layer (BN follows).

The adversarial contract, which a training loop uses without knowing the architecture:
:meth:`DCGAN.generator_step` -> backward/step the generator's optimiser ->
:meth:`DCGAN.discriminator_step` with the same fakes -> backward/step the discriminator's.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers import ConvBnAct
from cnnzoo.layers.gan import init_gan_weights
from cnnzoo.layers.gan_training import frozen
from cnnzoo.models.generative.autoencoder import (
    ConvTransposeBnAct,
    check_positive_int,
    evaluating,
)
from cnnzoo.registry import register_model

RADFORD_2016 = (
    "Radford, Metz & Chintala, Unsupervised Representation Learning with Deep Convolutional "
    "Generative Adversarial Networks, ICLR 2016; Mirza & Osindero, Conditional Generative "
    "Adversarial Nets, 2014 (num_classes > 0)"
)

START_SIZE = {28: 7, 32: 4, 64: 4}
"""Side of the generator's first map (and the discriminator's last) per supported image size."""

LeakyReLU02 = functools.partial(nn.LeakyReLU, 0.2, inplace=True)


class DCGANGenerator(nn.Module):
    """``z`` (N, latent) [+ labels] -> images (N, C, S, S) in [-1, 1] (Fig. 1)."""

    def __init__(
        self,
        latent: int,
        out_channels: int,
        image_size: int,
        ngf: int,
        num_classes: int = 0,
        embed_dim: int = 50,
    ) -> None:
        super().__init__()
        start = START_SIZE[image_size]
        upsamplings = round(math.log2(image_size // start))
        channels = ngf * 2 ** (upsamplings - 1)
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        inputs = latent + (embed_dim if num_classes else 0)
        self.project = nn.Sequential(
            nn.Linear(inputs, channels * start * start, bias=False),
            nn.Unflatten(1, (channels, start, start)),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for _ in range(upsamplings - 1):
            layers.append(ConvTransposeBnAct(channels, channels // 2))
            channels //= 2
        # Output layer: no BN (guideline 3), tanh (guideline 4).
        layers.append(ConvTransposeBnAct(channels, out_channels, norm=False, act_layer=nn.Tanh))
        self.up = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Return images (N, C, S, S) in [-1, 1]; ``labels`` (N,) only when conditional."""
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.up(self.project(z))


class DCGANDiscriminator(nn.Module):
    """Images (N, C, S, S) [+ labels] -> one real-vs-fake logit per image, (N,)."""

    def __init__(self, in_channels: int, image_size: int, ndf: int, num_classes: int = 0) -> None:
        super().__init__()
        start = START_SIZE[image_size]
        downsamplings = round(math.log2(image_size // start))
        self.image_size = image_size
        self.embed = nn.Embedding(num_classes, image_size * image_size) if num_classes else None
        channels = in_channels + (1 if num_classes else 0)
        # First layer: no BN (guideline 3, on the discriminator's input layer).
        layers: list[nn.Module] = [
            ConvBnAct(channels, ndf, 4, 2, padding=1, norm_layer=None, act_layer=LeakyReLU02)
        ]
        channels = ndf
        for _ in range(downsamplings - 1):
            layers.append(ConvBnAct(channels, channels * 2, 4, 2, padding=1, act_layer=LeakyReLU02))
            channels *= 2
        self.features = nn.Sequential(*layers)
        # Flatten + one linear output: a convolution the size of the final map.
        self.classifier = nn.Conv2d(channels, 1, start)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Return the logits (N,) that ``x`` is real; ``labels`` (N,) only when conditional."""
        if self.embed is not None:
            plane = self.embed(labels).view(-1, 1, self.image_size, self.image_size)
            x = torch.cat([x, plane], dim=1)
        return self.classifier(self.features(x)).flatten()


class DCGAN(nn.Module):
    """A DCGAN generator and discriminator with the adversarial training contract.

    Args:
        in_channels: image channels.
        image_size: 28, 32 or 64.
        latent: dimension of ``z`` (100 in the paper).
        ngf: generator width: channels of its last hidden map (doubling towards ``z``).
        ndf: discriminator width: channels of its first map (doubling with depth).
        num_classes: > 0 for the conditional GAN, 0 for the unconditional one.
        embed_dim: size of the generator's label embedding (conditional only).

    Attributes:
        generator: :class:`DCGANGenerator`.
        discriminator: :class:`DCGANDiscriminator`.

    Raises:
        CnnzooError: for an unsupported image size, a non-positive latent/width, or a
            negative ``num_classes``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        latent: int = 100,
        ngf: int = 64,
        ndf: int = 64,
        num_classes: int = 0,
        embed_dim: int = 50,
    ) -> None:
        super().__init__()
        if image_size not in START_SIZE:
            raise CnnzooError(
                f"dcgan supports image_size {', '.join(map(str, START_SIZE))}, got "
                f"{image_size!r}; resize the images to one of them"
            )
        for name, value in (
            ("in_channels", in_channels),
            ("latent", latent),
            ("ngf", ngf),
            ("ndf", ndf),
            ("embed_dim", embed_dim),
        ):
            check_positive_int(name, value)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise CnnzooError(
                f"num_classes must be 0 (unconditional) or a positive integer, got {num_classes!r}"
            )
        self.in_channels, self.image_size, self.latent = in_channels, image_size, latent
        self.num_classes = num_classes
        self.generator = DCGANGenerator(
            latent, in_channels, image_size, ngf, num_classes, embed_dim
        )
        self.discriminator = DCGANDiscriminator(in_channels, image_size, ndf, num_classes)
        init_gan_weights(self)

    @property
    def conditional(self) -> bool:
        """True for the conditional GAN (``num_classes > 0``)."""
        return self.num_classes > 0

    def _device(self) -> torch.device:
        return self.generator.project[0].weight.device

    def _check_labels(self, labels: Tensor | None, n: int) -> Tensor | None:
        if not self.conditional:
            return None
        if labels is None:
            raise CnnzooError(
                f"this dcgan is conditional ({self.num_classes} classes): give labels "
                '(the batch\'s "label")'
            )
        if labels.shape != (n,) or labels.dtype not in (torch.int64, torch.int32):
            raise CnnzooError(
                f"labels must be an integer tensor of shape ({n},), got "
                f"{labels.dtype} {tuple(labels.shape)}"
            )
        if n and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise CnnzooError(
                f"labels must lie in 0..{self.num_classes - 1}, got "
                f"{int(labels.min())}..{int(labels.max())}"
            )
        return labels.long()

    def _batch(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        images = batch["image"]
        expected = (self.in_channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise CnnzooError(
                f"this dcgan takes images (N, {', '.join(map(str, expected))}), got "
                f"{tuple(images.shape)}; build it with the data's in_channels and image_size"
            )
        return images, self._check_labels(batch.get("label"), images.shape[0])

    # -- the adversarial contract ----------------------------------------------------------
    def generator_parameters(self) -> list[nn.Parameter]:
        """Return the generator's parameters (for its own optimiser)."""
        return list(self.generator.parameters())

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Return the discriminator's parameters (for its own optimiser)."""
        return list(self.discriminator.parameters())

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Return ``G(z)`` (N, C, S, S) in [-1, 1]; ``labels`` (N,) when conditional.

        Raises:
            CnnzooError: for missing or out-of-range labels of a conditional model.
        """
        return self.generator(z, self._check_labels(labels, z.shape[0]))

    def generator_step(
        self, batch: dict[str, Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Generate one fake per real image and score them with the discriminator.

        Args:
            batch: ``{"image": (N, C, S, S) in [-1, 1], "label": (N,) int64}``; the labels
                are used (as the fakes' classes) only by a conditional model. Only N and the
                labels are read: the real images are not.

        Returns:
            ``(losses, fakes)``. ``losses["loss"]``: the non-saturating generator loss,
            ``BCE(D(G(z)), 1)`` averaged over the batch; it back-propagates into the
            generator only (the discriminator's parameters are frozen while it is built).
            ``losses["adversarial"]``: the same, detached; ``losses["d_fake"]``: mean
            ``sigmoid(D(G(z)))``, detached. ``fakes``: ``{"image": G(z)`` (with its graph),
            ``"z"`` and, when conditional, ``"label"}``, to pass to
            :meth:`discriminator_step`.

        Raises:
            CnnzooError: for images of the wrong shape or bad labels (conditional).
        """
        images, labels = self._batch(batch)
        z = torch.randn(images.shape[0], self.latent, device=images.device)
        fake = self.generator(z, labels)
        with frozen(self.discriminator):
            logits = self.discriminator(fake, labels)
        loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        losses = {
            "loss": loss,
            "adversarial": loss.detach(),
            "d_fake": torch.sigmoid(logits).mean().detach(),
        }
        fakes = {"image": fake, "z": z}
        if labels is not None:
            fakes["label"] = labels
        return losses, fakes

    def discriminator_step(
        self, batch: dict[str, Tensor], fakes: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Score real and fake images; the fakes are detached here (no gradient reaches G).

        Real and fake images go through the discriminator as two separate batches, so
        batch norm never mixes them (as in the paper's reference code).

        Args:
            batch: the real ``{"image", "label"}`` (see :meth:`generator_step`).
            fakes: :meth:`generator_step`'s second return value.

        Returns:
            ``"loss"``: ``BCE(D(x), 1) + BCE(D(G(z)), 0)`` (each averaged over its batch),
            differentiable in the discriminator; ``"loss_real"``, ``"loss_fake"``: the two
            terms; ``"d_real"``, ``"d_fake"``: mean sigmoid outputs on real and fake
            images (all detached).

        Raises:
            CnnzooError: for images of the wrong shape or bad labels (conditional).
        """
        images, labels = self._batch(batch)
        fake = fakes["image"].detach()
        fake_labels = self._check_labels(fakes.get("label"), fake.shape[0])
        real_logits = self.discriminator(images, labels)
        fake_logits = self.discriminator(fake, fake_labels)
        loss_real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        loss_fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return {
            "loss": loss_real + loss_fake,
            "loss_real": loss_real.detach(),
            "loss_fake": loss_fake.detach(),
            "d_real": torch.sigmoid(real_logits).mean().detach(),
            "d_fake": torch.sigmoid(fake_logits).mean().detach(),
        }

    def sample(
        self,
        n: int,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Return ``n`` generated images (n, C, S, S) in [-1, 1], in eval mode without
        gradients (modes restored afterwards).

        Args:
            n: number of images.
            labels: (n,) classes, conditional models only; None draws them uniformly.
            generator: random generator for ``z`` (and the drawn labels).

        Raises:
            CnnzooError: for ``n`` < 1, labels given to an unconditional model, or labels of
                the wrong shape or range.
        """
        check_positive_int("n", n)
        if labels is not None and not self.conditional:
            raise CnnzooError("this dcgan is unconditional (num_classes=0): do not pass labels")
        device = generator.device if generator is not None else self._device()
        z = torch.randn(n, self.latent, generator=generator, device=device)
        if self.conditional and labels is None:
            labels = torch.randint(self.num_classes, (n,), generator=generator, device=device)
        z = z.to(self._device())
        labels = None if labels is None else labels.to(self._device())
        with evaluating(self):
            return self(z, labels)


@register_model(
    task="generation",
    paper=RADFORD_2016,
    input_size=(1, 28, 28),
    min_input_size=28,
    family="dcgan",
)
def dcgan(
    in_channels: int = 1,
    image_size: int = 28,
    latent: int = 100,
    ngf: int = 64,
    ndf: int = 64,
    num_classes: int = 0,
    embed_dim: int = 50,
) -> DCGAN:
    """DCGAN (Radford et al. 2016); conditional on labels when ``num_classes > 0``."""
    return DCGAN(in_channels, image_size, latent, ngf, ndf, num_classes, embed_dim)
