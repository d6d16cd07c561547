"""Blocks shared by the image-to-image translation GANs (CycleGAN, UNIT, pix2pix, pix2pixHD).

* :class:`ResnetGenerator`: Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time Style
  Transfer and Super-Resolution", ECCV 2016, in the notation of Zhu, Park, Isola & Efros,
  "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks", ICCV
  2017 (appendix 7.2): ``c7s1-k`` (7x7 conv, stride 1, reflection padding, InstanceNorm,
  ReLU), ``d-k`` (3x3 conv, stride 2, InstanceNorm, ReLU), ``R-k`` (residual block of two
  3x3 convs with reflection padding), ``u-k`` (3x3 fractional-strided conv, stride 1/2,
  InstanceNorm, ReLU), and a last ``c7s1-C`` with tanh. CycleGAN's 256-px generator is
  ``c7s1-64, d128, d256, R256 x 9, u128, u64, c7s1-3``. pix2pixHD's global generator and
  local enhancer are the same pieces with other counts, so the generator is split into
  ``front`` (c7s1-k and the d-k), ``blocks`` (the R-k), ``back`` (the u-k) and ``head``.
* :class:`PatchDiscriminator`: the "70x70 PatchGAN" of Isola, Zhu, Zhou & Efros,
  "Image-to-Image Translation with Conditional Adversarial Networks", CVPR 2017 (appendix
  6.1.2): ``C64-C128-C256-C512`` of 4x4 convs with LeakyReLU 0.2, no norm on C64, then a
  conv to one channel: a map of logits, one per overlapping 70x70 patch. As in the authors'
  code the first ``n_layers`` convs have stride 2 and the last two stride 1.
* :class:`MultiScaleDiscriminator`: Wang, Liu, Zhu, Tao, Kautz & Catanzaro, "High-Resolution
  Image Synthesis and Semantic Manipulation with Conditional GANs", CVPR 2018 (Sec. 3.2):
  ``num_D`` identical PatchGANs on the image downsampled by 3x3/2 average pooling; each
  returns its intermediate features for the feature-matching loss (Eq. 4).
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

Departure: the weight initialisation N(0, 0.02) (:func:`init_gan_weights`) is the authors'
code's (from DCGAN), not stated in the papers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers.conv import ConvBnAct

NORMS = ("instance", "batch", "none")
GAN_MODES = ("lsgan", "vanilla")
DIRECTIONS = ("AB", "BA")

NormLayer = Callable[[int], nn.Module]


def norm_layer(kind: str) -> NormLayer | None:
    """Return the norm-layer factory for ``kind`` (``"instance"``, ``"batch"`` or ``"none"``).

    InstanceNorm has no affine parameters and no running statistics, as in CycleGAN
    (Ulyanov, Vedaldi & Lempitsky, "Instance Normalization", 2016).

    Returns:
        A callable ``channels -> nn.Module``, or None for ``"none"``.

    Raises:
        CnnzooError: for an unknown ``kind``.
    """
    if kind == "instance":
        return nn.InstanceNorm2d
    if kind == "batch":
        return nn.BatchNorm2d
    if kind == "none":
        return None
    raise CnnzooError(f"unknown norm {kind!r}; expected one of {NORMS}")


def leaky_relu() -> nn.Module:
    """Return the discriminators' activation, LeakyReLU with slope 0.2."""
    return nn.LeakyReLU(0.2, inplace=True)


def init_gan_weights(module: nn.Module, std: float = 0.02) -> None:
    """Initialise convolutions with N(0, std) and norm scales with N(1, std), biases at zero.

    Radford et al. (DCGAN) sec. 4, kept by the authors' code for CycleGAN, pix2pix and
    pix2pixHD; linear layers (DCGAN's projection) get N(0, std) too, embeddings keep
    PyTorch's N(0, 1). Modifies in place.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


def _positive(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or value < minimum:
        raise CnnzooError(f"{name} must be an integer >= {minimum}, got {value!r}")


# -- generator pieces (Johnson et al. 2016 / CycleGAN appendix 7.2 notation) ---------------
class C7s1(nn.Sequential):
    """``c7s1-k``: reflection pad 3, 7x7 conv stride 1, norm, ReLU (or ``act_layer``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm: str = "instance",
        act_layer: Callable[[], nn.Module] | None = nn.ReLU,
    ) -> None:
        super().__init__(
            nn.ReflectionPad2d(3),
            ConvBnAct(
                in_channels,
                out_channels,
                7,
                padding=0,
                norm_layer=norm_layer(norm),
                act_layer=act_layer,
            ),
        )


