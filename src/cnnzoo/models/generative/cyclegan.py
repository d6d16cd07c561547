"""CycleGAN: two generators, two discriminators, and a cycle that must return to its start.

Zhu, Park, Isola & Efros, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", ICCV 2017. The code follows Sec. 3 (Eq. 1-3), Sec. 4 and appendix 7:

* G_AB: A -> B and G_BA: B -> A are :class:`~cnnzoo.layers.gan.ResnetGenerator`
  (``c7s1-64, d128, d256, R256 x 9, u128, u64, c7s1-3`` at 256 px, 6 R-blocks at 128 px).
* D_A, D_B: 70x70 :class:`~cnnzoo.layers.gan.PatchDiscriminator` with InstanceNorm; D_A
  tells real A from G_BA(B), D_B real B from G_AB(A).
* Adversarial loss: least squares (Sec. 4, "we replace the negative log likelihood objective
  by a least-squares loss", Mao et al. 2017). G minimises ``(D(G(x)) - 1)^2``; D minimises
  ``(D(y) - 1)^2 + D(G(x))^2``, divided by 2 "to slow down the rate at which D learns".
* Cycle loss (Eq. 2), weight lambda = 10 (Eq. 3): ``||G_BA(G_AB(a)) - a||_1 +
  ||G_AB(G_BA(b)) - b||_1``.
* Identity loss (Sec. 5.2, Taigman et al. 2017): ``||G_BA(a) - a||_1 + ||G_AB(b) - b||_1``
  with weight 0.5 * lambda; it needs A and B with the same number of channels.
* The discriminators are updated from a pool of the 50 last generated images
  (:class:`~cnnzoo.layers.gan.ImagePool`), not only the newest (Sec. 4).

The two domains are unpaired: nothing here assumes that ``batch["A"][i]`` and
``batch["B"][i]`` correspond. Optimisation (Adam, lr 2e-4, betas (0.5, 0.999), batch 1, linear
decay after 100 epochs) belongs to the training task.

Departure: the small defaults (``ngf = ndf = 32``, 6 residual blocks, a PatchGAN with 2
stride-2 layers, i.e. 34x34 patches) fit 16-64 px images on a CPU; ``ngf=64, ndf=64,
n_blocks=9, n_layers_d=3`` gives the paper's 256-px networks.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers.gan import PatchDiscriminator, ResnetGenerator
from cnnzoo.layers.gan_training import ImagePool, TranslationGAN, frozen, lsgan_loss
from cnnzoo.registry import register_model

ZHU_2017 = (
    "Zhu, Park, Isola & Efros, Unpaired Image-to-Image Translation using Cycle-Consistent "
    "Adversarial Networks, ICCV 2017"
)


class CycleGAN(TranslationGAN):
    """Two ResNet generators and two PatchGANs trained with LSGAN, cycle and identity losses.

    Args:
        in_channels: channels of domain A images.
        out_channels: channels of domain B images (default: ``in_channels``).
        ngf: generator width (64 in the paper).
        ndf: discriminator width (64 in the paper).
        n_blocks: residual blocks per generator (9 at 256 px, 6 at 128 px in the paper).
        n_down: stride-2 convolutions per generator (2 in the paper).
        n_layers_d: stride-2 layers per PatchGAN: 3 gives the paper's 70x70 patches (about a
            quarter of a 256-px side); the default 2 (34x34 patches) keeps that ratio at 64 px
            and accepts images down to 16 px.
        norm: ``"instance"`` (the paper's), ``"batch"`` or ``"none"``.
        lambda_cycle: weight of the cycle loss (lambda = 10).
        lambda_identity: weight of the identity loss as a fraction of ``lambda_cycle`` (0.5 in
            the paper); default None: 0.5 when A and B have the same channels, else 0.
        pool_size: images kept by each image pool (50); 0 feeds D only the newest fakes.
        seed: seeds the pools' random draws (reproducible tests); None uses the global RNG.

    Raises:
        CnnzooError: for bad sizes or weights, or an identity loss between domains with
            different channel counts.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        ngf: int = 32,
        ndf: int = 32,
        n_blocks: int = 6,
        n_down: int = 2,
        n_layers_d: int = 2,
        norm: str = "instance",
        lambda_cycle: float = 10.0,
        lambda_identity: float | None = None,
        pool_size: int = 50,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if lambda_identity is None:
            lambda_identity = 0.5 if in_channels == out_channels else 0.0
        if lambda_cycle < 0 or lambda_identity < 0:
            raise CnnzooError(
                f"loss weights must be >= 0, got lambda_cycle={lambda_cycle}, "
                f"lambda_identity={lambda_identity}"
            )
        if lambda_identity > 0 and in_channels != out_channels:
            raise CnnzooError(
                f"the identity loss compares G_BA(a) with a, which needs A and B with the same "
                f"channels (got {in_channels} and {out_channels}); set lambda_identity=0"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.lambda_cycle = float(lambda_cycle)
        self.lambda_identity = float(lambda_identity)
        self.G_AB: nn.Module = ResnetGenerator(
            in_channels, out_channels, ngf, n_down, n_blocks, norm
        )
        self.G_BA: nn.Module = ResnetGenerator(
            out_channels, in_channels, ngf, n_down, n_blocks, norm
        )
        self.D_A = PatchDiscriminator(in_channels, ndf, n_layers_d, norm)
        self.D_B = PatchDiscriminator(out_channels, ndf, n_layers_d, norm)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.pool_A = ImagePool(pool_size, generator)
        self.pool_B = ImagePool(pool_size, generator)

    def generator_parameters(self) -> list[nn.Parameter]:
        """Return the parameters of G_AB and G_BA."""
        return [*self.G_AB.parameters(), *self.G_BA.parameters()]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Return the parameters of D_A and D_B."""
        return [*self.D_A.parameters(), *self.D_B.parameters()]

    def generator_step(
        self, batch: Mapping[str, Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Run both cycles and return the generator losses and the fakes for D.

        Returns:
            ``(losses, fakes)``: losses ``"loss"`` (= gan + cycle + identity), ``"gan"``
            (LSGAN of both generators), ``"cycle"`` (lambda x cycle L1 of both cycles),
            ``"identity"`` (0.5 lambda x identity L1, zero when disabled); fakes
            ``"fake_B"`` = G_AB(A), ``"fake_A"`` = G_BA(B), ``"rec_A"`` = G_BA(G_AB(A)),
            ``"rec_B"`` = G_AB(G_BA(B)).

        Raises:
            CnnzooError: for a batch without images ``"A"`` and ``"B"`` of the model's
                channels.
        """
        real_A = self.images(batch, "A", self.in_channels)
        real_B = self.images(batch, "B", self.out_channels)
        fake_B = self.G_AB(real_A)
        fake_A = self.G_BA(real_B)
        rec_A = self.G_BA(fake_B)
        rec_B = self.G_AB(fake_A)
        with frozen(self.D_A, self.D_B):
            gan = lsgan_loss(self.D_B(fake_B), True) + lsgan_loss(self.D_A(fake_A), True)
        cycle = self.lambda_cycle * (F.l1_loss(rec_A, real_A) + F.l1_loss(rec_B, real_B))
        if self.lambda_identity > 0:
            identity = (
                self.lambda_identity
                * self.lambda_cycle
                * (F.l1_loss(self.G_BA(real_A), real_A) + F.l1_loss(self.G_AB(real_B), real_B))
            )
        else:
            identity = real_A.new_zeros(())
        losses = {"loss": gan + cycle + identity, "gan": gan, "cycle": cycle, "identity": identity}
        fakes = {"fake_A": fake_A, "fake_B": fake_B, "rec_A": rec_A, "rec_B": rec_B}
        return losses, fakes

    def discriminator_step(
        self, batch: Mapping[str, Tensor], fakes: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Return the LSGAN losses of D_A and D_B on real images and on pooled fakes.

        ``fakes["fake_A"]`` and ``fakes["fake_B"]`` go through the image pools (detached);
        each discriminator's loss is halved (Sec. 4).

        Returns:
            ``"loss"`` (= d_A + d_B), ``"d_A"``, ``"d_B"``.

        Raises:
            CnnzooError: for a batch or fakes missing their images.
        """
        real_A = self.images(batch, "A", self.in_channels)
        real_B = self.images(batch, "B", self.out_channels)
        fake_A = self.pool_A.query(self.images(fakes, "fake_A", self.in_channels))
        fake_B = self.pool_B.query(self.images(fakes, "fake_B", self.out_channels))
        d_A = 0.5 * (lsgan_loss(self.D_A(real_A), True) + lsgan_loss(self.D_A(fake_A), False))
        d_B = 0.5 * (lsgan_loss(self.D_B(real_B), True) + lsgan_loss(self.D_B(fake_B), False))
        return {"loss": d_A + d_B, "d_A": d_A, "d_B": d_B}

    def translate(self, x: Tensor, direction: str = "AB") -> Tensor:
        """Return G_AB(x) (``"AB"``) or G_BA(x) (``"BA"``), images in [-1, 1].

        Raises:
            CnnzooError: for another direction.
        """
        if self.check_direction(direction) == "AB":
            return self.G_AB(x)
        return self.G_BA(x)


@register_model(
    task="translation",
    paper=ZHU_2017,
    input_size=(3, 64, 64),
    min_input_size=16,
    family="cyclegan",
)
def cyclegan(
    in_channels: int = 3,
    out_channels: int | None = None,
    ngf: int = 32,
    ndf: int = 32,
    n_blocks: int = 6,
    n_down: int = 2,
    n_layers_d: int = 2,
    norm: str = "instance",
    lambda_cycle: float = 10.0,
    lambda_identity: float | None = None,
    pool_size: int = 50,
    seed: int | None = None,
) -> CycleGAN:
    """CycleGAN (Zhu et al. 2017): ResNet generators, 70x70 PatchGANs, LSGAN, lambda = 10."""
    return CycleGAN(
        in_channels, out_channels, ngf, ndf, n_blocks, n_down, n_layers_d, norm,
        lambda_cycle, lambda_identity, pool_size, seed,
    )  # fmt: skip
