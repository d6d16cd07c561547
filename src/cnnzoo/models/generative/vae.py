"""Variational autoencoder with a convolutional encoder and decoder.

Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014. The lecture's objective,
maximised per image ``x``:

    ELBO(x) = E_{q(z|x)}[log p(x|z)] - D_KL(q(z|x) || p(z))

* Encoder ``q(z|x) = N(mu(x), diag(exp(logvar(x))))`` (sec. 3, eq. 9's Gaussian "recognition
  model"): the stride-2 conv-BN-ReLU stack of :class:`~.autoencoder.ConvEncoder`, then two
  linear heads for ``mu`` and ``logvar = log sigma^2``.
* Reparameterisation (sec. 2.4): ``z = mu + sigma * eps``, ``eps ~ N(0, I)``, so the sampled
  code is differentiable in the encoder's outputs. One sample per image (L = 1), as the
  paper's experiments use with minibatches of 100.
* Prior ``p(z) = N(0, I)``; the KL term in closed form (Appendix B):
  ``-D_KL = 1/2 sum_j (1 + logvar_j - mu_j^2 - exp(logvar_j))`` (:func:`kl_divergence`).
* Decoder ``p(x|z)``: independent Bernoulli pixels (Appendix C.1) whose logits come from
  :class:`~.autoencoder.ConvDecoder`; ``log p(x|z)`` is minus the binary cross-entropy summed
  over pixels.

Departures: convolutional encoder/decoder with batch norm instead of the paper's one-hidden
layer MLPs; grey levels in [0, 1] are used directly as Bernoulli targets (the paper binarises
MNIST), so ``recon`` is a cross-entropy and not an exact log-likelihood for non-binary
pixels. ``beta`` weights the KL term (Higgins et al., "beta-VAE", ICLR 2017); beta = 1 is
the paper's ELBO.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.models.base import init_weights_kaiming
from cnnzoo.models.generative.autoencoder import (
    ConvDecoder,
    ConvEncoder,
    check_positive_int,
    check_widths,
    encoder_map_size,
    evaluating,
)
from cnnzoo.registry import register_model

KINGMA_WELLING = "Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014"


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """Return ``D_KL(N(mu, exp(logvar)) || N(0, I))`` per row, in nats (summed over the last,
    latent, dimension): ``1/2 sum(mu^2 + exp(logvar) - 1 - logvar)``, Kingma & Welling 2014,
    Appendix B. Shape: ``mu.shape[:-1]`` (one value per image for (N, latent) inputs).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=-1)


