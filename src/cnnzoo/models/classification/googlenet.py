"""GoogLeNet (Inception v1): nine stacked Inception modules and two auxiliary classifiers.

Szegedy, Liu, Jia, Sermanet, Reed, Anguelov, Erhan, Vanhoucke, Rabinovich, "Going Deeper
with Convolutions", CVPR 2015. The trunk follows Table 1 and Fig. 3, the module Fig. 2(b)
(:class:`cnnzoo.layers.Inception`).

The code follows torchvision's variant, so that its ImageNet weights load unchanged (see
``GoogLeNet.torchvision_key``). Where that variant departs from the paper:

- batch normalisation (eps 1e-3) after every convolution, and no local response
  normalisation (the paper has LRN after the first max-pool and after the 3x3 stem conv);
- the "5x5" branch of every Inception module is a 3x3 convolution (pytorch/vision#906);
- max-pools use ``ceil_mode`` (Caffe's rounding), which keeps Table 1's sizes;
- the auxiliary heads average-pool adaptively to 4x4 (the paper: 5x5 window, stride 3,
  which gives 4x4 on the 14x14 maps of a 224x224 input);
- dropout before the final classifier is 0.2 (the paper: 0.4).
"""

from __future__ import annotations

import re
from functools import partial

from torch import Tensor, nn

from cnnzoo.layers import ConvBnAct, Inception
from cnnzoo.models.base import (
    AuxOutput,
    FeatureInfo,
    FeatureStage,
    ImageClassifier,
    init_weights_kaiming,
)
from cnnzoo.registry import register_model

SZEGEDY_2015 = "Szegedy et al., Going Deeper with Convolutions, CVPR 2015"

# torchvision's BasicConv2d: BN with eps 1e-3 (as in the TensorFlow port its weights came from).
_BatchNorm = partial(nn.BatchNorm2d, eps=1e-3)

# torchvision numbers the Inception branches; cnnzoo names them after Fig. 2(b).
_TORCHVISION_BRANCHES = {"1": "branch1x1", "2": "branch3x3", "3": "branch5x5", "4": "branch_pool"}
_TORCHVISION_BRANCH_KEY = re.compile(r"^(inception\d[a-e])\.branch([1-4])\.")


