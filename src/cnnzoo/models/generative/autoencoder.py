"""Convolutional autoencoder: an encoder down to a small code, a decoder back to the image.

The lecture's autoencoder: no labels, an information bottleneck, useful for compression,
denoising and for pre-training the encoder of a supervised model.

* Hinton & Salakhutdinov, "Reducing the Dimensionality of Data with Neural Networks",
  Science 2006: a deep encoder to a low-dimensional code ``z = f(x)``, a decoder
  ``x^ = g(z)``, trained to minimise the reconstruction error ``||x - g(f(x))||^2``.
* Masci, Meier, Ciresan & Schmidhuber, "Stacked Convolutional Auto-Encoders for Hierarchical
  Feature Extraction", ICANN 2011: the same with convolutional layers, whose encoder then
  initialises a CNN classifier.

:class:`ConvAutoencoder` (``conv_ae``): the encoder is a stack of stride-2 3x3
conv-BN-ReLU stages (or, with ``backbone=NAME``, the deepest feature map of any registered
classifier), flattened and projected by a linear layer to the ``latent`` code. The decoder
mirrors it: a linear layer back to the encoder map's shape, one 4x4 stride-2 transposed
conv-BN-ReLU per halving (:class:`ConvTransposeBnAct`), a 3x3 convolution to the image
channels and a sigmoid, so reconstructions lie in [0, 1] like the inputs.

Departures: both papers train layer-wise (Hinton & Salakhutdinov pre-train RBMs; Masci et al.
stack one-layer CAEs with max-pooling); here the whole network is trained end to end by
back-propagation with batch normalisation, and downsampling is by stride, not pooling. Sizes
that are not a power of two (28 = 4 x 7) need no special case: each stride-2 stage rounds up
(28 -> 14 -> 7, 30 -> 15 -> 8), each transposed stage doubles, and the output is cropped to
the input size at the bottom and right, where the rounding added pixels.

Denoising (Vincent et al. 2008) is a training concern: corrupt the input with
:func:`cnnzoo.models.generative.noise.corrupt` and compare the output with the clean image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers import ConvBnAct
from cnnzoo.models.backbones import build_backbone
from cnnzoo.models.base import init_weights_kaiming
from cnnzoo.models.features import FeatureExtractor
from cnnzoo.models.meta import shapes_only
from cnnzoo.registry import register_model

HINTON_MASCI = (
    "Hinton & Salakhutdinov, Reducing the Dimensionality of Data with Neural Networks, "
    "Science 2006; Masci et al., Stacked Convolutional Auto-Encoders for Hierarchical "
    "Feature Extraction, ICANN 2011"
)


# -- shared pieces (also used by vae.py and dcgan.py) ---------------------------------------
def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an integer >= 1.

    Raises:
        CnnzooError: otherwise, naming the argument and the value.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CnnzooError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    """Return ``widths`` as a non-empty tuple of positive integers.

    Raises:
        CnnzooError: for an empty sequence or a width that is not a positive integer.
    """
    widths = tuple(widths)
    if not widths:
        raise CnnzooError("widths is empty; give at least one stage width, e.g. (32, 64)")
    for width in widths:
        check_positive_int("each of widths", width)
    return widths


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Run the block in eval mode without gradients, then restore every submodule's mode.

    Inference helpers (``sample``, ``reconstruct``) use it so that a call in the middle of
    training neither updates batch-norm statistics nor depends on the batch composition.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode


class ConvTransposeBnAct(nn.Sequential):
    """``ConvTranspose2d -> BatchNorm2d -> activation``; by default 4x4, stride 2, padding 1,
    which exactly doubles H and W (the DCGAN generator's "fractionally-strided" layer).

    Children are named ``deconv``, ``bn``, ``act``; the convolution has no bias when a norm
    layer follows.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 4,
        stride: int = 2,
        padding: int = 1,
        norm: bool = True,
        act_layer: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(
            in_channels, out_channels, kernel_size, stride, padding, bias=not norm
        )
        if norm:
            self.bn = nn.BatchNorm2d(out_channels)
        if act_layer is not None:
            self.act = act_layer(inplace=True) if act_layer is nn.ReLU else act_layer()


class ConvEncoder(nn.Sequential):
    """One stride-2 3x3 conv-BN-ReLU per width: (N, C, H, W) -> (N, widths[-1], H/2^k, W/2^k),
    each halving rounded up. Its stages are ``stages.0``, ``stages.1``, ...
    """

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        channels = (in_channels, *widths)
        self.stages = nn.Sequential(
            *(
                ConvBnAct(c_in, c_out, 3, stride=2)
                for c_in, c_out in zip(channels[:-1], widths, strict=True)
            )
        )


def encoder_map_size(image_size: int, stages: int) -> int:
    """Return the side of the map after ``stages`` stride-2 3x3 convolutions with padding 1."""
    for _ in range(stages):
        image_size = (image_size + 1) // 2
    return image_size


class ConvDecoder(nn.Module):
    """Code ``z`` -> linear + ReLU to a (C, h, w) map -> transposed conv-BN-ReLU steps (x2
    each) -> 3x3 conv to ``out_channels`` -> crop to ``image_size``. Returns pre-activation
    outputs (the autoencoder applies a sigmoid; the VAE reads them as Bernoulli logits).

    Args:
        latent: size of the code.
        map_shape: (channels, height, width) of the first map.
        up_widths: output channels of each x2 step; their number sets the upsampling.
        out_channels: image channels.
        image_size: output height and width.
    """

    def __init__(
        self,
        latent: int,
        map_shape: tuple[int, int, int],
        up_widths: Sequence[int],
        out_channels: int,
        image_size: int,
    ) -> None:
        super().__init__()
        self.map_shape = tuple(map_shape)
        self.image_size = image_size
        channels = map_shape[0]
        self.project = nn.Sequential(nn.Linear(latent, math.prod(map_shape)), nn.ReLU(inplace=True))
        steps = []
        for width in up_widths:
            steps.append(ConvTransposeBnAct(channels, width))
            channels = width
        self.up = nn.Sequential(*steps)
        self.head = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        """Return (N, out_channels, image_size, image_size) pre-activation outputs."""
        x = self.project(z).view(z.shape[0], *self.map_shape)
        x = self.head(self.up(x))
        size = self.image_size
        if x.shape[-1] < size or x.shape[-2] < size:  # only for odd backbone reductions
            return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x[..., :size, :size]


def _map_shape(encoder: nn.Module, in_channels: int, image_size: int) -> tuple[int, int, int]:
    """Return (C, H, W) of the encoder's deepest map for one image, computed on the meta device
    (shapes only: no arithmetic, and the real weights and BN statistics are left untouched)."""
    state = {
        name: torch.empty_like(t, device="meta")
        for name, t in (*encoder.named_parameters(), *encoder.named_buffers())
    }
    x = torch.zeros(2, in_channels, image_size, image_size, device="meta")
    try:
        with shapes_only(build=False):
            out = torch.func.functional_call(encoder, state, (x,))
    except RuntimeError as err:
        raise CnnzooError(
            f"the encoder cannot take {image_size}x{image_size} inputs "
            f"({str(err).splitlines()[0]}); use a larger image_size"
        ) from None
    if isinstance(out, (list, tuple)):
        out = out[-1]
    return tuple(out.shape[1:])  # type: ignore[return-value]


class ConvAutoencoder(nn.Module):
    """Encoder -> ``latent`` code -> decoder, reconstructing (N, C, S, S) images in [0, 1].

    Args:
        in_channels: image channels.
        image_size: height and width of the images (fixed: the code is a flat vector).
        latent: size of the bottleneck code.
        widths: the plain encoder's stage widths (default (32, 64)); with a ``backbone``,
            they are passed to the backbone builder as its ``widths`` (when not None).
        backbone: a registered classifier whose deepest feature map is the encoder, or None
            for the plain stride-2 stack.
        **backbone_kwargs: further options of the backbone builder (e.g. ``small_input``).

    Attributes:
        encoder: :class:`ConvEncoder` or the backbone's :class:`FeatureExtractor`.
        encoder_backbone: the :class:`FeatureExtractor` when a backbone is used, else None.
        to_latent: flatten + linear from the encoder map to the code.
        decoder: :class:`ConvDecoder`.

    Raises:
        CnnzooError: for a latent, width or image size that is not a positive integer, an
            image too small for the encoder, or backbone options without a backbone.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        latent: int = 32,
        widths: Sequence[int] | None = None,
        backbone: str | None = None,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("image_size", image_size)
        check_positive_int("latent", latent)
        self.in_channels, self.image_size, self.latent = in_channels, image_size, latent
        self.encoder_backbone: FeatureExtractor | None = None
        if backbone is None:
            if backbone_kwargs:
                raise CnnzooError(
                    f"options {sorted(backbone_kwargs)} are for a backbone, but backbone is "
                    "None; pass backbone=NAME (e.g. 'convnet') or drop them"
                )
            widths = check_widths((32, 64) if widths is None else widths)
            self.encoder: nn.Module = ConvEncoder(in_channels, widths)
            map_shape = _map_shape(self.encoder, in_channels, image_size)
            # Mirror of the encoder: back through its widths, ending at the first one.
            up_widths = [*widths[-2::-1], widths[0]]
        else:
            if widths is not None:
                backbone_kwargs["widths"] = tuple(widths)
            self.encoder_backbone = build_backbone(
                backbone, in_channels, (None,), **backbone_kwargs
            )
            self.encoder = self.encoder_backbone
            map_shape = _map_shape(self.encoder, in_channels, image_size)
            # As many x2 steps as cover the backbone's reduction, halving the channels
            # (down to 16) like the segmentation decoders.
            steps = max(math.ceil(math.log2(image_size / map_shape[1])), 0)
            up_widths = [max(map_shape[0] // 2 ** (i + 1), 16) for i in range(steps)]
        self.to_latent = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(map_shape), latent))
        self.decoder = ConvDecoder(latent, map_shape, up_widths, in_channels, image_size)
        if backbone is None:
            init_weights_kaiming(self, linear_std=None)
        else:  # the backbone keeps its own initialisation
            init_weights_kaiming(self.to_latent, linear_std=None)
            init_weights_kaiming(self.decoder, linear_std=None)
        # He init scales for a following ReLU; before the sigmoid it would start saturated
        # (outputs near 0 or 1, vanishing gradients): the output layer keeps PyTorch's.
        self.decoder.head.reset_parameters()

    def _check_input(self, x: Tensor) -> None:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise CnnzooError(
                f"this autoencoder takes images (N, {', '.join(map(str, expected))}), got "
                f"{tuple(x.shape)}; build it with the data's in_channels and image_size"
            )

    def encode(self, x: Tensor) -> Tensor:
        """Return the codes ``z`` (N, latent) of images ``x`` (N, C, S, S).

        Raises:
            CnnzooError: for images of another shape than the model was built for.
        """
        self._check_input(x)
        features = self.encoder(x)
        if isinstance(features, list):
            features = features[-1]
        return self.to_latent(features)

    def decode(self, z: Tensor) -> Tensor:
        """Return images (N, C, S, S) in [0, 1] decoded from codes ``z`` (N, latent)."""
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: Tensor) -> Tensor:
        """Return the reconstruction ``decode(encode(x))``, (N, C, S, S) in [0, 1]."""
        return self.decode(self.encode(x))

    def reconstruct(self, x: Tensor) -> Tensor:
        """Return the reconstruction of ``x`` in eval mode without gradients (the model's
        train/eval modes are restored afterwards)."""
        with evaluating(self):
            return self(x)

    def loss(self, x_hat: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Return ``{"loss", "mse", "psnr"}`` of reconstructions against clean targets.

        ``loss`` = ``mse``: mean squared error over all values (differentiable); ``psnr``:
        ``10 log10(1 / MSE_i)`` in dB per image (peak value 1), averaged over the images,
        detached.
        """
        mse = F.mse_loss(x_hat, target)
        per_image = (x_hat.detach() - target).pow(2).flatten(1).mean(dim=1)
        psnr = (10 * torch.log10(1 / per_image.clamp_min(1e-10))).mean()
        return {"loss": mse, "mse": mse.detach(), "psnr": psnr}

    def encoder_state(self) -> dict[str, Tensor]:
        """Return the encoder's weights, to initialise a supervised model (the lecture's
        pre-training use).

        With a backbone, the keys are the classifier's own (e.g. ``stages.0.0.conv.weight``
        of ``convnet``): ``clf = create_model(backbone, num_classes=10, in_channels=C,
        **same_backbone_kwargs)`` then ``clf.load_state_dict(ae.encoder_state(),
        strict=False)`` fills everything but the head (the missing keys are exactly the
        head's). With the plain stack, the keys are ``stages.{i}.conv.weight``,
        ``stages.{i}.bn.*``: they fill any network whose ``stages`` are the same stride-2
        :class:`~cnnzoo.layers.ConvBnAct` stack (e.g. a :class:`ConvEncoder` under a head).

        Returns:
            A state dict of detached tensors (shared with the model, not copies).
        """
        if self.encoder_backbone is not None:
            return dict(self.encoder_backbone.model.state_dict())
        return dict(self.encoder.state_dict())


@register_model(
    task="reconstruction",
    paper=HINTON_MASCI,
    input_size=(1, 28, 28),
    min_input_size=16,
    family="autoencoder",
)
def conv_ae(
    in_channels: int = 1,
    image_size: int = 28,
    latent: int = 32,
    widths: Sequence[int] | None = None,
    backbone: str | None = None,
    **backbone_kwargs: Any,
) -> ConvAutoencoder:
    """Convolutional autoencoder: stride-2 conv stack (or a backbone) -> code -> decoder."""
    return ConvAutoencoder(in_channels, image_size, latent, widths, backbone, **backbone_kwargs)
