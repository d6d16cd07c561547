"""MobileNet V1 and V2: networks built from depthwise-separable convolutions.

V1 — Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto, Adam, "MobileNets: Efficient
Convolutional Neural Networks for Mobile Vision Applications", arXiv:1704.04861, 2017,
Table 1: a 3x3/2 convolution, then 13 depthwise-separable convolutions (Fig. 3) from 32 to
1024 channels, global average pooling and one fully-connected layer; 4.2 M parameters and
569 M multiply-adds at 224x224 (Table 8). The width multiplier alpha (``width``, Section 4.2)
thins every layer, cutting the cost by about alpha squared.

V2 — Sandler, Howard, Zhu, Zhmoginov, Chen, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018, Table 2: a 3x3/2 convolution, 17 inverted-residual bottlenecks
(:class:`~cnnzoo.layers.mobile.InvertedResidual`) in seven rows (t, c, n, s), a 1x1
convolution to 1280 channels, global average pooling and the classifier. The code follows
torchvision's ``mobilenet_v2``, whose ImageNet weights load with
:func:`cnnzoo.load_torchvision_weights`; its classifier is a linear layer after dropout
(the paper's last 1x1 convolution on a 1x1 map is the same operation).

``small_input=True`` (28x28 or 32x32 images): the two stride-2 layers of the first 4x of
downsampling run with stride 1 (V1: the first convolution and the first stride-2 separable
convolution; V2: the first convolution and the first block of the 24-channel row, as in the
common CIFAR adaptations), so the total stride is 8 instead of 32, as with ResNet's
``small_input``: a 28x28 image ends in a 4x4 map instead of 1x1.
"""

from __future__ import annotations

from torch import Tensor, nn

from cnnzoo.layers import ConvBnAct
from cnnzoo.layers.mobile import DepthwiseSeparableConv, InvertedResidual, make_divisible
from cnnzoo.models.base import FeatureInfo, FeatureStage, ImageClassifier, init_weights_kaiming
from cnnzoo.registry import register_imagenet_classifier

HOWARD_2017 = (
    "Howard et al., MobileNets: Efficient Convolutional Neural Networks for Mobile Vision "
    "Applications, arXiv:1704.04861 2017"
)
SANDLER_2018 = (
    "Sandler, Howard, Zhu, Zhmoginov, Chen, MobileNetV2: Inverted Residuals and Linear "
    "Bottlenecks, CVPR 2018"
)

# Table 1 of Howard et al., grouped by resolution: (output channels, stride) of each
# depthwise-separable convolution. The table's last row reads "s2" but its input and output
# are both 7x7: the stride is 1, as in the reference implementation.
MOBILENET_V1_STAGES: tuple[tuple[tuple[int, int], ...], ...] = (
    ((64, 1),),
    ((128, 2), (128, 1)),
    ((256, 2), (256, 1)),
    ((512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1)),
    ((1024, 2), (1024, 1)),
)

# Table 2 of Sandler et al.: expansion t, output channels c, repeats n, stride s of the first.
MOBILENET_V2_ROWS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _torchvision_rename(key: str, names: dict[str, str]) -> str:
    """Rename ``key``'s module by ``names`` (torchvision module -> cnnzoo module), if listed.

    A key of another architecture comes back unchanged, for the loader to report it as
    unexpected.
    """
    module, _, param = key.rpartition(".")
    return f"{names[module]}.{param}" if module in names else key


