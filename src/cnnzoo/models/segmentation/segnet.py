"""SegNet: an encoder-decoder that upsamples with the encoder's max-pooling indices.

Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder Architecture
for Image Segmentation", TPAMI 2017 (arXiv 1511.00561), Fig. 2 and Sec. 3. The encoder is the
13 convolutional layers of VGG16 with batch norm; each 2x2/2 max-pool also returns the
position of every maximum. The decoder mirrors the encoder: each stage max-unpools with the
indices of the matching encoder pool (values back at the argmax positions, zeros elsewhere,
no learned upsampling) and densifies the sparse map with 3x3 conv-BN-ReLU layers. A 1x1
convolution (the paper's "trainable soft-max classifier") gives the per-pixel logits.

Departure: the pools use ``ceil_mode=True`` and every unpool is given the exact size of the
map its encoder pool saw, so odd and small H, W need no padding and come back exactly (the
paper trains on fixed 360x480 CamVid images). VGG16's weights can be copied into the encoder
with :meth:`SegNet.load_vgg_encoder` (the paper initialises from ImageNet VGG16).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers import ConvBnAct
from cnnzoo.models.base import FeatureInfo, FeatureStage, init_weights_kaiming
from cnnzoo.registry import register_model

BADRINARAYANAN_2017 = (
    "Badrinarayanan, Kendall & Cipolla, SegNet: A Deep Convolutional Encoder-Decoder "
    "Architecture for Image Segmentation, TPAMI 2017"
)

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_DEPTHS = (2, 2, 3, 3, 3)


class MaxPoolEncoder(nn.Module):
    """One encoder stage: ``depth`` 3x3 conv-BN-ReLU, then a 2x2/2 max-pool that keeps indices.

    ``forward`` returns ``(pooled, indices, size_before_pooling)``.
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int) -> None:
        super().__init__()
        # bias=True as in VGG16-bn (torchvision's and cnnzoo's), so its weights load as they are.
        self.convs = nn.Sequential(
            *(
                ConvBnAct(in_channels if i == 0 else out_channels, out_channels, 3, bias=True)
                for i in range(depth)
            )
        )
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True, return_indices=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        x = self.convs(x)
        size = (x.shape[-2], x.shape[-1])
        pooled, indices = self.pool(x)
        return pooled, indices, size