class VAE(nn.Module):
    """Conv encoder -> (mu, logvar) -> sampled z -> conv decoder -> Bernoulli logits.

    Args:
        in_channels: image channels.
        image_size: height and width of the images.
        latent: dimension of z.
        widths: channels of the encoder's stride-2 stages (the decoder mirrors them).
        beta: weight of the KL term in :meth:`loss` (1: the ELBO).

    Raises:
        CnnzooError: for a latent, width or image size that is not a positive integer, an
            image smaller than ``2 ** len(widths)``, or a negative ``beta``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        latent: int = 16,
        widths: Sequence[int] = (32, 64),
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("latent", latent)
        check_positive_int("image_size", image_size)
        widths = check_widths(widths)
        if image_size < 2 ** len(widths):
            raise CnnzooError(
                f"image_size {image_size} is too small for {len(widths)} stride-2 stages; "
                f"use at least {2 ** len(widths)} or fewer widths"
            )
        if not isinstance(beta, (int, float)) or not beta >= 0:
            raise CnnzooError(f"beta must be a number >= 0, got {beta!r}")
        self.in_channels, self.image_size, self.latent = in_channels, image_size, latent
        self.beta = float(beta)
        self.encoder = ConvEncoder(in_channels, widths)
        side = encoder_map_size(image_size, len(widths))
        map_shape = (widths[-1], side, side)
        features = math.prod(map_shape)
        self.flatten = nn.Flatten()
        self.mu = nn.Linear(features, latent)
        self.logvar = nn.Linear(features, latent)
        self.decoder = ConvDecoder(
            latent, map_shape, [*widths[-2::-1], widths[0]], in_channels, image_size
        )
        init_weights_kaiming(self, linear_std=None)
        # The logit layer keeps PyTorch's smaller init: He's would start with saturated pixels.
        self.decoder.head.reset_parameters()

    def _check_input(self, x: Tensor) -> None:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise CnnzooError(
                f"this VAE takes images (N, {', '.join(map(str, expected))}), got "
                f"{tuple(x.shape)}; build it with the data's in_channels and image_size"
            )

    def _device(self) -> torch.device:
        return self.mu.weight.device

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(mu, logvar)``, each (N, latent), of ``q(z|x)`` for images (N, C, S, S).

        Raises:
            CnnzooError: for images of another shape than the model was built for.
        """
        self._check_input(x)
        h = self.flatten(self.encoder(x))
        return self.mu(h), self.logvar(h)

    @staticmethod
    def reparameterize(
        mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Return ``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` (sec. 2.4)."""
        device = generator.device if generator is not None else mu.device
        eps = torch.randn(mu.shape, generator=generator, device=device, dtype=mu.dtype)
        return mu + (0.5 * logvar).exp() * eps.to(mu.device)

    def decode_logits(self, z: Tensor) -> Tensor:
        """Return the Bernoulli logits (N, C, S, S) of ``p(x|z)`` for codes (N, latent)."""
        return self.decoder(z)

    def decode(self, z: Tensor) -> Tensor:
        """Return the Bernoulli means ``sigmoid(logits)`` (N, C, S, S), in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Return ``{"logits", "mu", "logvar", "z"}`` for images ``x``: one reparameterised
        sample ``z`` of ``q(z|x)`` (in every mode) and the decoder's logits for it."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return {"logits": self.decode_logits(z), "mu": mu, "logvar": logvar, "z": z}

    def loss(
        self, outputs: dict[str, Tensor], x: Tensor, beta: float | None = None
    ) -> dict[str, Tensor]:
        """Return the negative ELBO and its parts, in nats per image (means over the batch).

        Args:
            outputs: :meth:`forward`'s dict.
            x: the images, in [0, 1], the Bernoulli targets.
            beta: weight of the KL term (default: ``self.beta``).

        Returns:
            ``"loss"``: ``recon + beta * kl``, differentiable; ``"recon"``: binary
            cross-entropy summed over pixels (``-log p(x|z)`` for binary ``x``); ``"kl"``:
            :func:`kl_divergence`; ``"elbo"``: ``-(recon + kl)``, the beta = 1 bound. All
            but ``"loss"`` are detached.

        Raises:
            CnnzooError: if the logits and ``x`` differ in shape.
        """
        beta = self.beta if beta is None else beta
        logits = outputs["logits"]
        if logits.shape != x.shape:
            raise CnnzooError(
                f"logits {tuple(logits.shape)} and targets {tuple(x.shape)} differ in shape"
            )
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        recon = recon.flatten(1).sum(dim=1).mean()
        kl = kl_divergence(outputs["mu"], outputs["logvar"]).mean()
        return {
            "loss": recon + beta * kl,
            "recon": recon.detach(),
            "kl": kl.detach(),
            "elbo": -(recon + kl).detach(),
        }

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Return ``n`` new images (n, C, S, S) in [0, 1]: ``decode(z)``, ``z ~ N(0, I)``.

        The images are the Bernoulli means (not binary draws); computed in eval mode
        without gradients.

        Raises:
            CnnzooError: if ``n`` is not a positive integer.
        """
        check_positive_int("n", n)
        device = generator.device if generator is not None else self._device()
        z = torch.randn(n, self.latent, generator=generator, device=device)
        with evaluating(self):
            return self.decode(z.to(self._device()))

    def interpolate(self, x_a: Tensor, x_b: Tensor, steps: int = 8) -> Tensor:
        """Return ``steps`` images (steps, C, S, S) decoded along the straight line between
        the posterior means of ``x_a`` and ``x_b`` (each (C, S, S) or (1, C, S, S)); the
        first is ``decode(mu_a)``, the last ``decode(mu_b)``. Eval mode, no gradients.

        Raises:
            CnnzooError: for ``steps`` < 2 or images of the wrong shape.
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise CnnzooError(f"steps must be an integer >= 2 (both endpoints), got {steps!r}")
        x_a = x_a.unsqueeze(0) if x_a.dim() == 3 else x_a
        x_b = x_b.unsqueeze(0) if x_b.dim() == 3 else x_b
        with evaluating(self):
            mu_a, _ = self.encode(x_a)
            mu_b, _ = self.encode(x_b)
            t = torch.linspace(0, 1, steps, device=mu_a.device).unsqueeze(1)
            return self.decode((1 - t) * mu_a + t * mu_b)

    def reconstruct(self, x: Tensor) -> Tensor:
        """Return ``decode(mu(x))``, (N, C, S, S) in [0, 1]: the reconstruction from the
        posterior mean, in eval mode without gradients."""
        with evaluating(self):
            return self.decode(self.encode(x)[0])


@register_model(
    task="generation",
    paper=KINGMA_WELLING,
    input_size=(1, 28, 28),
    min_input_size=4,
    family="vae",
)
def vae(
    in_channels: int = 1,
    image_size: int = 28,
    latent: int = 16,
    widths: Sequence[int] = (32, 64),
    beta: float = 1.0,
) -> VAE:
    """Convolutional VAE with a Bernoulli decoder (Kingma & Welling 2014)."""
    return VAE(in_channels, image_size, latent, widths, beta)
