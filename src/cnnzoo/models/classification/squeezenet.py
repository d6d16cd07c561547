"""SqueezeNet 1.0 and 1.1: AlexNet-level accuracy from 1.2 M parameters, with fire modules.

Iandola, Han, Moskewicz, Ashraf, Dally, Keutzer, "SqueezeNet: AlexNet-level accuracy with
50x fewer parameters and <0.5MB model size", arXiv:1602.07360, 2016. Section 3.1's
strategies: replace most 3x3 filters by 1x1 ones, feed the 3x3 filters few input channels
(a 1x1 "squeeze" layer in front of them), and downsample late so that the convolutions see
large maps. The :class:`Fire` module does the first two: squeeze 1x1, then expand with 1x1
and 3x3 filters side by side (Fig. 1). There are no fully-connected layers: conv10 (1x1,
one channel per class) and global average pooling end the network (Table 1, Fig. 2 left).

SqueezeNet 1.0 follows Table 1 (7x7/2 conv1, max-pools after conv1, fire4 and fire8);
SqueezeNet 1.1 is the authors' later release (3x3/2 conv1 with 64 filters, max-pools after
conv1, fire3 and fire5), 2.4x cheaper at the same accuracy. The code follows torchvision's
``squeezenet1_0``/``squeezenet1_1`` (whose ImageNet weights load with
:func:`cnnzoo.load_torchvision_weights`): no batch norm, ceil-mode max-pools, dropout
before conv10, as in the paper.

``small_input=True`` (28x28 or 32x32 images): conv1 becomes a 3x3/1 convolution (padding 1)
and the max-pool after it is left out, so the total stride is 4 instead of 16 and a 28x28
image reaches conv10 as a 7x7 map. The 3x3 kernel of 1.0's small variant no longer fits
ImageNet's 7x7 conv1 weights.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn

from cnnzoo.layers import ConvBnAct
from cnnzoo.models.base import FeatureInfo, FeatureStage, ImageClassifier
from cnnzoo.registry import register_model

IANDOLA_2016 = (
    "Iandola, Han, Moskewicz, Ashraf, Dally, Keutzer, SqueezeNet: AlexNet-level accuracy "
    "with 50x fewer parameters and <0.5MB model size, arXiv:1602.07360 2016"
)

# Table 1: (input channels, s1x1, e1x1, e3x3) of each fire module, by name.
FIRES: dict[str, tuple[int, int, int, int]] = {
    "fire2": (96, 16, 64, 64),
    "fire3": (128, 16, 64, 64),
    "fire4": (128, 32, 128, 128),
    "fire5": (256, 32, 128, 128),
    "fire6": (256, 48, 192, 192),
    "fire7": (384, 48, 192, 192),
    "fire8": (384, 64, 256, 256),
    "fire9": (512, 64, 256, 256),
}
# SqueezeNet 1.1 has the same fire modules, only its conv1 has 64 filters instead of 96.
FIRES_1_1 = {**FIRES, "fire2": (64, 16, 64, 64)}

# Each stage: a max-pool, then fire modules (the layers of Table 1 between two pools).
STAGES: dict[str, tuple[tuple[str, ...], ...]] = {
    "1_0": (
        ("pool1", "fire2", "fire3", "fire4"),
        ("pool4", "fire5", "fire6", "fire7", "fire8"),
        ("pool8", "fire9"),
    ),
    "1_1": (
        ("pool1", "fire2", "fire3"),
        ("pool3", "fire4", "fire5"),
        ("pool5", "fire6", "fire7", "fire8", "fire9"),
    ),
}


class Fire(nn.Module):
    """Fire module (Iandola et al., Fig. 1): squeeze 1x1, then expand 1x1 and 3x3 in parallel.

    The squeeze layer has fewer channels than the expand layers together (s1x1 < e1x1 +
    e3x3), limiting the inputs of the 3x3 filters; the two expand outputs are concatenated
    (1x1 first). Each convolution has a bias and a ReLU; there is no batch norm.

    Children: ``squeeze``, ``expand1x1``, ``expand3x3`` (:class:`ConvBnAct` without norm).
    """

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = ConvBnAct(in_channels, squeeze, 1, norm_layer=None)
        self.expand1x1 = ConvBnAct(squeeze, expand1x1, 1, norm_layer=None)
        self.expand3x3 = ConvBnAct(squeeze, expand3x3, 3, norm_layer=None)

    def forward(self, x: Tensor) -> Tensor:
        x = self.squeeze(x)
        return torch.cat((self.expand1x1(x), self.expand3x3(x)), dim=1)


def _pool() -> nn.MaxPool2d:
    # 3x3/2 max-pools in ceil mode, as in the authors' Caffe model (and torchvision).
    return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


class SqueezeNet(ImageClassifier):
    """conv1, three stages of max-pool + fire modules, dropout, conv10, ReLU, global pooling.

    ``stages.i`` holds one max-pool and the fire modules after it, named as in Table 1
    (``stages.0.fire2`` ...). ``feature_info``: ``stem`` (conv1, stride 2) and ``stages.0-2``
    (strides 4, 8, 16; 1, 1, 2, 4 with ``small_input``). conv1 is unpadded, so the maps are a
    little smaller than input / stride (109x109 after conv1 for 224x224, 13x13 at the end).

    The classifier is conv10, a 1x1 convolution with ``num_classes`` filters followed by a
    ReLU and global average pooling, not a linear layer: ``get_classifier`` returns it and
    ``reset_classifier`` replaces it by a fresh one.

    Args:
        version: ``"1_0"`` (Table 1) or ``"1_1"``.
        num_classes: filters of conv10.
        in_channels: channels of the input image.
        dropout: drop probability before conv10 (50 %, Section 3.3.1 "after the fire9
            module").
        small_input: 3x3/1 conv1 and no first max-pool (total stride 4).

    Raises:
        ValueError: for an unknown ``version``.
    """

    classifier_name = "conv10"

    def __init__(
        self,
        version: str = "1_0",
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.5,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        if version not in STAGES:
            raise ValueError(f"SqueezeNet version must be one of {list(STAGES)}, got {version!r}")
        self.num_classes = num_classes
        self.version = version
        fires = FIRES if version == "1_0" else FIRES_1_1
        stem_channels = fires["fire2"][0]
        if small_input:
            self.stem = ConvBnAct(in_channels, stem_channels, 3, 1, padding=1, norm_layer=None)
        elif version == "1_0":
            self.stem = ConvBnAct(in_channels, stem_channels, 7, 2, padding=0, norm_layer=None)
        else:
            self.stem = ConvBnAct(in_channels, stem_channels, 3, 2, padding=0, norm_layer=None)

        # torchvision's module names -> cnnzoo's: torchvision numbers conv1 (0), its ReLU
        # (1), the pools and the fires consecutively in one ``features`` Sequential.
        names = {"features.0": "stem.conv", "classifier.1": "conv10"}
        index = 2
        stages, feature_info = [], [FeatureStage("stem", stem_channels, 1 if small_input else 2)]
        reduction = 1 if small_input else 2
        for i, layers in enumerate(STAGES[version]):
            modules: OrderedDict[str, nn.Module] = OrderedDict()
            for name in layers:
                if name.startswith("pool"):
                    first = small_input and i == 0
                    modules[name] = nn.Identity() if first else _pool()
                    reduction *= 1 if first else 2
                else:
                    modules[name] = Fire(*fires[name])
                    channels = fires[name][2] + fires[name][3]
                    for part in ("squeeze", "expand1x1", "expand3x3"):
                        names[f"features.{index}.{part}"] = f"stages.{i}.{name}.{part}.conv"
                index += 1
            stages.append(nn.Sequential(modules))
            feature_info.append(FeatureStage(f"stages.{i}", channels, reduction))
        self.stages = nn.Sequential(*stages)
        self._torchvision_names = names
        self.feature_info = FeatureInfo(feature_info)

        self.dropout = nn.Dropout(dropout)
        self.conv10 = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.act = nn.ReLU(inplace=True)
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation (the paper does not give one): He-uniform for the
        # convolutions, N(0, 0.01) for conv10, whose outputs are the logits; zero biases.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is self.conv10:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Return logits (or, with ``pre_logits``, the globally pooled fire9 features).

        conv10 scores every position and the scores are averaged, as in the paper; its
        ReLU keeps the logits non-negative.
        """
        if pre_logits:
            return self.global_pool(x)
        return self.global_pool(self.act(self.conv10(self.dropout(x))))

    def get_classifier(self) -> nn.Conv2d:  # type: ignore[override]
        """Return conv10, the 1x1 convolution that scores the classes."""
        return self.conv10

    def reset_classifier(self, num_classes: int) -> None:
        """Replace conv10 by a fresh 1x1 convolution with ``num_classes`` filters."""
        old = self.conv10
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
        nn.init.normal_(new.weight, mean=0.0, std=0.01)
        nn.init.zeros_(new.bias)
        self.conv10 = new.to(device=old.weight.device, dtype=old.weight.dtype)
        self.num_classes = num_classes

    def torchvision_key(self, key: str) -> str | None:  # type: ignore[override]
        """Map a key of torchvision's ``squeezenet1_0``/``1_1`` (same version) to this model's.

        Examples for 1.0: ``features.0.weight`` -> ``stem.conv.weight``;
        ``features.3.squeeze.weight`` -> ``stages.0.fire2.squeeze.conv.weight``;
        ``classifier.1.bias`` -> ``conv10.bias``. Keys of another architecture come back
        unchanged, for the loader to report.
        """
        module, _, param = key.rpartition(".")
        names = self._torchvision_names
        return f"{names[module]}.{param}" if module in names else key


def _register(
    torchvision: str, min_input_size: int
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    return register_model(
        task="classification",
        paper=IANDOLA_2016,
        input_size=(3, 224, 224),
        min_input_size=min_input_size,
        small_input=True,
        small_input_below=64,
        torchvision=torchvision,
        family="squeezenet",
    )


# min_input_size: the unpadded conv1 and the three ceil-mode 3x3/2 pools, each of which needs
# at least 2 pixels, leave a 1x1 map from 1.0's 21 pixels (21 -> 8 -> 4 -> 2 -> 1) and 1.1's
# 17 (17 -> 8 -> 4 -> 2 -> 1).
@_register("squeezenet1_0", min_input_size=21)
def squeezenet1_0(
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float = 0.5,
    small_input: bool = False,
) -> SqueezeNet:
    """SqueezeNet 1.0 (Table 1): 1.25 M parameters, 0.82 GMACs."""
    return SqueezeNet("1_0", num_classes, in_channels, dropout, small_input)


@_register("squeezenet1_1", min_input_size=17)
def squeezenet1_1(
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float = 0.5,
    small_input: bool = False,
) -> SqueezeNet:
    """SqueezeNet 1.1: 1.24 M parameters, 0.35 GMACs, 1.0's accuracy."""
    return SqueezeNet("1_1", num_classes, in_channels, dropout, small_input)