class Down(ConvBnAct):
    """``d-k``: 3x3 conv with stride 2, norm, ReLU (halves height and width)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "instance") -> None:
        super().__init__(in_channels, out_channels, 3, 2, padding=1, norm_layer=norm_layer(norm))


class Up(nn.Sequential):
    """``u-k``: 3x3 fractional-strided (transposed) conv with stride 1/2, norm, ReLU.

    ``output_padding=1`` makes the output exactly twice the input's size.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = "instance") -> None:
        layer = norm_layer(norm)
        super().__init__(
            nn.ConvTranspose2d(
                in_channels, out_channels, 3, 2, padding=1, output_padding=1, bias=layer is None
            ),
            layer(out_channels) if layer is not None else nn.Identity(),
            nn.ReLU(inplace=True),
        )


class ResnetBlock(nn.Module):
    """``R-k``: ``x + F(x)``, F = reflection pad, 3x3 conv, norm, ReLU, reflection pad, 3x3 conv,
    norm. No activation after the sum (Johnson et al. 2016, supplementary; CycleGAN code).

    Args:
        channels: ``k``, channels of input and output.
        norm: ``"instance"`` (default), ``"batch"`` or ``"none"``.
        dropout: dropout between the two convolutions (0: none, as in the papers).
    """

    def __init__(self, channels: int, norm: str = "instance", dropout: float = 0.0) -> None:
        super().__init__()
        layer = norm_layer(norm)
        self.branch = nn.Sequential(
            nn.ReflectionPad2d(1),
            ConvBnAct(channels, channels, 3, padding=0, norm_layer=layer),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.ReflectionPad2d(1),
            ConvBnAct(channels, channels, 3, padding=0, norm_layer=layer, act_layer=None),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x + F(x)``, the input's shape."""
        return x + self.branch(x)


class ResnetGenerator(nn.Module):
    """``c7s1-ngf, d-2ngf, ..., R x n_blocks, ..., u-ngf, c7s1-out`` with tanh.

    Args:
        in_channels: channels of the input image (or one-hot label map).
        out_channels: channels of the output image.
        ngf: ``k`` of the first ``c7s1-k`` (64 in the papers); every ``d-k`` doubles it.
        n_down: number of ``d-k`` (and of ``u-k``); 2 in CycleGAN, 4 in pix2pixHD's G1.
        n_blocks: number of ``R-k`` (6 for 128 px, 9 for 256 px in CycleGAN).
        norm: ``"instance"`` (the papers'), ``"batch"`` or ``"none"``.

    Attributes:
        front, blocks, back, head: the four parts (see the module docstring).
        multiple: H and W are reflection-padded to a multiple of this (``2 ** n_down``) in
            :meth:`forward`, and the output cropped back, so any size works.

    Raises:
        CnnzooError: for non-positive widths or negative counts, or an unknown norm.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ngf: int = 64,
        n_down: int = 2,
        n_blocks: int = 9,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("in_channels", in_channels, 1),
            ("out_channels", out_channels, 1),
            ("ngf", ngf, 1),
            ("n_down", n_down, 0),
            ("n_blocks", n_blocks, 0),
        ):
            _positive(name, value, low)
        widths = [ngf * 2**i for i in range(n_down + 1)]
        self.front = nn.Sequential(
            C7s1(in_channels, ngf, norm),
            *(Down(widths[i], widths[i + 1], norm) for i in range(n_down)),
        )
        self.blocks = nn.Sequential(*(ResnetBlock(widths[-1], norm) for _ in range(n_blocks)))
        self.back = nn.Sequential(
            *(Up(widths[i + 1], widths[i], norm) for i in reversed(range(n_down)))
        )
        self.head = nn.Sequential(C7s1(ngf, out_channels, norm="none", act_layer=None), nn.Tanh())
        self.multiple = 2**n_down
        self.feature_channels = ngf
        init_gan_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the last feature map before ``head`` (N, ngf, H, W); H, W multiples of
        :attr:`multiple`."""
        return self.back(self.blocks(self.front(x)))

    def forward(self, x: Tensor) -> Tensor:
        """Return the generated image (N, out_channels, H, W) in [-1, 1]."""
        h, w = x.shape[-2:]
        y = self.head(self.forward_features(reflect_pad_to_multiple(x, self.multiple)))
        return y[..., :h, :w]


def reflect_pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad ``x`` on the bottom and right so H and W are multiples of ``multiple``.

    Reflection padding where the image is large enough, replication otherwise (reflection
    cannot pad more than the size minus one).
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not pad_h and not pad_w:
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


# -- discriminators ------------------------------------------------------------------------
class PatchDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` strided 4x4 convs, one more at stride 1, a 1-channel 4x4 conv.

    With ``n_layers=3`` (the default) this is the paper's 70x70 PatchGAN ``C64-C128-C256-C512``:
    each logit sees a 70x70 patch. Widths double per layer up to ``8 * ndf``.

    Args:
        in_channels: channels of the input (conditional discriminators: condition + image).
        ndf: width of the first conv (64 in the papers).
        n_layers: number of stride-2 convs (3: 70x70 patches, 1: 16x16, 2: 34x34).
        norm: ``"instance"`` (CycleGAN, pix2pixHD), ``"batch"`` (pix2pix) or ``"none"``.
        padding: zero padding of every conv: 1 (pix2pix/CycleGAN code) gives a 30x30 map
            at 256 px; 2 (pix2pixHD code) gives a map for any input size.

    Output: :meth:`forward` returns the logit map (N, 1, H', W'); :meth:`features` the output
    of every layer, the logit map last. For padding 1 and ``n_layers=3`` a 32-px input gives
    a 2x2 map (32 -> 16 -> 8 -> 4 -> 3 -> 2).

    Raises:
        CnnzooError: for bad widths or counts; in forward, for an input too small to leave
            a map (see :meth:`output_size`).
    """

    def __init__(
        self,
        in_channels: int,
        ndf: int = 64,
        n_layers: int = 3,
        norm: str = "instance",
        padding: int = 1,
    ) -> None:
        super().__init__()
        _positive("in_channels", in_channels)
        _positive("ndf", ndf)
        _positive("n_layers", n_layers)
        _positive("padding", padding, 0)
        layer = norm_layer(norm)
        self.padding = padding
        self.strides = [2] * n_layers + [1, 1]
        widths = [in_channels] + [ndf * min(2**i, 8) for i in range(n_layers + 1)]
        layers = [
            # No norm on the first layer (pix2pix appendix 6.1.2).
            ConvBnAct(widths[0], widths[1], 4, 2, padding, norm_layer=None, act_layer=leaky_relu)
        ]
        for i in range(1, n_layers + 1):
            stride = self.strides[i]
            layers.append(
                ConvBnAct(
                    widths[i],
                    widths[i + 1],
                    4,
                    stride,
                    padding,
                    norm_layer=layer,
                    act_layer=leaky_relu,
                )
            )
        layers.append(nn.Conv2d(widths[-1], 1, 4, 1, padding))
        self.layers = nn.ModuleList(layers)
        init_gan_weights(self)

    def output_size(self, size: int) -> int:
        """Return the logit map's side for an input side ``size`` (<= 0: too small)."""
        for stride in self.strides:
            if size <= 0:
                return 0
            size = (size + 2 * self.padding - 4) // stride + 1
        return size

    def features(self, x: Tensor) -> list[Tensor]:
        """Return the output of every layer, shallow to deep; the last is the logit map.

        Raises:
            CnnzooError: if ``x`` is too small for this discriminator.
        """
        h, w = x.shape[-2:]
        if min(self.output_size(h), self.output_size(w)) < 1:
            raise CnnzooError(
                f"input of {h}x{w} is too small for a PatchGAN with {len(self.strides) - 2} "
                f"stride-2 layers and padding {self.padding}; use larger images or fewer "
                "layers (n_layers)"
            )
        out = []
        for layer in self.layers:
            x = layer(x)
            out.append(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Return the logit map (N, 1, H', W'), one logit per patch."""
        return self.features(x)[-1]


class MultiScaleDiscriminator(nn.Module):
    """``num_D`` PatchGANs of the same architecture, D_k on the input downsampled k times.

    pix2pixHD Sec. 3.2 (3 scales in the paper); downsampling is 3x3 average pooling with
    stride 2 (padding 1, padding not counted), as in the authors' code.

    Args:
        in_channels, ndf, n_layers, norm, padding: of each :class:`PatchDiscriminator`;
            padding defaults to 2, pix2pixHD's, so the coarsest scale still gives a map.
        num_D: number of scales.

    Output: :meth:`forward` returns, finest scale first, each scale's list of layer outputs
    (the logit map last): ``out[k][-1]`` is D_k's logit map, of about half the size of
    ``out[k - 1][-1]``.
    """

    def __init__(
        self,
        in_channels: int,
        ndf: int = 64,
        n_layers: int = 3,
        num_D: int = 3,  # noqa: N803  (pix2pixHD's name)
        norm: str = "instance",
        padding: int = 2,
    ) -> None:
        super().__init__()
        _positive("num_D", num_D)
        self.discriminators = nn.ModuleList(
            PatchDiscriminator(in_channels, ndf, n_layers, norm, padding) for _ in range(num_D)
        )
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    @property
    def num_D(self) -> int:  # noqa: N802
        """Number of scales."""
        return len(self.discriminators)

    def forward(self, x: Tensor) -> list[list[Tensor]]:
        """Return every scale's layer outputs (finest first), each list ending in logits."""
        out = []
        for k, disc in enumerate(self.discriminators):
            if k:
                x = self.downsample(x)
            out.append(disc.features(x))
        return out


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
        _positive("size", size, 0)
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
