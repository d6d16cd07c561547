"""ShuffleNet V1 and V2: cheap 1x1 convolutions, with channels shuffled between groups.

V1 — Zhang, Zhou, Lin, Sun, "ShuffleNet: An Extremely Efficient Convolutional Neural Network
for Mobile Devices", CVPR 2018, Table 1 and Fig. 2. In a bottleneck unit the 1x1
convolutions dominate the cost; ShuffleNet makes them *grouped* (g groups, g times cheaper)
and shuffles the channels after the first one so that information crosses the groups
(Fig. 1). A 3x3/2 convolution and a max-pool, then three stages of units (4, 8, 4; the first
of each strided, its shortcut an average pool concatenated to the output), global pooling
and the classifier: 1.9 M parameters and about 140 M multiply-adds for g = 3 at 1x.

V2 — Ma, Zhang, Zheng, Sun, "ShuffleNet V2: Practical Guidelines for Efficient CNN
Architecture Design", ECCV 2018, Table 5 and Fig. 3c-d. Grouped convolutions and
element-wise additions cost memory traffic that FLOPs do not count (guidelines G2, G4); the
V2 unit splits the channels in two, leaves one half untouched, runs the other through
1x1 - 3x3 depthwise - 1x1 convolutions of equal width (G1), concatenates and shuffles the two
halves. The code follows torchvision's ``shufflenet_v2_x*``, whose ImageNet weights load
with :func:`cnnzoo.load_torchvision_weights`.

``small_input=True`` (28x28 or 32x32 images): the first convolution runs with stride 1 and
the max-pool is left out, as in ResNet's ``small_input``: the total stride is 8 instead of
32, so a 28x28 image ends in a 4x4 map instead of 1x1.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers import ConvBnAct
from cnnzoo.layers.mobile import ChannelShuffle, DepthwiseSeparableConv, make_divisible
from cnnzoo.models.base import FeatureInfo, FeatureStage, ImageClassifier, init_weights_kaiming
from cnnzoo.registry import register_imagenet_classifier

ZHANG_2018 = (
    "Zhang, Zhou, Lin, Sun, ShuffleNet: An Extremely Efficient Convolutional Neural Network "
    "for Mobile Devices, CVPR 2018"
)
MA_2018 = (
    "Ma, Zhang, Zheng, Sun, ShuffleNet V2: Practical Guidelines for Efficient CNN "
    "Architecture Design, ECCV 2018"
)

# Table 1 of Zhang et al.: output channels of Stage2-4 for each number of groups g (1x).
SHUFFLENET_V1_WIDTHS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
# Units per stage, the first of each with stride 2 (both papers).
STAGE_REPEATS = (4, 8, 4)
STEM_CHANNELS = 24

# Table 5 of Ma et al.: output channels of Stage2-4 and Conv5 for each size.
SHUFFLENET_V2_WIDTHS: dict[str, tuple[int, int, int, int]] = {
    "0_5": (48, 96, 192, 1024),
    "1_0": (116, 232, 464, 1024),
    "1_5": (176, 352, 704, 1024),
    "2_0": (244, 488, 976, 2048),
}

# torchvision's ShuffleNetV2 unit: branch1 = [dw conv, BN, conv, BN, ReLU],
# branch2 = [conv, BN, ReLU, dw conv, BN, conv, BN, ReLU]; index -> cnnzoo's module.
_TV_BRANCH_LAYERS = {
    ("branch1", "0"): "depthwise.conv",
    ("branch1", "1"): "depthwise.bn",
    ("branch1", "2"): "pointwise.conv",
    ("branch1", "3"): "pointwise.bn",
    ("branch2", "0"): "pointwise.conv",
    ("branch2", "1"): "pointwise.bn",
    ("branch2", "3"): "separable.depthwise.conv",
    ("branch2", "4"): "separable.depthwise.bn",
    ("branch2", "5"): "separable.pointwise.conv",
    ("branch2", "6"): "separable.pointwise.bn",
}
_TV_UNIT_KEY = re.compile(r"stage([234])\.(\d+)\.(branch[12])\.(\d)\.(.+)")
_TV_NAMES = {
    "conv1.0": "stem.conv",
    "conv1.1": "stem.bn",
    "conv5.0": "conv5.conv",
    "conv5.1": "conv5.bn",
    "fc": "fc",
}


class ShuffleUnit(nn.Module):
    """The ShuffleNet unit of Zhang et al., Fig. 2b (stride 1) and 2c (stride 2).

    1x1 GConv-BN-ReLU, channel shuffle, 3x3 depthwise conv-BN (no ReLU, Section 3.2), 1x1
    GConv-BN; then the shortcut is added (stride 1) or, average-pooled 3x3/2, concatenated in
    front (stride 2: the unit adds ``out_channels - in_channels`` new channels, a cheap way
    to widen the network); a ReLU closes the unit. The bottleneck is a quarter of
    ``out_channels`` (Section 3.3).

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output (shortcut included).
        groups: groups g of the 1x1 convolutions.
        stride: 1 or 2.
        group_first: group the first 1x1 convolution; False for the very first unit,
            whose input has too few channels (Section 3.3). Without groups there, nothing
            needs shuffling either.

    Raises:
        ValueError: for channel counts the groups do not divide, or a stride-1 unit that
            changes the channels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int,
        stride: int = 1,
        group_first: bool = True,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ShuffleUnit takes stride 1 or 2, got {stride!r}")
        new_channels = out_channels - in_channels if stride == 2 else out_channels
        if stride == 1 and in_channels != out_channels:
            raise ValueError(
                f"a stride-1 ShuffleUnit adds its input, so it keeps the channels; got "
                f"{in_channels} -> {out_channels}"
            )
        mid = out_channels // 4
        first_groups = groups if group_first else 1
        for what, count, divisor in (
            ("input", in_channels, first_groups),
            ("bottleneck", mid, groups),
            ("new", new_channels, groups),
        ):
            if count <= 0 or count % divisor:
                raise ValueError(
                    f"{what} channels ({count}) of a ShuffleUnit {in_channels} -> "
                    f"{out_channels} are not a positive multiple of its {divisor} groups"
                )
        self.stride = stride
        self.gconv1 = ConvBnAct(in_channels, mid, 1, groups=first_groups)
        self.shuffle: nn.Module = ChannelShuffle(groups) if first_groups > 1 else nn.Identity()
        self.dwconv = ConvBnAct(mid, mid, 3, stride, groups=mid, act_layer=None)
        self.gconv2 = ConvBnAct(mid, new_channels, 1, groups=groups, act_layer=None)
        self.shortcut: nn.Module = (
            nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.gconv2(self.dwconv(self.shuffle(self.gconv1(x))))
        if self.stride == 2:  # Fig. 2c: concatenate to the pooled input
            return self.act(torch.cat((self.shortcut(x), out), dim=1))
        return self.act(out + x)  # Fig. 2b: add the input


class ShuffleV2Unit(nn.Module):
    """The ShuffleNet V2 unit of Ma et al., Fig. 3c (stride 1) and 3d (stride 2).

    Stride 1: the channels are split in two halves; ``branch2`` (1x1 conv-BN-ReLU, 3x3
    depthwise conv-BN, 1x1 conv-BN-ReLU, all ``out_channels / 2`` wide) transforms one, the
    other passes unchanged. Stride 2: both branches see the whole input, ``branch1`` being a
    strided depthwise-separable convolution. The halves are concatenated and shuffled with two
    groups, so the next unit's split takes half of each.

    Raises:
        ValueError: for a stride other than 1 or 2, an odd ``out_channels``, or a stride-1
            unit that changes the channels.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ShuffleV2Unit takes stride 1 or 2, got {stride!r}")
        if out_channels % 2 or (stride == 1 and in_channels != out_channels):
            raise ValueError(
                f"a ShuffleV2Unit needs an even out_channels, equal to in_channels at stride 1; "
                f"got {in_channels} -> {out_channels} with stride {stride}"
            )
        branch = out_channels // 2
        self.branch1: nn.Module | None = None
        if stride == 2:
            self.branch1 = DepthwiseSeparableConv(
                in_channels, branch, stride, depthwise_act_layer=None
            )
        self.branch2 = nn.Sequential(
            OrderedDict(
                pointwise=ConvBnAct(in_channels if stride == 2 else branch, branch, 1),
                separable=DepthwiseSeparableConv(branch, branch, stride, depthwise_act_layer=None),
            )
        )
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        if self.branch1 is None:
            kept, transformed = x.chunk(2, dim=1)
            out = torch.cat((kept, self.branch2(transformed)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return self.shuffle(out)


def _stem(in_channels: int, channels: int, small_input: bool) -> tuple[ConvBnAct, nn.Module]:
    """Conv1 (3x3/2) and the 3x3/2 max-pool of both papers' tables."""
    if small_input:
        return ConvBnAct(in_channels, channels, 3, 1), nn.Identity()
    return ConvBnAct(in_channels, channels, 3, 2), nn.MaxPool2d(3, stride=2, padding=1)


class ShuffleNetV1(ImageClassifier):
    """Table 1 of Zhang et al.: Conv1, MaxPool, Stage2-4 of ShuffleUnits, GlobalPool, FC.

    ``feature_info``: ``stem`` (stride 2), ``maxpool`` (4), ``stages.0-2`` (8, 16, 32);
    with ``small_input`` the strides are 1, 1, 2, 4, 8.

    Args:
        num_classes: outputs of the classifier.
        in_channels: channels of the input image.
        groups: groups g of the 1x1 convolutions, one of Table 1's 1, 2, 3, 4, 8.
        scale: the scale factor s of "ShuffleNet s x" (Section 3.3), which scales every
            layer's filters: Conv1 has 24 s (rounded to a multiple of g, so that Stage2's
            first unit adds a number of channels its groups divide), Stage2-4 s times Table
            1's channels (rounded to a multiple of 4 g, so that the bottleneck, a quarter,
            splits into g groups).
        small_input: Conv1 with stride 1 and no max-pool (total stride 8).

    Raises:
        CnnzooError: for ``groups`` not in Table 1, or a non-positive ``scale``.
    """

    classifier_name = "fc"

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        groups: int = 3,
        scale: float = 1.0,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        if groups not in SHUFFLENET_V1_WIDTHS:
            raise CnnzooError(
                f"ShuffleNet V1 has no configuration for groups={groups!r}; Table 1 gives "
                f"groups {', '.join(map(str, SHUFFLENET_V1_WIDTHS))}"
            )
        if scale <= 0:
            raise CnnzooError(f"scale must be positive, got {scale!r}")
        self.num_classes = num_classes
        self.groups = groups
        channels = make_divisible(STEM_CHANNELS * scale, groups)
        self.stem, self.maxpool = _stem(in_channels, channels, small_input)
        reduction = 1 if small_input else 4
        feature_info = [
            FeatureStage("stem", channels, 1 if small_input else 2),
            FeatureStage("maxpool", channels, reduction),
        ]
        stages = []
        for i, (width, repeats) in enumerate(
            zip(SHUFFLENET_V1_WIDTHS[groups], STAGE_REPEATS, strict=True)
        ):
            out = make_divisible(width * scale, 4 * groups)
            units = [ShuffleUnit(channels, out, groups, stride=2, group_first=i > 0)]
            units += [ShuffleUnit(out, out, groups) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            channels = out
            reduction *= 2
            feature_info.append(FeatureStage(f"stages.{i}", channels, reduction))
        self.stages = nn.Sequential(*stages)
        self.feature_info = FeatureInfo(feature_info)
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = nn.Linear(channels, num_classes)
        init_weights_kaiming(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.maxpool(self.stem(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.fc(x)


class ShuffleNetV2(ImageClassifier):
    """Table 5 of Ma et al.: Conv1, MaxPool, Stage2-4 of V2 units, Conv5, GlobalPool, FC.

    ``feature_info``: ``stem`` (stride 2), ``maxpool`` (4), ``stages.0`` (8), ``stages.1``
    (16), ``conv5`` (32); with ``small_input`` the strides are 1, 1, 2, 4, 8.

    Args:
        widths: output channels of Stage2, Stage3, Stage4 and Conv5.
        num_classes: outputs of the classifier.
        in_channels: channels of the input image.
        small_input: Conv1 with stride 1 and no max-pool (total stride 8).
    """

    classifier_name = "fc"

    def __init__(
        self,
        widths: tuple[int, int, int, int],
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem, self.maxpool = _stem(in_channels, STEM_CHANNELS, small_input)
        reduction = 1 if small_input else 4
        stages = []
        channels = STEM_CHANNELS
        for width, repeats in zip(widths[:3], STAGE_REPEATS, strict=True):
            units = [ShuffleV2Unit(channels, width, stride=2)]
            units += [ShuffleV2Unit(width, width) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.conv5 = ConvBnAct(channels, widths[3], 1)
        self.feature_info = FeatureInfo(
            [
                FeatureStage("stem", STEM_CHANNELS, 1 if small_input else 2),
                FeatureStage("maxpool", STEM_CHANNELS, reduction),
                FeatureStage("stages.0", widths[0], reduction * 2),
                FeatureStage("stages.1", widths[1], reduction * 4),
                FeatureStage("conv5", widths[3], reduction * 8),
            ]
        )
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = nn.Linear(widths[3], num_classes)
        # torchvision keeps PyTorch's default initialisation here; cnnzoo uses He
        # initialisation as for its other networks (the paper does not say).
        init_weights_kaiming(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.conv5(self.stages(self.maxpool(self.stem(x))))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.fc(x)

    @staticmethod
    def torchvision_key(key: str) -> str | None:
        """Map a key of torchvision's ``shufflenet_v2_x*`` to this model's.

        Examples: ``conv1.0.weight`` -> ``stem.conv.weight``;
        ``stage3.0.branch1.2.weight`` -> ``stages.1.0.branch1.pointwise.conv.weight``;
        ``stage2.1.branch2.3.weight`` -> ``stages.0.1.branch2.separable.depthwise.conv.weight``.
        Keys of another architecture come back unchanged, for the loader to report.
        """
        module, _, param = key.rpartition(".")
        if module in _TV_NAMES:
            return f"{_TV_NAMES[module]}.{param}"
        match = _TV_UNIT_KEY.fullmatch(key)
        if match is None:
            return key
        stage, unit, branch, index, rest = match.groups()
        layer = _TV_BRANCH_LAYERS.get((branch, index))
        if layer is None:
            return key
        return f"stages.{int(stage) - 2}.{unit}.{branch}.{layer}.{rest}"


@register_imagenet_classifier(ZHANG_2018, "shufflenet_v1")
def shufflenet_v1(
    num_classes: int = 1000,
    in_channels: int = 3,
    groups: int = 3,
    scale: float = 1.0,
    small_input: bool = False,
) -> ShuffleNetV1:
    """ShuffleNet V1 with ``groups`` g and ``scale`` s (g = 3, 1x: 1.9 M params, 140 M MACs)."""
    return ShuffleNetV1(num_classes, in_channels, groups, scale, small_input)


@register_imagenet_classifier(MA_2018, "shufflenet_v2", "shufflenet_v2_x0_5")
def shufflenet_v2_x0_5(
    num_classes: int = 1000, in_channels: int = 3, small_input: bool = False
) -> ShuffleNetV2:
    """ShuffleNet V2 0.5x: 1.4 M parameters, 41 M MACs (Table 5)."""
    return ShuffleNetV2(SHUFFLENET_V2_WIDTHS["0_5"], num_classes, in_channels, small_input)


@register_imagenet_classifier(MA_2018, "shufflenet_v2", "shufflenet_v2_x1_0")
def shufflenet_v2_x1_0(
    num_classes: int = 1000, in_channels: int = 3, small_input: bool = False
) -> ShuffleNetV2:
    """ShuffleNet V2 1x: 2.3 M parameters, 146 M MACs (Table 5)."""
    return ShuffleNetV2(SHUFFLENET_V2_WIDTHS["1_0"], num_classes, in_channels, small_input)


@register_imagenet_classifier(MA_2018, "shufflenet_v2", "shufflenet_v2_x1_5")
def shufflenet_v2_x1_5(
    num_classes: int = 1000, in_channels: int = 3, small_input: bool = False
) -> ShuffleNetV2:
    """ShuffleNet V2 1.5x: 3.5 M parameters, 299 M MACs (Table 5)."""
    return ShuffleNetV2(SHUFFLENET_V2_WIDTHS["1_5"], num_classes, in_channels, small_input)


@register_imagenet_classifier(MA_2018, "shufflenet_v2", "shufflenet_v2_x2_0")
def shufflenet_v2_x2_0(
    num_classes: int = 1000, in_channels: int = 3, small_input: bool = False
) -> ShuffleNetV2:
    """ShuffleNet V2 2x: 7.4 M parameters, 591 M MACs (Table 5)."""
    return ShuffleNetV2(SHUFFLENET_V2_WIDTHS["2_0"], num_classes, in_channels, small_input)
