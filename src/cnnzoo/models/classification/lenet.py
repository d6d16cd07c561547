"""LeNet-5 and a compact VGG-style CNN for 28x28 images.

LeCun, Bottou, Bengio, Haffner, "Gradient-based learning applied to document recognition",
Proc. IEEE 1998 (Fig. 2). Departures, as in most modern re-implementations: ReLU instead of
the scaled tanh, max-pooling instead of trainable sub-sampling, a full C3 connection table,
and a softmax output instead of RBF units. ``padding=2`` on C1 plays the role of the paper's
32x32 padded input for 28x28 digits.
"""

from __future__ import annotations

from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers import ConvBnAct
from cnnzoo.models.base import FeatureInfo, FeatureStage, ImageClassifier, init_weights_kaiming
from cnnzoo.registry import register_model

LECUN_1998 = (
    "LeCun et al., Gradient-Based Learning Applied to Document Recognition, Proc. IEEE 1998"
)


class LeNet5(ImageClassifier):
    """C1 (6@5x5) - S2 - C3 (16@5x5) - S4 - C5 (120) - F6 (84) - output."""

    classifier_name = "fc"

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.c1 = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2)
        )
        self.c3 = nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        # C5 is a 5x5 convolution over the 5x5 S4 maps; adaptive pooling keeps other sizes valid.
        self.pool = nn.AdaptiveAvgPool2d(5)
        self.c5 = nn.Sequential(nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(inplace=True))
        self.f6 = nn.Sequential(nn.Linear(120, 84), nn.ReLU(inplace=True))
        self.fc = nn.Linear(84, num_classes)
        self.feature_info = FeatureInfo([FeatureStage("c1", 6, 2), FeatureStage("c3", 16, 4)])

    def forward_features(self, x: Tensor) -> Tensor:
        return self.c3(self.c1(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.f6(self.c5(self.pool(x)))
        return x if pre_logits else self.fc(x)


class ConvNet(ImageClassifier):
    """A compact VGG-style network: stages of two conv-BN-ReLU and a 2x2 max-pool, then an MLP.

    The lecture's "prototypical" architecture — a feature extractor that halves the
    resolution while widening, and decision layers on top — sized for 28x28 images (the
    Fashion-MNIST benchmark's "2 Conv + pooling + BN" family, with two convs per stage).
    As in VGG, an adaptive average pool fixes the map size fed to the first linear layer.
    ``head_norm`` adds BatchNorm to the hidden layer; ``init="pytorch"`` keeps PyTorch's
    default initialisation (uniform, scaled by fan-in) instead of torchvision's Kaiming normal
    (scaled by fan-out). Both are ``--recipe fast``'s choices: on Fashion-MNIST each was worth
    about half a point of accuracy in the same epochs (docs/benchmarks.md). Behind BatchNorm a
    convolution's weight scale sets its effective learning rate (lr / |w|^2), and fan-out
    Kaiming starts these convolutions 2.4x larger, i.e. ~6x slower.
    """

    classifier_name = "fc"

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        widths: tuple[int, ...] = (32, 64),
        hidden: int = 256,
        dropout: float = 0.3,
        head_size: int = 7,
        head_norm: bool = False,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        if init not in ("kaiming", "pytorch"):
            raise CnnzooError(f"convnet init {init!r}: expected 'kaiming' or 'pytorch'")
        self.num_classes = num_classes
        stages: list[nn.Module] = []
        stage_info = []
        prev = in_channels
        for i, width in enumerate(widths):
            stages.append(
                nn.Sequential(ConvBnAct(prev, width), ConvBnAct(width, width), nn.MaxPool2d(2))
            )
            stage_info.append(FeatureStage(f"stages.{i}", width, 2 ** (i + 1)))
            prev = width
        self.stages = nn.Sequential(*stages)
        self.head_size = head_size
        self.pool = nn.AdaptiveAvgPool2d(head_size)
        self.fc1 = nn.Sequential(
            nn.Flatten(),
            nn.Linear(prev * head_size * head_size, hidden, bias=not head_norm),
            *([nn.BatchNorm1d(hidden)] if head_norm else []),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.fc = nn.Linear(hidden, num_classes)
        self.feature_info = FeatureInfo(stage_info)
        if init == "kaiming":
            init_weights_kaiming(self, linear_std=None)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if tuple(x.shape[-2:]) != (self.head_size, self.head_size):
            x = self.pool(x)  # at the head's size pooling is the identity: skip its cost
        x = self.fc1(x)
        return x if pre_logits else self.fc(x)


@register_model(
    task="classification",
    paper=LECUN_1998,
    input_size=(1, 28, 28),
    min_input_size=16,
    family="lenet",
)
def lenet5(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    """LeNet-5 (ReLU / max-pool variant)."""
    return LeNet5(num_classes=num_classes, in_channels=in_channels)


@register_model(
    task="classification",
    paper="Simonyan & Zisserman, Very Deep Convolutional Networks, ICLR 2015 (VGG-style, small)",
    input_size=(1, 28, 28),
    min_input_size=8,
    family="convnet",
)
def convnet(
    num_classes: int = 10,
    in_channels: int = 1,
    widths: tuple[int, ...] = (32, 64),
    hidden: int = 256,
    dropout: float = 0.3,
    head_size: int = 7,
    head_norm: bool = False,
    init: str = "kaiming",
) -> ConvNet:
    """Compact VGG-style CNN for 28x28 inputs; the demo's model."""
    return ConvNet(
        num_classes, in_channels, tuple(widths), hidden, dropout, head_size, head_norm, init
    )