class MaxUnpoolDecoder(nn.Module):
    """One decoder stage: max-unpool with the encoder's indices, then 3x3 conv-BN-ReLU layers.

    Args:
        in_channels: channels of the pooled map (and of the unpooled one).
        out_channels: channels of the last convolution (the next decoder stage's input).
        depth: number of convolutions; all but the last keep ``in_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int) -> None:
        super().__init__()
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.convs = nn.Sequential(
            *(
                ConvBnAct(in_channels, out_channels if i == depth - 1 else in_channels, 3)
                for i in range(depth)
            )
        )

    def forward(self, x: Tensor, indices: Tensor, size: tuple[int, int]) -> Tensor:
        """Place ``x`` at ``indices`` in a zero map of ``size``, then convolve."""
        return self.convs(self.unpool(x, indices, output_size=size))


class SegNet(nn.Module):
    """VGG16-bn encoder (5 :class:`MaxPoolEncoder`) and its mirror (5 :class:`MaxUnpoolDecoder`).

    Args:
        num_classes: classes predicted per pixel.
        in_channels: input image channels.
        widths: channels of each encoder stage (VGG16: 64, 128, 256, 512, 512).
        depths: convolutions per stage (VGG16: 2, 2, 3, 3, 3); decoders mirror them.

    Raises:
        CnnzooError: if ``widths`` and ``depths`` differ in length or are empty.
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        widths: Sequence[int] = VGG16_WIDTHS,
        depths: Sequence[int] = VGG16_DEPTHS,
    ) -> None:
        super().__init__()
        if not widths or len(widths) != len(depths):
            raise CnnzooError(
                f"SegNet needs one depth per stage width, got widths {tuple(widths)} and "
                f"depths {tuple(depths)}"
            )
        self.num_classes = num_classes
        ins = [in_channels, *widths[:-1]]
        self.encoder = nn.ModuleList(
            MaxPoolEncoder(c_in, c_out, d)
            for c_in, c_out, d in zip(ins, widths, depths, strict=True)
        )
        # Decoder i mirrors encoder i: it ends at encoder i's input width (stage 0: widths[0],
        # as the paper's last decoder feeds the classifier with 64 channels).
        outs = [widths[0], *widths[:-1]]
        self.decoder = nn.ModuleList(
            MaxUnpoolDecoder(c, c_out, d) for c, c_out, d in zip(widths, outs, depths, strict=True)
        )
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)
        # Each encoder stage's convolutions, before its pooling (a tensor, not the tuple the
        # stage returns), shallow to deep.
        self.feature_info = FeatureInfo(
            FeatureStage(f"encoder.{i}.convs", c, 2**i) for i, c in enumerate(widths)
        )
        init_weights_kaiming(self)

    def forward(self, x: Tensor) -> Tensor:
        """Return per-pixel logits (N, num_classes, H, W) at the input's size."""
        skips = []
        for stage in self.encoder:
            x, indices, size = stage(x)
            skips.append((indices, size))
        for stage, (indices, size) in zip(reversed(self.decoder), reversed(skips), strict=True):
            x = stage(x, indices, size)
        return self.classifier(x)

    def load_encoder_weights(self, source: str | Path, architecture: str | None = None) -> Any:
        """Fill the encoder from a VGG-bn classifier's weights (or a ``convnet``'s, whose stages
        are VGG's), as the paper initialises it from ImageNet's VGG16: the weights are loaded
        into that classifier (first convolution adapted to this model's input channels), whose
        convolutions are then copied.

        Args:
            source: a weight set's name, a cnnzoo run directory or a weights file.
            architecture: the ``vgg*_bn`` the weights belong to, when ``source`` does not say
                (a bare torchvision ``.pth``).

        Returns:
            The :class:`~cnnzoo.models.weights.LoadReport` of the VGG.

        Raises:
            CnnzooError: if the architecture is unknown, or the weights or the VGG do not fit.
        """
        from cnnzoo.models.weights import load_weights, read_source_spec
        from cnnzoo.registry import create_model

        spec = read_source_spec(source) or {}
        name = spec.get("model") or architecture
        if name is None:
            raise CnnzooError(
                f"--backbone-weights {source} does not say which VGG it holds: pass --backbone "
                "vgg16_bn (or the vgg*_bn it is)"
            )
        kwargs = {k: v for k, v in spec.get("kwargs", {}).items()
                  if k not in ("num_classes", "in_channels")}  # fmt: skip
        in_channels = self.encoder[0].convs[0].conv.in_channels
        vgg = create_model(name, in_channels=in_channels, **kwargs)
        report = load_weights(vgg, source)
        self.load_vgg_encoder(vgg)
        return report

    def load_vgg_encoder(self, vgg: nn.Module) -> None:
        """Copy a cnnzoo VGG-bn classifier's convolutions and batch norms into the encoder.

        Args:
            vgg: e.g. ``cnnzoo.create_model("vgg16_bn", weights=...)``, or any classifier
                whose ``stages`` are conv-BN-ReLU blocks and a pool, such as ``convnet``
                (its bias-free convolutions load with a zero bias); its ``stages`` must have
                this encoder's widths and depths.

        Raises:
            CnnzooError: if the VGG's stages do not match the encoder's.
        """
        stages = getattr(vgg, "stages", None)
        if stages is None or len(stages) != len(self.encoder):
            raise CnnzooError(
                f"expected a VGG with {len(self.encoder)} stages (a cnnzoo vgg*_bn or convnet "
                f"model), got {type(vgg).__name__}"
            )
        for i, (source, target) in enumerate(zip(stages, self.encoder, strict=True)):
            convs = [m for m in source if isinstance(m, ConvBnAct)]
            if len(convs) != len(target.convs):
                raise CnnzooError(
                    f"VGG stage {i} has {len(convs)} convolutions, SegNet's encoder "
                    f"{len(target.convs)}: build SegNet with the VGG's depths"
                )
            for src, dst in zip(convs, target.convs, strict=True):
                state = src.state_dict()
                if "conv.bias" not in state and dst.conv.bias is not None:
                    # A bias-free conv before BN (convnet's) is the same as a zero bias.
                    state["conv.bias"] = dst.conv.bias.detach().new_zeros(dst.conv.bias.shape)
                try:
                    dst.load_state_dict(state)
                except RuntimeError as err:
                    raise CnnzooError(
                        f"VGG stage {i} does not fit SegNet's encoder (use a vgg*_bn or "
                        "convnet model with the same widths): "
                        f"{str(err).splitlines()[-1].strip()}"
                    ) from None


@register_model(
    task="segmentation",
    paper=BADRINARAYANAN_2017,
    input_size=(3, 128, 128),
    min_input_size=1,
    family="segnet",
)
def segnet(
    num_classes: int = 21,
    in_channels: int = 3,
    widths: Sequence[int] = VGG16_WIDTHS,
    depths: Sequence[int] = VGG16_DEPTHS,
) -> SegNet:
    """SegNet with a VGG16-bn encoder (13 convolutions, 5 index-keeping max-pools)."""
    return SegNet(num_classes, in_channels, tuple(widths), tuple(depths))
