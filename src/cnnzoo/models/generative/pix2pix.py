"""pix2pix: a conditional GAN for paired translation, U-Net generator and PatchGAN critic.

Isola, Zhu, Zhou & Efros, "Image-to-Image Translation with Conditional Adversarial
Networks", CVPR 2017. The code follows Sec. 3 and appendix 6.1:

* Objective (Eq. 4): ``G* = arg min_G max_D L_cGAN(G, D) + lambda L_L1(G)``, lambda = 100.
  L_cGAN uses the non-saturating log loss on logits (``gan_mode="vanilla"``, the paper's)
  or least squares (``"lsgan"``). D's loss is divided by 2 (Sec. 3.3).
* Generator (6.1.1): a U-Net, encoder ``C64-C128-C256-C512-C512-C512-C512-C512``, decoder
  ``CD512-CD1024-CD1024-C1024-C1024-C512-C256-C128`` (widths after concatenating the skip),
  where ``Ck`` is a 4x4 stride-2 Convolution-BatchNorm-ReLU and ``CDk`` adds 50 % dropout.
  Encoder ReLUs are leaky (0.2), decoder ReLUs are not; no BatchNorm on the first C64. Skip
  connections concatenate encoder layer i with decoder layer n - i. The last layer maps to
  the output channels with a tanh. Here ``depth`` levels of width ``ngf * 2**i`` (capped at
  ``8 ngf``) give the paper's generator with ``depth=8, ngf=64`` at 256 px.
* Dropout is the generator's only noise and stays on at test time in the paper ("we apply
  dropout at test time"): :meth:`Pix2Pix.translate` runs in whatever mode the model is in,
  so call ``model.train()`` before it to sample like the paper, ``model.eval()`` for a
  deterministic output.
* Discriminator (6.1.2): the 70x70 PatchGAN ``C64-C128-C256-C512`` on the concatenation of
  the input and the (real or generated) output, as a conditional GAN sees both.

Departures:

* the innermost encoder layer has no BatchNorm (as in the authors' code): at the bottom of
  the U the map is 1x1, where batch norm of a single image would zero it.
* the input is zero-padded to a multiple of ``2 ** depth`` (and the output cropped), so any
  image size works; small defaults (``ngf = ndf = 32``, ``depth = 6``: 1x1 at 64 px, and
  2 stride-2 PatchGAN layers, 34x34 patches) fit 16-64 px images on a CPU.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers import ConvBnAct
from cnnzoo.layers.gan import (
    GAN_MODES,
    PatchDiscriminator,
    init_gan_weights,
    leaky_relu,
    norm_layer,
)
from cnnzoo.layers.gan_training import TranslationGAN, frozen, gan_loss
from cnnzoo.models.segmentation.encdec import pad_to_multiple
from cnnzoo.registry import register_model

ISOLA_2017 = (
    "Isola, Zhu, Zhou & Efros, Image-to-Image Translation with Conditional Adversarial "
    "Networks, CVPR 2017"
)


class UNetUpStep(nn.Sequential):
    """Decoder ``Ck`` / ``CDk``: 4x4 stride-2 transposed conv, norm, dropout (CD), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, dropout: float) -> None:
        layer = norm_layer(norm)
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=layer is None),
            layer(out_channels) if layer is not None else nn.Identity(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.ReLU(inplace=True),
        )


