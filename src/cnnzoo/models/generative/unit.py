"""UNIT: two VAE-GANs that share their latent space by sharing their innermost layers.

Liu, Breuel & Kautz, "Unsupervised Image-to-Image Translation Networks", NeurIPS 2017.
The shared-latent space assumption (Sec. 2, Fig. 1): a pair of corresponding images x_A, x_B
has one code z with z = E_A(x_A) = E_B(x_B), x_A = G_A(z), x_B = G_B(z). It is enforced by
weight sharing: the last layer(s) of the encoders E_A, E_B and the first layer(s) of the
generators G_A, G_B are the *same* modules (:attr:`UNIT.enc_shared`, :attr:`UNIT.gen_shared`)
in both domains; :meth:`UNIT.encoder` and :meth:`UNIT.generator` return each domain's
network as an ``nn.Sequential`` holding those same objects.

Streams and losses (Sec. 2, Eq. 1-5), with z = E(x) + N(0, I) (the paper's VAE with unit
variance: the encoder predicts only the mean):

* VAE (Eq. 2): reconstruction ``||G_A(z_A) - x_A||_1`` (the paper's Laplacian
  log-likelihood) and ``KL(q(z|x) || N(0, I)) = mean(E(x)^2) / 2`` for both domains.
* GAN (Eq. 3): LSGAN on the translation stream, D_B on G_B(z_A) and D_A on G_A(z_B)
  ("it suffices that we only apply adversarial training to images from the translation
  stream"); ``gan_on_recon=True`` also shows the within-domain reconstructions to D.
* Cycle consistency (Eq. 4): x_A -> z_A -> G_B -> E_B -> G_A must give back x_A (L1), with
  the KL term of the re-encoded code.

Weights: the paper's lambda_0..4 = 10 (GAN), 0.1 (KL), 100 (recon), 0.1 (cycle KL),
100 (cycle recon) divided by 10, as in the authors' released configurations: GAN 1,
recon 10, KL 0.01, cycle recon 10, cycle KL 0.01 (the same ratios).

Departures:

* layers: the generator pieces of :mod:`cnnzoo.layers.gan` (``c7s1-k``, ``d-k``, ``R-k``,
  ``u-k``, InstanceNorm, ReLU) rather than the paper's layer table: E = ``c7s1-ngf``, ``n_down``
  x ``d-k``, ``n_blocks`` x ``R-k``, then ``n_shared`` shared ``R-k``; G mirrors it.
* discriminators: 70x70-style PatchGANs with LSGAN, in place of the paper's stack of stride-2
  convolutions with a sigmoid.
* KL: ``mean(mu^2) / 2`` (the exact KL per latent entry); the authors' code omits the 1/2.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers.gan import (
    C7s1,
    Down,
    PatchDiscriminator,
    ResnetBlock,
    Up,
    init_gan_weights,
    reflect_pad_to_multiple,
)
from cnnzoo.layers.gan_training import TranslationGAN, frozen, kl_unit_gaussian, lsgan_loss
from cnnzoo.registry import register_model

LIU_2017 = "Liu, Breuel & Kautz, Unsupervised Image-to-Image Translation Networks, NeurIPS 2017"

DOMAINS = ("A", "B")


class UNIT(TranslationGAN):
    """Coupled VAE-GANs with shared encoder tails and generator heads.

    Args:
        in_channels: channels of domain A images.
        out_channels: channels of domain B images (default: ``in_channels``).
        ngf: width of the first encoder layer; the latent code has ``ngf * 2**n_down``
            channels at 1 / 2**n_down of the image size.
        ndf: discriminator width.
        n_down: stride-2 convolutions in each encoder (and transposed ones in each generator).
        n_blocks: private residual blocks per encoder and per generator.
        n_shared: residual blocks shared by the two encoders (and, separately, by the two
            generators); 1 in the paper.
        n_layers_d: stride-2 layers per PatchGAN (2: 34x34 patches; 3: 70x70).
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        lambda_gan, lambda_recon, lambda_kl, lambda_cycle, lambda_cycle_kl: loss weights
            (1, 10, 0.01, 10, 0.01; see the module docstring).
        gan_on_recon: also apply the adversarial loss to within-domain reconstructions.

    Raises:
        CnnzooError: for bad sizes or negative weights.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        ngf: int = 32,
        ndf: int = 32,
        n_down: int = 2,
        n_blocks: int = 2,
        n_shared: int = 1,
        n_layers_d: int = 2,
        norm: str = "instance",
        lambda_gan: float = 1.0,
        lambda_recon: float = 10.0,
        lambda_kl: float = 0.01,
        lambda_cycle: float = 10.0,
        lambda_cycle_kl: float = 0.01,
        gan_on_recon: bool = False,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        weights = {
            "gan": lambda_gan,
            "recon": lambda_recon,
            "kl": lambda_kl,
            "cycle": lambda_cycle,
            "cycle_kl": lambda_cycle_kl,
        }
        bad = {k: v for k, v in weights.items() if v < 0}
        if bad:
            raise CnnzooError(f"loss weights must be >= 0, got {bad}")
        for name, value, low in (("ngf", ngf, 1), ("n_down", n_down, 0), ("n_shared", n_shared, 1),
                                 ("n_blocks", n_blocks, 0)):  # fmt: skip
            if not isinstance(value, int) or value < low:
                raise CnnzooError(f"{name} must be an integer >= {low}, got {value!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weights = {k: float(v) for k, v in weights.items()}
        self.gan_on_recon = gan_on_recon
        self.multiple = 2**n_down
        widths = [ngf * 2**i for i in range(n_down + 1)]
        dim = widths[-1]

        def private_encoder(channels: int) -> nn.Sequential:
            return nn.Sequential(
                C7s1(channels, ngf, norm),
                *(Down(widths[i], widths[i + 1], norm) for i in range(n_down)),
                *(ResnetBlock(dim, norm) for _ in range(n_blocks)),
            )

        def private_generator(channels: int) -> nn.Sequential:
            return nn.Sequential(
                *(ResnetBlock(dim, norm) for _ in range(n_blocks)),
                *(Up(widths[i + 1], widths[i], norm) for i in reversed(range(n_down))),
                C7s1(ngf, channels, norm="none", act_layer=None),
                nn.Tanh(),
            )

        self.enc_A = private_encoder(in_channels)
        self.enc_B = private_encoder(out_channels)
        self.enc_shared = nn.Sequential(*(ResnetBlock(dim, norm) for _ in range(n_shared)))
        self.gen_shared = nn.Sequential(*(ResnetBlock(dim, norm) for _ in range(n_shared)))
        self.gen_A = private_generator(in_channels)
        self.gen_B = private_generator(out_channels)
        init_gan_weights(self)
        self.D_A = PatchDiscriminator(in_channels, ndf, n_layers_d, norm)
        self.D_B = PatchDiscriminator(out_channels, ndf, n_layers_d, norm)
        # Each domain's full encoder/generator, holding the shared modules themselves. A plain
        # dict, so the shared weights are registered (and saved) once, under enc_shared /
        # gen_shared, not once per domain.
        self._encoders = {
            "A": nn.Sequential(self.enc_A, self.enc_shared),
            "B": nn.Sequential(self.enc_B, self.enc_shared),
        }
        self._generators = {
            "A": nn.Sequential(self.gen_shared, self.gen_A),
            "B": nn.Sequential(self.gen_shared, self.gen_B),
        }

    # -- the two VAEs ----------------------------------------------------------------------
    def _domain(self, domain: str) -> str:
        if domain not in DOMAINS:
            raise CnnzooError(f"UNIT has domains 'A' and 'B', not {domain!r}")
        return domain

    def encoder(self, domain: str) -> nn.Sequential:
        """Return E_A or E_B: ``Sequential(private layers, shared layers)``.

        ``encoder("A")[1] is encoder("B")[1]``: the shared tail is one module.

        Raises:
            CnnzooError: for a domain other than ``"A"`` or ``"B"``.
        """
        return self._encoders[self._domain(domain)]

    def generator(self, domain: str) -> nn.Sequential:
        """Return G_A or G_B: ``Sequential(shared layers, private layers)``.

        ``generator("A")[0] is generator("B")[0]``: the shared head is one module.

        Raises:
            CnnzooError: for a domain other than ``"A"`` or ``"B"``.
        """
        return self._generators[self._domain(domain)]

    def encode(self, x: Tensor, domain: str) -> Tensor:
        """Return the latent mean E(x), (N, ngf * 2**n_down, H / 2**n_down, W / 2**n_down).

        ``x`` is reflection-padded to a multiple of ``2**n_down`` first.
        """
        return self.encoder(domain)(reflect_pad_to_multiple(x, self.multiple))

    def decode(self, z: Tensor, domain: str) -> Tensor:
        """Return G(z), images of the domain in [-1, 1] (at the padded size)."""
        return self.generator(domain)(z)

    def generator_parameters(self) -> list[nn.Parameter]:
        """Return the parameters of both encoders and generators (shared ones once)."""
        modules = (self.enc_A, self.enc_B, self.enc_shared, self.gen_shared, self.gen_A,
                   self.gen_B)  # fmt: skip
        return [p for m in modules for p in m.parameters()]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Return the parameters of D_A and D_B."""
        return [*self.D_A.parameters(), *self.D_B.parameters()]

    def generator_step(
        self, batch: Mapping[str, Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Run the reconstruction, translation and cycle streams of both domains.

        Returns:
            ``(losses, fakes)``: losses ``"loss"`` (their sum), ``"gan"``, ``"recon"``,
            ``"kl"``, ``"cycle"``, ``"cycle_kl"``, each already weighted and summed over the
            two domains; fakes ``"fake_B"`` = G_B(z_A), ``"fake_A"`` = G_A(z_B), ``"rec_A"``
            = G_A(z_A), ``"rec_B"`` = G_B(z_B), ``"cyc_A"``, ``"cyc_B"`` (the input's sizes).

        Raises:
            CnnzooError: for a batch without images ``"A"`` and ``"B"`` of the model's
                channels.
        """
        real = {
            "A": self.images(batch, "A", self.in_channels),
            "B": self.images(batch, "B", self.out_channels),
        }
        other = {"A": "B", "B": "A"}
        fakes: dict[str, Tensor] = {}
        gan = recon = kl = cycle = cycle_kl = real["A"].new_zeros(())
        for d in DOMAINS:
            x = real[d]
            h, w = x.shape[-2:]
            mu = self.encode(x, d)
            z = mu + torch.randn_like(mu)
            rec = self.decode(z, d)[..., :h, :w]
            translated = self.decode(z, other[d])  # padded size, re-encoded below
            mu_cyc = self.encoder(other[d])(translated)
            cyc = self.decode(mu_cyc + torch.randn_like(mu_cyc), d)[..., :h, :w]
            fake = translated[..., :h, :w]
            recon = recon + F.l1_loss(rec, x)
            kl = kl + kl_unit_gaussian(mu)
            cycle = cycle + F.l1_loss(cyc, x)
            cycle_kl = cycle_kl + kl_unit_gaussian(mu_cyc)
            with frozen(self.D_A, self.D_B):
                gan = gan + lsgan_loss(self._disc(other[d])(fake), True)
                if self.gan_on_recon:
                    gan = gan + lsgan_loss(self._disc(d)(rec), True)
            fakes[f"fake_{other[d]}"] = fake
            fakes[f"rec_{d}"] = rec
            fakes[f"cyc_{d}"] = cyc
        w = self.weights
        losses = {
            "gan": w["gan"] * gan,
            "recon": w["recon"] * recon,
            "kl": w["kl"] * kl,
            "cycle": w["cycle"] * cycle,
            "cycle_kl": w["cycle_kl"] * cycle_kl,
        }
        return {"loss": sum(losses.values()), **losses}, fakes

    def _disc(self, domain: str) -> PatchDiscriminator:
        return self.D_A if domain == "A" else self.D_B

    def discriminator_step(
        self, batch: Mapping[str, Tensor], fakes: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Return the LSGAN losses of D_A and D_B: real images against detached fakes.

        The fakes are the translations ``fakes["fake_A"]``, ``fakes["fake_B"]`` (and, with
        ``gan_on_recon``, ``fakes["rec_A"]``, ``fakes["rec_B"]``, averaged with them).

        Returns:
            ``"loss"`` (= d_A + d_B), ``"d_A"``, ``"d_B"``, each ``0.5 * (real + fake)``.

        Raises:
            CnnzooError: for a batch or fakes missing their images.
        """
        losses = {}
        for d, channels in (("A", self.in_channels), ("B", self.out_channels)):
            disc = self._disc(d)
            real = self.images(batch, d, channels)
            fake_keys = [f"fake_{d}"] + ([f"rec_{d}"] if self.gan_on_recon else [])
            fake_loss = sum(
                lsgan_loss(disc(self.images(fakes, k, channels).detach()), False) for k in fake_keys
            ) / len(fake_keys)
            losses[f"d_{d}"] = 0.5 * (lsgan_loss(disc(real), True) + fake_loss)
        return {"loss": losses["d_A"] + losses["d_B"], **losses}

    def translate(self, x: Tensor, direction: str = "AB") -> Tensor:
        """Return G_B(E_A(x)) (``"AB"``) or G_A(E_B(x)) (``"BA"``), using the code's mean.

        Raises:
            CnnzooError: for another direction.
        """
        source, target = self.check_direction(direction)
        h, w = x.shape[-2:]
        return self.decode(self.encode(x, source), target)[..., :h, :w]


@register_model(
    task="translation",
    paper=LIU_2017,
    input_size=(3, 64, 64),
    min_input_size=16,
    family="unit",
)
def unit(
    in_channels: int = 3,
    out_channels: int | None = None,
    ngf: int = 32,
    ndf: int = 32,
    n_down: int = 2,
    n_blocks: int = 2,
    n_shared: int = 1,
    n_layers_d: int = 2,
    norm: str = "instance",
    lambda_gan: float = 1.0,
    lambda_recon: float = 10.0,
    lambda_kl: float = 0.01,
    lambda_cycle: float = 10.0,
    lambda_cycle_kl: float = 0.01,
    gan_on_recon: bool = False,
) -> UNIT:
    """UNIT (Liu et al. 2017): coupled VAE-GANs with shared layers; weights 1/10/0.01/10/0.01."""
    return UNIT(
        in_channels, out_channels, ngf, ndf, n_down, n_blocks, n_shared, n_layers_d, norm,
        lambda_gan, lambda_recon, lambda_kl, lambda_cycle, lambda_cycle_kl, gan_on_recon,
    )  # fmt: skip