class InceptionAux(nn.Module):
    """Auxiliary classifier on an intermediate map (Sec. 5): pool, 1x1 conv, two linears.

    ``AdaptiveAvgPool2d(4)`` -> 1x1 conv 128 (+BN, ReLU) -> fc 1024 + ReLU -> dropout -> fc.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        # The paper pools 5x5 with stride 3 (4x4 on 14x14 maps); adaptive pooling gives 4x4
        # at any input size, as torchvision does.
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.conv = ConvBnAct(in_channels, 128, 1, norm_layer=_BatchNorm)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Return auxiliary logits (N, num_classes) from a feature map."""
        x = self.flatten(self.conv(self.pool(x)))
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class GoogLeNet(ImageClassifier):
    """GoogLeNet: stem, Inception 3a-3b, 4a-4e, 5a-5b, global average pool, linear.

    Args:
        num_classes: outputs of the classifier (and of the auxiliary classifiers).
        in_channels: input image channels.
        aux_logits: build the two auxiliary classifiers (after inception4a and 4d); in
            training mode ``forward`` then returns :class:`AuxOutput`.
        dropout: dropout before the final linear layer.
        dropout_aux: dropout inside the auxiliary classifiers.
        small_input: stem for 28x28/32x32 images: a 3x3 stride-1 first convolution and no
            first two max-pools, so the Inception stages see 28/14/7-pixel maps, the same
            sizes as the ImageNet network on 224x224 images.
    """

    classifier_name = "fc"

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        aux_logits: bool = True,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.aux_logits = aux_logits
        conv = partial(ConvBnAct, norm_layer=_BatchNorm)
        # pytorch/vision#906: torchvision's GoogLeNet (and its weights) has a 3x3, not a 5x5,
        # convolution in the "5x5" branch; kept for weight parity.
        inception = partial(Inception, kernel_5x5=3, norm_layer=_BatchNorm)

        if small_input:
            self.conv1 = conv(in_channels, 64, 3)
            self.maxpool1: nn.Module = nn.Identity()
        else:
            self.conv1 = conv(in_channels, 64, 7, stride=2)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        # The paper's LocalRespNorm after maxpool1 and after conv3 is left out: BN replaces it.
        self.conv2 = conv(64, 64, 1)  # Table 1: "#3x3 reduce" of the second stem layer
        self.conv3 = conv(64, 192, 3)
        self.maxpool2 = nn.Identity() if small_input else nn.MaxPool2d(3, 2, ceil_mode=True)

        # Table 1, one row each: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
        self.inception3a = inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = inception(832, 384, 192, 384, 48, 128, 128)

        self.aux1 = InceptionAux(512, num_classes, dropout_aux) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes, dropout_aux) if aux_logits else None

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)  # 0.2 as torchvision; the paper uses 0.4
        self.fc = nn.Linear(1024, num_classes)

        s = 1 if small_input else 2  # stride of conv1 and of each of the first two max-pools
        self.feature_info = FeatureInfo(
            [
                FeatureStage("conv1", 64, s),
                FeatureStage("conv3", 192, s * s),
                FeatureStage("inception3b", 480, s**3),
                FeatureStage("inception4e", 832, s**3 * 2),
                FeatureStage("inception5b", 1024, s**3 * 4),
            ]
        )
        init_weights_kaiming(self)

    def _trunk(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Run the feature extractor; also the auxiliary logits when they are wanted."""
        want_aux = self.training and self.aux1 is not None and self.aux2 is not None
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if want_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if want_aux else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return x, ((aux1, aux2) if aux1 is not None and aux2 is not None else ())

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the output of inception5b, (N, 1024, H/32, W/32) (H/4 with ``small_input``)."""
        return self._trunk(x)[0]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Return logits from the inception5b map (or the pooled, dropped-out features)."""
        x = self.dropout(self.flatten(self.avgpool(x)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor | AuxOutput:
        """Return logits; in training mode with auxiliary heads, ``AuxOutput(logits, aux)``.

        ``aux`` is ``(aux1, aux2)``, the logits of the heads after inception4a and 4d.
        """
        features, aux = self._trunk(x)
        logits = self.forward_head(features)
        return AuxOutput(logits, aux) if aux else logits

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final linear layer and the auxiliary heads' last ones."""
        super().reset_classifier(num_classes)
        for head in (self.aux1, self.aux2):
            if head is not None:
                old = head.fc2
                head.fc2 = nn.Linear(old.in_features, num_classes).to(
                    device=old.weight.device, dtype=old.weight.dtype
                )

    def torchvision_key(self, key: str) -> str | None:  # type: ignore[override]
        """Map a key of torchvision's ``googlenet`` state dict to this model's key.

        An instance method, unlike the base class's static one: whether the auxiliary
        heads' keys are kept (``aux1.*``, ``aux2.*``) or dropped (None) depends on
        ``aux_logits``.
        """
        if key.startswith(("aux1.", "aux2.")):
            return key if self.aux_logits else None
        return _TORCHVISION_BRANCH_KEY.sub(lambda m: f"{m[1]}.{_TORCHVISION_BRANCHES[m[2]]}.", key)


@register_model(
    task="classification",
    paper=SZEGEDY_2015,
    input_size=(3, 224, 224),
    # 15 px: the ceil-mode pools reach 1x1 at inception4; 14 px leaves maxpool3 an empty map.
    min_input_size=15,
    small_input=True,
    torchvision="googlenet",
    family="googlenet",
)
def googlenet(
    num_classes: int = 1000,
    in_channels: int = 3,
    aux_logits: bool = True,
    dropout: float = 0.2,
    dropout_aux: float = 0.7,
    small_input: bool = False,
) -> GoogLeNet:
    """GoogLeNet / Inception v1, torchvision's variant (BN, 3x3 "5x5" branch, aux heads)."""
    return GoogLeNet(num_classes, in_channels, aux_logits, dropout, dropout_aux, small_input)
