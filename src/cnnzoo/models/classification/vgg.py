"""VGG: very deep stacks of 3x3 convolutions, configurations A, B, D and E.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015 (Table 1, Section 2). Five stages of 3x3 convolutions (stride 1, padding 1), each
closed by a 2x2/2 max-pool, widths 64-128-256-512-512, then FC-4096, FC-4096 and the
classifier. Two stacked 3x3 convolutions see what one 5x5 sees, three what one 7x7 sees, with
fewer parameters and more non-linearities (Section 2.3).

Departures, as in torchvision (whose ImageNet weights load into these models): an adaptive
average pool to 7x7 before FC6 lets inputs other than 224x224 reach the fully-connected
layers (the paper instead turns them into convolutions at test time, Section 3.2); the
``_bn`` variants add batch normalisation (Ioffe & Szegedy, 2015) after every convolution,
which the paper predates. Configurations A-LRN and C (with 1x1 convolutions) are not built.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from cnnzoo.layers import ConvBnAct
from cnnzoo.models.base import FeatureInfo, FeatureStage, ImageClassifier, init_weights_kaiming
from cnnzoo.registry import register_model

SIMONYAN_2015 = (
    "Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image "
    "Recognition, ICLR 2015"
)

# Table 1: the widths of the 3x3 convolutions of each stage (a max-pool closes every stage).
VGG_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "A": ((64,), (128,), (256, 256), (512, 512), (512, 512)),  # VGG-11
    "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),  # VGG-13
    "D": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),  # VGG-16
    "E": (  # VGG-19
        (64, 64),
        (128, 128),
        (256, 256, 256, 256),
        (512, 512, 512, 512),
        (512, 512, 512, 512),
    ),
}


def _fully_connected(in_features: int, out_features: int, dropout: float) -> nn.Sequential:
    """Return ``Linear -> ReLU -> Dropout``, FC6 and FC7 of Table 1 (dropout: Section 3.1)."""
    return nn.Sequential(
        OrderedDict(
            linear=nn.Linear(in_features, out_features),
            act=nn.ReLU(inplace=True),
            drop=nn.Dropout(dropout),
        )
    )


class VGG(ImageClassifier):
    """A column of Table 1: ``stages`` of 3x3 convolutions and max-pools, then FC6-FC7-FC8.

    Args:
        stages: widths of the convolutions of each stage, e.g. ``VGG_CONFIGS["D"]``.
        batch_norm: put a BatchNorm2d after every convolution (the ``_bn`` variants).
        num_classes: outputs of the final layer, FC8.
        in_channels: channels of the input images.
        dropout: drop probability after FC6 and FC7.
    """

    classifier_name = "fc8"

    def __init__(
        self,
        stages: Sequence[Sequence[int]],
        batch_norm: bool = False,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        norm_layer = nn.BatchNorm2d if batch_norm else None
        blocks: list[nn.Module] = []
        feature_stages = []
        # torchvision's module names -> cnnzoo's, for torchvision_key; torchvision numbers
        # conv, [bn,] relu and pool layers consecutively in one ``features`` Sequential.
        self._torchvision_names: dict[str, str] = {}
        tv_index = 0
        prev = in_channels
        for i, widths in enumerate(stages):
            layers: list[nn.Module] = []
            for j, width in enumerate(widths):
                # torchvision keeps the convolution's bias even before batch norm, where it is
                # redundant; kept here too, so that parameter counts and weights match.
                layers.append(ConvBnAct(prev, width, 3, norm_layer=norm_layer, bias=True))
                self._torchvision_names[f"features.{tv_index}"] = f"stages.{i}.{j}.conv"
                if batch_norm:
                    self._torchvision_names[f"features.{tv_index + 1}"] = f"stages.{i}.{j}.bn"
                tv_index += 3 if batch_norm else 2
                prev = width
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            tv_index += 1
            blocks.append(nn.Sequential(*layers))
            feature_stages.append(FeatureStage(f"stages.{i}", prev, 2 ** (i + 1)))
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d((7, 7))
        self.fc6 = _fully_connected(prev * 7 * 7, 4096, dropout)
        self.fc7 = _fully_connected(4096, 4096, dropout)
        self.fc8 = nn.Linear(4096, num_classes)
        self._torchvision_names.update(
            {"classifier.0": "fc6.linear", "classifier.3": "fc7.linear", "classifier.6": "fc8"}
        )
        self.feature_info = FeatureInfo(feature_stages)
        # The paper initialises config A from a normal distribution (variance 1e-2) and the
        # deeper ones partly from A's trained layers, noting that Glorot initialisation works
        # without that pre-training (Section 3.1); He initialisation, as torchvision's, does too.
        init_weights_kaiming(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = torch.flatten(self.pool(x), 1)
        x = self.fc7(self.fc6(x))
        return x if pre_logits else self.fc8(x)

    def torchvision_key(self, key: str) -> str | None:  # type: ignore[override]
        """Map a key of the torchvision VGG with the same configuration to this model's.

        An instance method, unlike most models': torchvision's layer numbers depend on the
        configuration and on batch norm.

        Returns:
            The cnnzoo key; a key this configuration does not have comes back unchanged,
            so that loading reports it as unexpected.
        """
        module, _, param = key.rpartition(".")
        names = self._torchvision_names
        return f"{names[module]}.{param}" if module in names else key


def _vgg(cfg: str, batch_norm: bool, num_classes: int, in_channels: int, dropout: float) -> VGG:
    return VGG(VGG_CONFIGS[cfg], batch_norm, num_classes, in_channels, dropout)


def _register_vgg(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Return ``register_model`` with VGG's metadata, for the builder of the same ``name``."""
    # 2**5 = 32: five 2x2 max-pools need at least 32 pixels to leave a 1x1 map.
    return register_model(
        task="classification",
        paper=SIMONYAN_2015,
        input_size=(3, 224, 224),
        min_input_size=32,
        small_input=False,
        torchvision=name,
        family="vgg",
    )


@_register_vgg("vgg11")
def vgg11(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11, configuration A: 8 convolutions + 3 FC layers."""
    return _vgg("A", False, num_classes, in_channels, dropout)


@_register_vgg("vgg11_bn")
def vgg11_bn(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11 (configuration A) with batch normalisation."""
    return _vgg("A", True, num_classes, in_channels, dropout)


@_register_vgg("vgg13")
def vgg13(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-13, configuration B: 10 convolutions + 3 FC layers."""
    return _vgg("B", False, num_classes, in_channels, dropout)


@_register_vgg("vgg13_bn")
def vgg13_bn(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-13 (configuration B) with batch normalisation."""
    return _vgg("B", True, num_classes, in_channels, dropout)


@_register_vgg("vgg16")
def vgg16(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16, configuration D: 13 convolutions + 3 FC layers."""
    return _vgg("D", False, num_classes, in_channels, dropout)


@_register_vgg("vgg16_bn")
def vgg16_bn(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16 (configuration D) with batch normalisation."""
    return _vgg("D", True, num_classes, in_channels, dropout)


@_register_vgg("vgg19")
def vgg19(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-19, configuration E: 16 convolutions + 3 FC layers."""
    return _vgg("E", False, num_classes, in_channels, dropout)


@_register_vgg("vgg19_bn")
def vgg19_bn(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-19 (configuration E) with batch normalisation."""
    return _vgg("E", True, num_classes, in_channels, dropout)
