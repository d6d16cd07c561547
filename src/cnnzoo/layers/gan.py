"""Network blocks shared by the image-to-image translation GANs (CycleGAN, UNIT, pix2pix,
pix2pixHD); their training pieces (image pool, losses, the model contract) are in
:mod:`cnnzoo.layers.gan_training`.

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
Departure: the weight initialisation N(0, 0.02) (:func:`init_gan_weights`) is the authors'
code's (from DCGAN), not stated in the papers.
"""

from __future__ import annotations

from collections.abc import Callable

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
