"""AlexNet, in torchvision's single-tower layout.

Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep Convolutional Neural
Networks", NeurIPS 2012 (Fig. 2, Section 3). Five convolutions, three of them followed by
overlapping 3x3/2 max-pooling, then three fully-connected layers with dropout.

The code follows torchvision's ``alexnet`` (so its ImageNet weights load and the outputs
match), which torchvision bases on Krizhevsky's "One weird trick for parallelizing
convolutional neural networks" (arXiv:1404.5997, 2014). Where that departs from the 2012
paper, a comment says so at the spot: one tower instead of two GPU halves, widths
64-192-384-256-256 instead of 96-256-384-384-256, no local response normalisation, padding
chosen so that a 224x224 input works, and dropout in front of (not behind) FC6 and FC7.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from cnnzoo.layers import ConvBnAct
from cnnzoo.models.base import FeatureInfo, FeatureStage, ImageClassifier, init_weights_kaiming
from cnnzoo.registry import register_model

KRIZHEVSKY_2012 = (
    "Krizhevsky, Sutskever, Hinton, ImageNet Classification with Deep Convolutional "
    "Neural Networks, NeurIPS 2012"
)

# torchvision's module names -> cnnzoo's (parameter suffixes such as ``.weight`` are kept).
_TORCHVISION_NAMES = {
    "features.0": "stages.0.0.conv",
    "features.3": "stages.1.0.conv",
    "features.6": "stages.2.0.conv",
    "features.8": "stages.2.1.conv",
    "features.10": "stages.2.2.conv",
    "classifier.1": "fc6.linear",
    "classifier.4": "fc7.linear",
    "classifier.6": "fc8",
}


def _conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int | None = None,
) -> ConvBnAct:
    # The paper has no batch norm (it predates it); its convolutions carry a bias.
    return ConvBnAct(in_channels, out_channels, kernel_size, stride, padding, norm_layer=None)


def _overlapping_pool() -> nn.MaxPool2d:
    # Section 3.4: 3x3 windows with stride 2 overlap; the paper reports 0.4 % lower top-1 error.
    return nn.MaxPool2d(kernel_size=3, stride=2)


def _fully_connected(in_features: int, out_features: int, dropout: float) -> nn.Sequential:
    """Return ``Dropout -> Linear -> ReLU``, torchvision's order for AlexNet's FC6 and FC7."""
    return nn.Sequential(
        OrderedDict(
            drop=nn.Dropout(dropout),
            linear=nn.Linear(in_features, out_features),
            act=nn.ReLU(inplace=True),
        )
    )


class AlexNet(ImageClassifier):
    """conv1 - pool - conv2 - pool - conv3 - conv4 - conv5 - pool - FC6 - FC7 - FC8.

    The convolutions are grouped into three ``stages``, each ending in a max-pool; their
    outputs (strides 8, 16, 32) are the feature maps that ``feature_info`` lists.
    """

    classifier_name = "fc8"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.num_classes = num_classes
        # The paper's conv1 has 96 kernels, conv2 256, conv4 384, each split in halves over two
        # GPUs, with conv2/4/5 seeing only their own GPU's half; one tower of the narrower
        # torchvision widths replaces them. The LRN layers after conv1 and conv2 are left out,
        # as in torchvision (VGG's Table 3, config A-LRN vs A, finds LRN does not help).
        self.stages = nn.Sequential(
            nn.Sequential(_conv(in_channels, 64, 11, stride=4, padding=2), _overlapping_pool()),
            nn.Sequential(_conv(64, 192, 5), _overlapping_pool()),
            nn.Sequential(
                _conv(192, 384, 3), _conv(384, 256, 3), _conv(256, 256, 3), _overlapping_pool()
            ),
        )
        # conv1's padding of 2 (the paper does not give one) maps 224x224 inputs to 55x55, the
        # size of Fig. 2; adaptive pooling makes FC6 see 6x6 maps for any input of >= 63 pixels.
        self.pool = nn.AdaptiveAvgPool2d((6, 6))
        # Section 4.2 drops out the outputs of FC6 and FC7; torchvision (followed here, so that
        # training behaves the same) drops out the inputs of FC6 and FC7 instead.
        self.fc6 = _fully_connected(256 * 6 * 6, 4096, dropout)
        self.fc7 = _fully_connected(4096, 4096, dropout)
        self.fc8 = nn.Linear(4096, num_classes)
        self.feature_info = FeatureInfo(
            [
                FeatureStage("stages.0", 64, 8),
                FeatureStage("stages.1", 192, 16),
                FeatureStage("stages.2", 256, 32),
            ]
        )
        # The paper draws all weights from N(0, 0.01) and sets the biases of conv2, conv4, conv5
        # and the FC layers to 1; as for its other models, cnnzoo uses He initialisation for the
        # convolutions, N(0, 0.01) for the linear layers and zero biases.
        init_weights_kaiming(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = torch.flatten(self.pool(x), 1)
        x = self.fc7(self.fc6(x))
        return x if pre_logits else self.fc8(x)

    @staticmethod
    def torchvision_key(key: str) -> str | None:
        """Map a torchvision ``alexnet`` state-dict key to this model's.

        Returns:
            The cnnzoo key; a key torchvision's AlexNet does not have comes back unchanged,
            so that loading reports it as unexpected.
        """
        module, _, param = key.rpartition(".")
        return f"{_TORCHVISION_NAMES[module]}.{param}" if module in _TORCHVISION_NAMES else key


@register_model(
    task="classification",
    paper=KRIZHEVSKY_2012,
    input_size=(3, 224, 224),
    # conv1 (11x11/4, pad 2) and three 3x3/2 pools: 63 -> 15 -> 7 -> 7 -> 3 -> 3 -> 1.
    min_input_size=63,
    small_input=False,
    torchvision="alexnet",
    family="alexnet",
)
def alexnet(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> AlexNet:
    """AlexNet, torchvision's single-tower layout (61.1 M parameters at 1000 classes)."""
    return AlexNet(num_classes=num_classes, in_channels=in_channels, dropout=dropout)