class MobileNetV1(ImageClassifier):
    """Table 1 of Howard et al.: stem, five stages of separable convolutions, pool, FC.

    ``stages.i`` holds the separable convolutions at one resolution; ``feature_info`` lists
    them at strides 2, 4, 8, 16, 32 (1, 1, 2, 4, 8 with ``small_input``).

    Args:
        num_classes: outputs of the classifier.
        in_channels: channels of the input image.
        width: the width multiplier alpha (1.0, 0.75, 0.5, 0.25 in the paper); every layer's
            channels are scaled by it, rounded to a multiple of 8.
        small_input: stride 1 for the first convolution and the first strided separable
            convolution (total stride 8), for 28x28 or 32x32 images.

    Raises:
        ValueError: for a non-positive ``width``.
    """

    classifier_name = "fc"

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        width: float = 1.0,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width!r}")
        self.num_classes = num_classes
        channels = make_divisible(32 * width)
        stem_stride = 1 if small_input else 2
        self.stem = ConvBnAct(in_channels, channels, 3, stem_stride)
        reduction = stem_stride
        stages, feature_info = [], []
        for i, rows in enumerate(MOBILENET_V1_STAGES):
            layers = []
            for out, stride in rows:
                if small_input and i == 1:
                    stride = 1  # small_input skips the first 4x of downsampling
                out = make_divisible(out * width)
                layers.append(DepthwiseSeparableConv(channels, out, stride))
                reduction *= stride
                channels = out
            stages.append(nn.Sequential(*layers))
            feature_info.append(FeatureStage(f"stages.{i}", channels, reduction))
        self.stages = nn.Sequential(*stages)
        self.feature_info = FeatureInfo(feature_info)
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        # Table 1 ends in "Avg Pool 7x7, FC, Softmax": no dropout.
        self.fc = nn.Linear(channels, num_classes)
        init_weights_kaiming(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.fc(x)


class MobileNetV2(ImageClassifier):
    """Table 2 of Sandler et al.: stem, seven rows of inverted residuals, 1x1 conv, pool, FC.

    ``stages.i`` is row i + 2 of Table 2 (its n bottlenecks); ``last_conv`` the 1x1
    convolution to 1280 channels. ``feature_info`` lists the deepest module at each stride:
    ``stages.0`` (2), ``stages.1`` (4), ``stages.2`` (8), ``stages.4`` (16) and ``last_conv``
    (32); with ``small_input`` the strides are 1, 1, 2, 4, 8.

    Args:
        num_classes: outputs of the classifier.
        in_channels: channels of the input image.
        width: the width multiplier (0.35 to 1.4 in the paper); every layer's channels are
            scaled by it and rounded to a multiple of 8, except that ``last_conv`` never has
            fewer than 1280 (for multipliers below one the paper applies the
            multiplier to every layer but the last convolution; after Section 6.1).
        small_input: stride 1 for the first convolution and the first 24-channel block
            (total stride 8), for 28x28 or 32x32 images.
        dropout: drop probability before the classifier (torchvision's 0.2).

    Raises:
        ValueError: for a non-positive ``width``.
    """

    classifier_name = "fc"

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        width: float = 1.0,
        small_input: bool = False,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width!r}")
        self.num_classes = num_classes
        channels = make_divisible(32 * width)
        last_channels = make_divisible(1280 * max(1.0, width))
        stem_stride = 1 if small_input else 2
        self.stem = ConvBnAct(in_channels, channels, 3, stem_stride, act_layer=nn.ReLU6)
        reduction = stem_stride
        # torchvision's module names -> cnnzoo's, for torchvision_key: torchvision numbers
        # the stem, the 17 blocks and the last convolution consecutively in ``features``.
        names = {"features.0.0": "stem.conv", "features.0.1": "stem.bn"}
        index = 1
        stages, stage_channels, reductions = [], [], []
        for i, (t, c, n, s) in enumerate(MOBILENET_V2_ROWS):
            if small_input and i == 1:
                s = 1  # small_input skips the first 4x of downsampling
            out = make_divisible(c * width)
            blocks = []
            for j in range(n):
                blocks.append(InvertedResidual(channels, out, s if j == 0 else 1, t))
                names.update(_torchvision_block_names(f"features.{index}", f"stages.{i}.{j}", t))
                index += 1
                channels = out
            stages.append(nn.Sequential(*blocks))
            stage_channels.append(out)
            reduction *= s
            reductions.append(reduction)
        self.stages = nn.Sequential(*stages)
        self.last_conv = ConvBnAct(channels, last_channels, 1, act_layer=nn.ReLU6)
        names[f"features.{index}.0"] = "last_conv.conv"
        names[f"features.{index}.1"] = "last_conv.bn"
        names["classifier.1"] = "fc"
        self._torchvision_names = names
        taps = [FeatureStage(f"stages.{i}", stage_channels[i], reductions[i]) for i in (0, 1, 2, 4)]
        taps.append(FeatureStage("last_conv", last_channels, reductions[-1]))
        self.feature_info = FeatureInfo(taps)
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(last_channels, num_classes)
        init_weights_kaiming(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.last_conv(self.stages(self.stem(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.dropout(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def torchvision_key(self, key: str) -> str | None:  # type: ignore[override]
        """Map a key of torchvision's ``mobilenet_v2`` (same ``width``) to this model's.

        An instance method: which torchvision index is which block, and whether a block
        has an expansion layer, depends on the configuration.

        Examples: ``features.0.1.weight`` -> ``stem.bn.weight``;
        ``features.2.conv.0.0.weight`` -> ``stages.1.0.expand.conv.weight``;
        ``classifier.1.bias`` -> ``fc.bias``.
        """
        return _torchvision_rename(key, self._torchvision_names)


def _torchvision_block_names(theirs: str, ours: str, expand_ratio: float) -> dict[str, str]:
    """Module names of one torchvision ``InvertedResidual`` and of cnnzoo's.

    torchvision keeps the layers in one ``conv`` Sequential: [expansion conv-BN-ReLU6,]
    depthwise conv-BN-ReLU6, then the projection's bare conv and BN.
    """
    layers = ["depthwise"] if expand_ratio == 1 else ["expand", "depthwise"]
    names = {}
    for k, layer in enumerate(layers):
        names[f"{theirs}.conv.{k}.0"] = f"{ours}.{layer}.conv"
        names[f"{theirs}.conv.{k}.1"] = f"{ours}.{layer}.bn"
    names[f"{theirs}.conv.{len(layers)}"] = f"{ours}.project.conv"
    names[f"{theirs}.conv.{len(layers) + 1}"] = f"{ours}.project.bn"
    return names


@register_imagenet_classifier(HOWARD_2017, "mobilenet_v1")
def mobilenet_v1(
    num_classes: int = 1000,
    in_channels: int = 3,
    width: float = 1.0,
    small_input: bool = False,
) -> MobileNetV1:
    """MobileNet V1 (1.0-224: 4.2 M parameters, 569 M MACs); ``width`` is alpha."""
    return MobileNetV1(num_classes, in_channels, width, small_input)


@register_imagenet_classifier(SANDLER_2018, "mobilenet_v2", "mobilenet_v2")
def mobilenet_v2(
    num_classes: int = 1000,
    in_channels: int = 3,
    width: float = 1.0,
    small_input: bool = False,
    dropout: float = 0.2,
) -> MobileNetV2:
    """MobileNet V2 (1.0-224: 3.5 M parameters, 300 M MACs); ``width`` is the multiplier.

    torchvision's ImageNet weights fit ``width=1.0``.
    """
    return MobileNetV2(num_classes, in_channels, width, small_input, dropout)
