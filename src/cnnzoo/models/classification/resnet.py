"""ResNet-18/34/50/101/152 for ImageNet.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, Table 1:
a 7x7/2 convolution and a 3x3/2 max-pool (conv1), four stages of residual blocks (conv2_x to
conv5_x, 64 to 512 channels, each after the first halving the resolution), global average
pooling and one fully-connected layer. Shortcuts are identities, with projections (option B)
where the shape changes. Bottleneck blocks are "v1.5" (stride on the 3x3), as in torchvision,
whose ImageNet weights load with :func:`cnnzoo.load_torchvision_weights`.

``residual=False`` removes every skip connection: the paper's "plain" networks (Fig. 3,
middle), registered in :mod:`cnnzoo.models.classification.plain`.

``replace_stride_with_dilation`` (torchvision's option of the same name) builds a dilated
ResNet for dense prediction (PSPNet, DeepLab): a flagged stage keeps its input's resolution,
its 3x3 convolutions dilated instead (by 2, doubled at each further flagged stage), so the
receptive field grows as with the stride. ``(False, True, True)`` gives output stride 8.
The weights are the same tensors, so ImageNet weights load into a dilated ResNet too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers import BasicBlock, Bottleneck, ConvBnAct, ProjectionShortcut
from cnnzoo.layers.residual import ShortcutLayer
from cnnzoo.models.base import FeatureInfo, FeatureStage, ImageClassifier, init_weights_kaiming
from cnnzoo.registry import register_imagenet_classifier

HE_2016 = "He, Zhang, Ren, Sun, Deep Residual Learning for Image Recognition, CVPR 2016"

Block = type[BasicBlock] | type[Bottleneck]
Builder = Callable[..., "ResNet"]

# torchvision's names inside a block: conv{k}/bn{k} and downsample.{0 conv, 1 bn}.
_TV_BLOCK_KEY = re.compile(r"layer(\d)\.(\d+)\.(conv|bn|downsample\.)(\d)\.(.+)")


class ResNet(ImageClassifier):
    """Stem, stages of residual blocks, global average pooling, fully-connected classifier.

    Args:
        block: :class:`BasicBlock` (ResNet-18/34) or :class:`Bottleneck` (50/101/152).
        layers: number of blocks in each stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: outputs of the classifier.
        in_channels: channels of the input image.
        small_input: replace the 7x7/2 convolution + max-pool stem by a 3x3/1 convolution
            without pooling, for 28x28 or 32x32 images (total stride 8 instead of 32).
        zero_init_residual: start each block's last BN scale at zero (see
            :meth:`BasicBlock.zero_init_last_bn`).
        residual: False removes the skip connections (the paper's plain networks).
        widths: channels of each stage before the block's expansion.
        shortcut_layer: the shortcut where a block changes shape (option B projections by
            default; the CIFAR networks use option A zero-padding).
        replace_stride_with_dilation: one flag per stage after the first (layer2..layer4 for
            ImageNet ResNets); a flagged stage does not halve the resolution but dilates
            its 3x3 convolutions instead. Its first block keeps the dilation so far (with
            stride 1); its later blocks use the new one, twice the previous. ``feature_info``
            reports the real strides, e.g. ``[2, 4, 8, 8, 8]`` for ``(False, True, True)``.
            None: no dilation (the paper's network).

    Raises:
        CnnzooError: for ``zero_init_residual`` without skips, or a
            ``replace_stride_with_dilation`` of the wrong length.
    """

    classifier_name = "fc"

    def __init__(
        self,
        block: Block,
        layers: tuple[int, ...],
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
        zero_init_residual: bool = False,
        residual: bool = True,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        shortcut_layer: ShortcutLayer = ProjectionShortcut,
        replace_stride_with_dilation: Sequence[bool] | None = None,
    ) -> None:
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"got {len(layers)} stage depths {layers} for widths {widths}")
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = (False,) * (len(widths) - 1)
        dilate = tuple(bool(flag) for flag in replace_stride_with_dilation)
        if len(dilate) != len(widths) - 1:
            raise CnnzooError(
                f"replace_stride_with_dilation needs one flag per stage after the first "
                f"({len(widths) - 1} flags), got {tuple(replace_stride_with_dilation)!r}"
            )
        if zero_init_residual and not residual:
            raise CnnzooError(
                "zero_init_residual=True with residual=False would zero every block's output; "
                "use it only with skip connections"
            )
        self.num_classes = num_classes
        self.residual = residual
        self.shortcut_layer = shortcut_layer
        self.replace_stride_with_dilation = dilate
        if small_input:
            self.stem = ConvBnAct(in_channels, widths[0], 3, 1)
            self.maxpool: nn.Module = nn.Identity()
            reduction = 1
        else:
            self.stem = ConvBnAct(in_channels, widths[0], 7, 2)
            self.maxpool = nn.MaxPool2d(3, 2, padding=1)
            reduction = 2
        feature_info = [FeatureStage("stem", widths[0], reduction)]
        if not small_input:
            reduction *= 2

        stages = []
        channels = widths[0]
        dilation = 1
        for i, (width, depth) in enumerate(zip(widths, layers, strict=True)):
            stride = 1 if i == 0 else 2
            first_dilation = dilation
            if i > 0 and dilate[i - 1]:
                dilation *= stride
                stride = 1
            reduction *= stride
            stages.append(
                self._make_stage(block, channels, width, depth, stride, (first_dilation, dilation))
            )
            channels = width * block.expansion
            feature_info.append(FeatureStage(f"stages.{i}", channels, reduction))
        self.stages = nn.Sequential(*stages)
        self.feature_info = FeatureInfo(feature_info)

        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = nn.Linear(channels, num_classes)

        init_weights_kaiming(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    m.zero_init_last_bn()

    def _make_stage(
        self,
        block: Block,
        in_channels: int,
        width: int,
        depth: int,
        stride: int,
        dilation: tuple[int, int] = (1, 1),
    ) -> nn.Sequential:
        """Return ``depth`` blocks; the first changes resolution (``stride``) and channels.

        ``dilation`` is (first block's, later blocks'): in a stage dilated instead of
        strided, the first block still sees the previous resolution's dilation.
        """
        first, rest = dilation
        blocks = [
            block(in_channels, width, stride, self.residual, self.shortcut_layer, dilation=first)
        ]
        for _ in range(1, depth):
            blocks.append(
                block(
                    width * block.expansion,
                    width,
                    1,
                    self.residual,
                    self.shortcut_layer,
                    dilation=rest,
                )
            )
        return nn.Sequential(*blocks)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.maxpool(self.stem(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.fc(x)

    @staticmethod
    def torchvision_key(key: str) -> str | None:
        """Map torchvision's ``conv1``/``bn1``/``layerN.i.*``/``fc`` keys to cnnzoo's.

        Examples: ``layer2.0.bn1.weight`` -> ``stages.1.0.conv1.bn.weight``;
        ``layer2.0.downsample.0.weight`` -> ``stages.1.0.shortcut.conv.weight``. Keys of
        another architecture come back unchanged, for the loader to report as unexpected.
        """
        if key.startswith("conv1."):
            return "stem.conv." + key.removeprefix("conv1.")
        if key.startswith("bn1."):
            return "stem.bn." + key.removeprefix("bn1.")
        if key.startswith("fc."):
            return key
        match = _TV_BLOCK_KEY.fullmatch(key)
        if match is None:
            return key
        stage, index, kind, number, rest = match.groups()
        prefix = f"stages.{int(stage) - 1}.{index}"
        if kind == "downsample.":
            return f"{prefix}.shortcut.{('conv', 'bn')[int(number)]}.{rest}"
        return f"{prefix}.conv{number}.{kind}.{rest}"


def _variant(name: str, block: Block, layers: tuple[int, ...], summary: str) -> Builder:
    """Register ``name``: ResNet with ``block`` and ``layers`` blocks per stage (Table 1)."""

    def build(
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
        zero_init_residual: bool = False,
        residual: bool = True,
        replace_stride_with_dilation: tuple[bool, bool, bool] | None = None,
    ) -> ResNet:
        return ResNet(
            block, layers, num_classes, in_channels, small_input, zero_init_residual, residual,
            replace_stride_with_dilation=replace_stride_with_dilation,
        )  # fmt: skip

    build.__name__ = build.__qualname__ = name
    build.__doc__ = summary
    return register_imagenet_classifier(HE_2016, "resnet", name)(build)


# The paper's Table 1: block type and blocks per stage.
# fmt: off
resnet18 = _variant("resnet18", BasicBlock, (2, 2, 2, 2), "ResNet-18: basic blocks, (2, 2, 2, 2) "
                    "per stage; 11.7 M parameters, 1.8 GMACs.")
resnet34 = _variant("resnet34", BasicBlock, (3, 4, 6, 3), "ResNet-34: basic blocks, (3, 4, 6, 3) "
                    "per stage; 21.8 M parameters, 3.7 GMACs.")
resnet50 = _variant("resnet50", Bottleneck, (3, 4, 6, 3), "ResNet-50: bottleneck blocks, "
                    "(3, 4, 6, 3) per stage; 25.6 M parameters, 4.1 GMACs.")
resnet101 = _variant("resnet101", Bottleneck, (3, 4, 23, 3), "ResNet-101: bottleneck blocks, "
                     "(3, 4, 23, 3) per stage; 44.5 M parameters, 7.8 GMACs.")
resnet152 = _variant("resnet152", Bottleneck, (3, 8, 36, 3), "ResNet-152: bottleneck blocks, "
                     "(3, 8, 36, 3) per stage; 60.2 M parameters, 11.5 GMACs.")
# fmt: on
