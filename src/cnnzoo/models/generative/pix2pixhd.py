"""pix2pixHD: a coarse-to-fine generator, multi-scale discriminators, feature matching.

Wang, Liu, Zhu, Tao, Kautz & Catanzaro, "High-Resolution Image Synthesis and Semantic
Manipulation with Conditional GANs", CVPR 2018. The code follows Sec. 3.2 and Fig. 3:

* Global generator G1 (Johnson et al. 2016 layout, in CycleGAN notation): ``c7s1-64, d128,
  d256, d512, d1024, R1024 x 9, u512, u256, u128, u64, c7s1-3`` on the input downsampled 2x
  (:class:`~cnnzoo.layers.gan.ResnetGenerator`, ``ngf``, ``n_down_global``,
  ``n_blocks_global``).
* Local enhancer G2: ``c7s1-32, d64`` at full resolution, whose output is summed element-wise
  with G1's last feature map (the output of u64, before its c7s1-3), then ``R64 x 3, u32,
  c7s1-3`` (:class:`LocalEnhancer`, width ``ngf // 2``, ``n_blocks_local``).
* Discriminators (Sec. 3.2): ``num_D`` PatchGANs (3 in the paper) on the concatenation of the
  input (image or one-hot label map) and the real or generated image, downsampled by 2 per
  scale (:class:`~cnnzoo.layers.gan.MultiScaleDiscriminator`).
* Loss (Eq. 5): ``sum_k L_GAN(G, D_k) + lambda sum_k L_FM(G, D_k)``, lambda = 10, with the
  least-squares GAN loss (Mao et al. 2017) of the authors' code and the feature-matching loss
  over every intermediate layer of every D_k (Eq. 4). Optionally, a perceptual loss
  (Johnson et al. 2016; Eq. 5's footnote, VGG in the paper): L1 between a frozen
  classifier's feature maps of the real and generated images, weight 10.
* Inputs: an image (``label_nc=0``) or a semantic label map, int64 (N, H, W), one-hot encoded
  into ``label_nc`` channels inside.

Departures:

* G1 and G2 are trained jointly from the start; the paper first trains G1 at half resolution
  and then fine-tunes both (the training task can freeze ``G.global_generator`` for that).
* the perceptual loss is off unless a network is given (cnnzoo ships no ImageNet weights):
  ``perceptual`` is a cnnzoo classifier module (its stage maps via ``FeatureExtractor``), a
  module returning a list of feature maps, or a path to a cnnzoo run / weights file of
  ``perceptual_model``. Its layers are averaged with equal weights (the authors' code weights
  five VGG layers 1/32 ... 1); the images go in as they are, in [-1, 1].
* no instance-boundary maps and no instance-wise feature encoder (Sec. 3.3-3.4), and the
  averaged (not summed) GAN and feature-matching terms over scales and layers.
* small defaults (``ngf = ndf = 32``, 3 global downsamplings, 6 + 3 residual blocks, 2
  scales of 3-layer PatchGANs) fit 16-64 px images on a CPU; the paper's networks are
  ``ngf=64, ndf=64, n_down_global=4, n_blocks_global=9, num_D=3``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers.gan import MultiScaleDiscriminator, ResnetGenerator, reflect_pad_to_multiple
from cnnzoo.layers.gan_training import TranslationGAN, feature_matching_loss, frozen, lsgan_loss
from cnnzoo.registry import register_model

WANG_2018 = (
    "Wang, Liu, Zhu, Tao, Kautz & Catanzaro, High-Resolution Image Synthesis and Semantic "
    "Manipulation with Conditional GANs, CVPR 2018"
)


class LocalEnhancer(nn.Module):
    """G = {G1, G2}: the global generator at half resolution inside the local enhancer.

    Args:
        in_channels: channels of the (one-hot or image) input.
        out_channels: channels of the output image.
        ngf: width of G1's first layer (64 in the paper); G2 starts at ``ngf // 2``, so its
            front-end ends at ``ngf`` channels, G1's last feature map's width.
        n_down_global: stride-2 convolutions of G1 (4 in the paper).
        n_blocks_global: residual blocks of G1 (9).
        n_blocks_local: residual blocks of G2 (3).
        norm: ``"instance"`` (the paper's), ``"batch"`` or ``"none"``.

    Raises:
        CnnzooError: for an odd or too small ``ngf`` or other bad sizes.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ngf: int = 64,
        n_down_global: int = 4,
        n_blocks_global: int = 9,
        n_blocks_local: int = 3,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        if not isinstance(ngf, int) or ngf < 2 or ngf % 2:
            raise CnnzooError(
                f"ngf must be an even integer >= 2 (the local enhancer has ngf // 2), got {ngf!r}"
            )
        self.global_generator = ResnetGenerator(
            in_channels, out_channels, ngf, n_down_global, n_blocks_global, norm
        )
        # G1's head (c7s1-3) is not used when G2 enhances it: only its features are.
        self.global_generator.head = nn.Identity()
        self.local = ResnetGenerator(in_channels, out_channels, ngf // 2, 1, n_blocks_local, norm)
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.multiple = 2 ** (n_down_global + 1)

    def forward(self, x: Tensor) -> Tensor:
        """Return the full-resolution image (N, out_channels, H, W) in [-1, 1]."""
        h, w = x.shape[-2:]
        x = reflect_pad_to_multiple(x, self.multiple)
        global_features = self.global_generator.forward_features(self.downsample(x))
        local = self.local
        y = local.head(local.back(local.blocks(local.front(x) + global_features)))
        return y[..., :h, :w]


def _frozen_feature_net(
    perceptual: nn.Module | str | Path, model_name: str, channels: int
) -> nn.Module:
    """Return a frozen network mapping images to a list of feature maps."""
    from cnnzoo.models.features import FeatureExtractor
    from cnnzoo.models.weights import read_source_spec
    from cnnzoo.registry import create_model

    if isinstance(perceptual, (str, Path)):
        # A cnnzoo run or weight set knows its architecture and options; a bare file does not.
        spec = read_source_spec(perceptual)
        if spec is not None and "model" in spec:
            net = create_model(spec["model"], **spec.get("kwargs", {}), weights=perceptual)
        else:
            net = create_model(model_name, in_channels=channels, weights=perceptual)
    elif isinstance(perceptual, nn.Module):
        net = perceptual
    else:
        raise CnnzooError(
            f"perceptual must be a cnnzoo classifier, a feature network or a weights path, "
            f"got {type(perceptual).__name__}"
        )
    if not isinstance(net, FeatureExtractor) and hasattr(net, "feature_info"):
        net = FeatureExtractor(net)
    net.requires_grad_(False)
    return net.eval()


def _first_conv_channels(net: nn.Module) -> int | None:
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


@register_model(
    task="translation",
    paper=WANG_2018,
    input_size=(3, 64, 64),
    min_input_size=16,
    family="pix2pixhd",
    name="pix2pixhd",
)
class Pix2PixHD(TranslationGAN):
    """Coarse-to-fine generator and multi-scale conditional discriminators (paired data).

    Args:
        in_channels: channels of input images (ignored when ``label_nc > 0``).
        out_channels: channels of the generated images (default: ``in_channels``, or 3 for
            label maps).
        label_nc: number of classes of an int64 label-map input (0: the input is an image).
        ngf, n_down_global, n_blocks_global, n_blocks_local, norm: see :class:`LocalEnhancer`.
        ndf: discriminator width (64 in the paper).
        n_layers_d: stride-2 layers per PatchGAN (3).
        num_D: number of discriminator scales (3 in the paper; default 2 for small images).
        lambda_feat: weight of the feature-matching loss (10).
        perceptual: network for the perceptual loss (module or weights path), None: off.
        perceptual_model: registry name used to build ``perceptual`` from a weights file
            that is not a cnnzoo run (default ``"vgg16"``).
        lambda_perceptual: weight of the perceptual loss (10).
        lambda_l1: weight of an extra pixel L1 loss (0: off, as in the paper).

    Raises:
        CnnzooError: for bad sizes, weights or perceptual network.
    """

    directions = ("AB",)

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        label_nc: int = 0,
        ngf: int = 32,
        n_down_global: int = 3,
        n_blocks_global: int = 6,
        n_blocks_local: int = 3,
        ndf: int = 32,
        n_layers_d: int = 3,
        num_D: int = 2,  # noqa: N803  (pix2pixHD's name)
        norm: str = "instance",
        lambda_feat: float = 10.0,
        perceptual: nn.Module | str | Path | None = None,
        perceptual_model: str = "vgg16",
        lambda_perceptual: float = 10.0,
        lambda_l1: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(label_nc, int) or label_nc < 0:
            raise CnnzooError(f"label_nc must be an integer >= 0, got {label_nc!r}")
        if min(lambda_feat, lambda_perceptual, lambda_l1) < 0:
            raise CnnzooError(
                f"loss weights must be >= 0, got lambda_feat={lambda_feat}, "
                f"lambda_perceptual={lambda_perceptual}, lambda_l1={lambda_l1}"
            )
        if out_channels is None:
            out_channels = 3 if label_nc else in_channels
        self.label_nc = label_nc
        self.in_channels = label_nc or in_channels
        self.out_channels = out_channels
        self.lambda_feat = float(lambda_feat)
        self.lambda_perceptual = float(lambda_perceptual)
        self.lambda_l1 = float(lambda_l1)
        self.G = LocalEnhancer(
            self.in_channels, out_channels, ngf, n_down_global, n_blocks_global,
            n_blocks_local, norm,
        )  # fmt: skip
        self.D = MultiScaleDiscriminator(
            self.in_channels + out_channels, ndf, n_layers_d, num_D, norm
        )
        self.perceptual_net = (
            None
            if perceptual is None
            else _frozen_feature_net(perceptual, perceptual_model, out_channels)
        )

    def train(self, mode: bool = True) -> Pix2PixHD:
        """Set training mode; the perceptual network always stays in eval mode."""
        super().train(mode)
        if self.perceptual_net is not None:
            self.perceptual_net.eval()
        return self

    def condition(self, a: Tensor) -> Tensor:
        """Return the generator's input: ``a`` itself, or a label map one-hot encoded.

        Args:
            a: images (N, in_channels, H, W), or with ``label_nc > 0`` an integer label map
                (N, H, W) (or (N, 1, H, W)) of values in ``0 .. label_nc - 1``, or an
                already one-hot float map (N, label_nc, H, W).

        Raises:
            CnnzooError: for another shape, or labels outside the range.
        """
        if self.label_nc and not a.is_floating_point():
            if a.dim() == 4 and a.shape[1] == 1:
                a = a[:, 0]
            if a.dim() != 3:
                raise CnnzooError(
                    f"a label map must be (N, H, W) integers, got shape {tuple(a.shape)}"
                )
            if a.numel() and (int(a.min()) < 0 or int(a.max()) >= self.label_nc):
                raise CnnzooError(
                    f"labels must lie in 0..{self.label_nc - 1} (label_nc={self.label_nc}), "
                    f"got {int(a.min())}..{int(a.max())}"
                )
            return F.one_hot(a.long(), self.label_nc).permute(0, 3, 1, 2).float()
        if a.dim() != 4 or a.shape[1] != self.in_channels:
            what = f"{self.label_nc} one-hot channels" if self.label_nc else "images"
            raise CnnzooError(
                f"input 'A' must be {what} of shape (N, {self.in_channels}, H, W)"
                + (" or an int64 (N, H, W) label map" if self.label_nc else "")
                + f", got {tuple(a.shape)}"
            )
        return a

    def generator_parameters(self) -> list[nn.Parameter]:
        """Return the parameters of G1 and G2 (not the frozen perceptual network)."""
        return list(self.G.parameters())

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Return the parameters of every discriminator scale."""
        return list(self.D.parameters())

    def _pair(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        if not isinstance(batch, Mapping) or "A" not in batch:
            raise CnnzooError("a translation batch is a dict with 'A' and 'B'; missing 'A'")
        cond = self.condition(batch["A"])
        real_B = self.images(batch, "B", self.out_channels)
        if cond.shape[0] != real_B.shape[0] or cond.shape[-2:] != real_B.shape[-2:]:
            raise CnnzooError(
                f"pix2pixHD needs paired inputs of one size: A gives {tuple(cond.shape)}, "
                f"B is {tuple(real_B.shape)}"
            )
        return cond, real_B

    def generator_step(
        self, batch: Mapping[str, Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Generate B from A and score it with every discriminator scale.

        Returns:
            ``(losses, fakes)``: losses ``"loss"`` (their sum), ``"gan"`` (LSGAN, averaged
            over scales), ``"feature_matching"`` (lambda_feat x Eq. 4), and when enabled
            ``"perceptual"`` and ``"l1"``; fakes ``"fake_B"`` = G(A).

        Raises:
            CnnzooError: for a batch without paired ``"A"`` and ``"B"``.
        """
        cond, real_B = self._pair(batch)
        fake_B = self.G(cond)
        with frozen(self.D):
            feats_fake = self.D(torch.cat([cond, fake_B], 1))
            with torch.no_grad():
                feats_real = self.D(torch.cat([cond, real_B], 1))
        gan = lsgan_loss([f[-1] for f in feats_fake], True)
        fm = self.lambda_feat * feature_matching_loss(
            [f[:-1] for f in feats_fake], [f[:-1] for f in feats_real]
        )
        losses = {"gan": gan, "feature_matching": fm}
        if self.perceptual_net is not None and self.lambda_perceptual > 0:
            losses["perceptual"] = self.lambda_perceptual * self._perceptual(fake_B, real_B)
        if self.lambda_l1 > 0:
            losses["l1"] = self.lambda_l1 * F.l1_loss(fake_B, real_B)
        return {"loss": sum(losses.values()), **losses}, {"fake_B": fake_B}

    def _perceptual(self, fake: Tensor, real: Tensor) -> Tensor:
        net = self.perceptual_net
        assert net is not None
        wanted = _first_conv_channels(net)
        if wanted is not None and wanted != fake.shape[1]:
            if fake.shape[1] == 1:
                fake, real = fake.expand(-1, wanted, -1, -1), real.expand(-1, wanted, -1, -1)
            elif wanted == 1:
                fake, real = fake.mean(1, keepdim=True), real.mean(1, keepdim=True)
            else:
                raise CnnzooError(
                    f"the perceptual network takes {wanted} channels, the images have "
                    f"{fake.shape[1]}"
                )
        feats_fake = net(fake)
        with torch.no_grad():
            feats_real = net(real)
        if isinstance(feats_fake, Tensor):
            feats_fake, feats_real = [feats_fake], [feats_real]
        return feature_matching_loss(list(feats_fake), list(feats_real))

    def discriminator_step(
        self, batch: Mapping[str, Tensor], fakes: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Score real pairs against generated ones (detached) at every scale.

        Returns:
            ``"loss"`` (= real + fake), ``"real"``, ``"fake"``: each half the LSGAN loss
            averaged over scales.

        Raises:
            CnnzooError: for a batch or fakes missing their images.
        """
        cond, real_B = self._pair(batch)
        fake_B = self.images(fakes, "fake_B", self.out_channels).detach()
        real = 0.5 * lsgan_loss([f[-1] for f in self.D(torch.cat([cond, real_B], 1))], True)
        fake = 0.5 * lsgan_loss([f[-1] for f in self.D(torch.cat([cond, fake_B], 1))], False)
        return {"loss": real + fake, "real": real, "fake": fake}

    def translate(self, x: Tensor, direction: str = "AB") -> Tensor:
        """Return G(x) for an image or label map ``x`` (see :meth:`condition`), in [-1, 1].

        Raises:
            CnnzooError: for a direction other than ``"AB"`` or a bad input.
        """
        self.check_direction(direction)
        return self.G(self.condition(x))