class UNetGenerator(nn.Module):
    """pix2pix's U-Net: strided 4x4 encoder, transposed-conv decoder, concatenated skips.

    Args:
        in_channels: channels of the input image.
        out_channels: channels of the output image.
        ngf: width of the first layer (64 in the paper); level i has ``ngf * min(2**i, 8)``.
        depth: number of stride-2 levels (8 in the paper at 256 px, bottom of the U 1x1).
        norm: ``"batch"`` (the paper's), ``"instance"`` or ``"none"``.
        dropout: dropout rate of the ``CD`` decoder layers (0.5).
        n_dropout: number of decoder layers with dropout, innermost first (3 in the paper).

    Raises:
        CnnzooError: for a depth below 1, bad widths or an unknown norm.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ngf: int = 64,
        depth: int = 8,
        norm: str = "batch",
        dropout: float = 0.5,
        n_dropout: int = 3,
    ) -> None:
        super().__init__()
        for name, value in (("depth", depth), ("ngf", ngf), ("in_channels", in_channels),
                            ("out_channels", out_channels)):  # fmt: skip
            if not isinstance(value, int) or value < 1:
                raise CnnzooError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= dropout < 1:
            raise CnnzooError(f"dropout must be in [0, 1), got {dropout}")
        layer = norm_layer(norm)
        widths = [ngf * min(2**i, 8) for i in range(depth)]
        self.depth = depth
        self.down = nn.ModuleList()
        for i in range(depth):
            # No norm on the first layer (paper) nor on the 1x1 innermost one (authors' code).
            plain = i == 0 or i == depth - 1
            self.down.append(
                ConvBnAct(
                    in_channels if i == 0 else widths[i - 1], widths[i], 4, 2, 1,
                    norm_layer=None if plain else layer, act_layer=leaky_relu,
                )
            )  # fmt: skip
        self.up = nn.ModuleList()
        for j, i in enumerate(reversed(range(1, depth))):
            # Decoder level j upsamples level i to level i - 1's size; below the innermost,
            # its input is the previous decoder output concatenated with encoder level i.
            in_ch = widths[i] if i == depth - 1 else 2 * widths[i]
            self.up.append(UNetUpStep(in_ch, widths[i - 1], norm, dropout if j < n_dropout else 0))
        self.head = nn.Sequential(
            nn.ConvTranspose2d(2 * widths[0] if depth > 1 else widths[0], out_channels, 4, 2, 1),
            nn.Tanh(),
        )
        init_gan_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """Return the generated image (N, out_channels, H, W) in [-1, 1]."""
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, 2**self.depth)
        skips = []
        for down in self.down:
            x = down(x)
            skips.append(x)
        skips.pop()  # the bottom of the U feeds the decoder directly
        for up in self.up:
            x = torch.cat([skips.pop(), up(x)], dim=1)
        return self.head(x)[..., :h, :w]


class Pix2Pix(TranslationGAN):
    """U-Net generator + conditional PatchGAN, trained with cGAN + 100 x L1 (paired data).

    Args:
        in_channels: channels of the input images (domain A).
        out_channels: channels of the target images (domain B; default ``in_channels``).
        ngf: generator width (64 in the paper).
        ndf: discriminator width (64).
        depth: U-Net levels (8 at 256 px; default 6, a 1x1 bottom at 64 px).
        n_layers_d: stride-2 PatchGAN layers (3: 70x70 patches; default 2: 34x34).
        norm: ``"batch"`` (the paper's), ``"instance"`` or ``"none"``.
        dropout: dropout of the first three decoder layers (0.5).
        gan_mode: ``"vanilla"`` (the paper's log loss) or ``"lsgan"``.
        lambda_l1: weight of the L1 loss (100).

    Raises:
        CnnzooError: for bad sizes, an unknown norm or gan_mode, a negative weight.
    """

    directions = ("AB",)

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        ngf: int = 32,
        ndf: int = 32,
        depth: int = 6,
        n_layers_d: int = 2,
        norm: str = "batch",
        dropout: float = 0.5,
        gan_mode: str = "vanilla",
        lambda_l1: float = 100.0,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if gan_mode not in GAN_MODES:
            raise CnnzooError(f"unknown gan_mode {gan_mode!r}; expected one of {GAN_MODES}")
        if lambda_l1 < 0:
            raise CnnzooError(f"lambda_l1 must be >= 0, got {lambda_l1}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.gan_mode = gan_mode
        self.lambda_l1 = float(lambda_l1)
        self.G = UNetGenerator(in_channels, out_channels, ngf, depth, norm, dropout)
        self.D = PatchDiscriminator(in_channels + out_channels, ndf, n_layers_d, norm)

    def generator_parameters(self) -> list[nn.Parameter]:
        """Return the U-Net's parameters."""
        return list(self.G.parameters())

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Return the PatchGAN's parameters."""
        return list(self.D.parameters())

    def generator_step(
        self, batch: Mapping[str, Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Generate B from A and score it.

        Returns:
            ``(losses, fakes)``: losses ``"loss"`` (= gan + l1), ``"gan"`` (the cGAN loss of
            D(A, G(A)) labelled real), ``"l1"`` (lambda x ||B - G(A)||_1); fakes
            ``"fake_B"`` = G(A).

        Raises:
            CnnzooError: for a batch without paired images ``"A"`` and ``"B"``.
        """
        real_A, real_B = self._pair(batch)
        fake_B = self.G(real_A)
        with frozen(self.D):
            gan = gan_loss(self.D(torch.cat([real_A, fake_B], 1)), True, self.gan_mode)
        l1 = self.lambda_l1 * F.l1_loss(fake_B, real_B)
        return {"loss": gan + l1, "gan": gan, "l1": l1}, {"fake_B": fake_B}

    def discriminator_step(
        self, batch: Mapping[str, Tensor], fakes: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Score real pairs (A, B) against generated pairs (A, fake_B), the latter detached.

        Returns:
            ``"loss"`` (= 0.5 (real + fake)), ``"real"``, ``"fake"`` (the halved terms).

        Raises:
            CnnzooError: for a batch or fakes missing their images.
        """
        real_A, real_B = self._pair(batch)
        fake_B = self.images(fakes, "fake_B", self.out_channels).detach()
        real = 0.5 * gan_loss(self.D(torch.cat([real_A, real_B], 1)), True, self.gan_mode)
        fake = 0.5 * gan_loss(self.D(torch.cat([real_A, fake_B], 1)), False, self.gan_mode)
        return {"loss": real + fake, "real": real, "fake": fake}

    def translate(self, x: Tensor, direction: str = "AB") -> Tensor:
        """Return G(x), images in [-1, 1] (dropout active only in training mode).

        Raises:
            CnnzooError: for a direction other than ``"AB"`` (pix2pix learns one way).
        """
        self.check_direction(direction)
        return self.G(x)

    def _pair(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        real_A = self.images(batch, "A", self.in_channels)
        real_B = self.images(batch, "B", self.out_channels)
        if real_A.shape[0] != real_B.shape[0] or real_A.shape[-2:] != real_B.shape[-2:]:
            raise CnnzooError(
                f"pix2pix needs paired images of one size: A is {tuple(real_A.shape)}, "
                f"B is {tuple(real_B.shape)}"
            )
        return real_A, real_B


@register_model(
    task="translation",
    paper=ISOLA_2017,
    input_size=(3, 64, 64),
    min_input_size=16,
    family="pix2pix",
)
def pix2pix(
    in_channels: int = 3,
    out_channels: int | None = None,
    ngf: int = 32,
    ndf: int = 32,
    depth: int = 6,
    n_layers_d: int = 2,
    norm: str = "batch",
    dropout: float = 0.5,
    gan_mode: str = "vanilla",
    lambda_l1: float = 100.0,
) -> Pix2Pix:
    """pix2pix (Isola et al. 2017): U-Net generator, conditional PatchGAN, cGAN + 100 L1."""
    return Pix2Pix(
        in_channels, out_channels, ngf, ndf, depth, n_layers_d, norm, dropout, gan_mode,
        lambda_l1,
    )  # fmt: skip
