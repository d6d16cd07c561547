"""ResNet-20/32/44/56/110 for CIFAR-10 (32x32 images).

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, Sec. 4.2:
a 3x3 convolution with 16 filters, then three stages of n basic blocks on 32x32, 16x16 and
8x8 maps with 16, 32 and 64 filters, global average pooling and a fully-connected layer:
6n + 2 weighted layers. The trunk is :class:`~cnnzoo.models.classification.resnet.ResNet`
with its small-input stem, three stages and option-A shortcuts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers import BasicBlock, ConvBnAct, ZeroPadShortcut
from cnnzoo.models.classification.resnet import HE_2016, ResNet
from cnnzoo.registry import register_model

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
"""The non-linearities a CIFAR ResNet/plain net can use (``activation=``): the lecture's
recap contrasts the sigmoid (saturating, derivative at most 1/4) with the ReLU."""


class CifarResNet(ResNet):
    """The 6n+2-layer CIFAR ResNet of He et al. 2016, Sec. 4.2.

    Args:
        depth: number of weighted layers, 6n + 2 (20, 32, 44, 56, 110, ...).
        num_classes: outputs of the classifier.
        in_channels: channels of the input image.
        zero_init_residual: start each block's last BN scale at zero.
        residual: False removes the skip connections (the paper's plain-20 ... plain-110).
        activation: the non-linearity after every convolution-BN and after each block's sum:
            ``"relu"`` (the paper's), ``"sigmoid"`` or ``"tanh"`` (see :data:`ACTIVATIONS`).
        norm: False removes every BatchNorm; the convolutions then carry a bias.

    Raises:
        ValueError: for a depth that is not 6n + 2.
        CnnzooError: for an unknown ``activation``, or ``zero_init_residual`` without
            ``norm`` (there is no BN scale to zero).
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        residual: bool = True,
        activation: str = "relu",
        norm: bool = True,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise CnnzooError(
                f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}"
            )
        if zero_init_residual and not norm:
            raise CnnzooError("zero_init_residual=True needs norm=True (it zeroes a BN scale)")
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        super().__init__(
            BasicBlock,
            (n, n, n),
            num_classes=num_classes,
            in_channels=in_channels,
            small_input=True,  # Sec. 4.2: one 3x3 convolution, no max-pool, on 32x32 inputs
            zero_init_residual=zero_init_residual,
            residual=residual,
            widths=(16, 32, 64),
            # Sec. 4.2: "we use identity shortcuts in all cases (i.e., option A)": the
            # parameter-free zero-padding shortcut keeps plain and residual nets the same size.
            shortcut_layer=ZeroPadShortcut,
        )
        self.activation = activation
        self.norm = norm
        if activation != "relu":
            self._replace_activations(ACTIVATIONS[activation])
        if not norm:
            self._remove_batchnorm()

    def _replace_activations(self, act_layer: type[nn.Module]) -> None:
        """Swap every ReLU (after each conv-BN and after each block's sum) for ``act_layer``."""
        for module in list(self.modules()):
            if isinstance(module, (ConvBnAct, BasicBlock)) and isinstance(
                getattr(module, "act", None), nn.ReLU
            ):
                module.act = act_layer()

    def _remove_batchnorm(self) -> None:
        """Drop every conv-BN's BN and give its convolution a bias (He-normal, zero bias)."""
        for module in list(self.modules()):
            if isinstance(module, ConvBnAct) and hasattr(module, "bn"):
                old = module.conv
                conv = nn.Conv2d(
                    old.in_channels, old.out_channels, old.kernel_size, old.stride,
                    old.padding, old.dilation, old.groups, bias=True,
                )  # fmt: skip
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
                module.conv = conv  # same name and place: Sequential keeps the order
                del module.bn

    @staticmethod
    def torchvision_key(key: str) -> str | None:
        """Always raises: torchvision has no CIFAR ResNet."""
        raise NotImplementedError("torchvision has no CIFAR ResNet; train it with cnnzoo")


def _register() -> Callable[[Callable[..., CifarResNet]], Callable[..., CifarResNet]]:
    # min_input_size=1: every strided 3x3 convolution (padding 1) and the subsampling
    # shortcut map a size >= 1 to ceil(size / 2), so both branches always agree in shape.
    return register_model(
        task="classification",
        paper=HE_2016 + " (Sec. 4.2, CIFAR-10)",
        input_size=(3, 32, 32),
        min_input_size=1,
        small_input=False,
        family="resnet_cifar",
    )


@_register()
def resnet20(**kwargs: Any) -> CifarResNet:
    """ResNet-20 (n = 3); the paper lists 0.27 M parameters, 8.75 % CIFAR-10 error."""
    return CifarResNet(20, **kwargs)


@_register()
def resnet32(**kwargs: Any) -> CifarResNet:
    """ResNet-32 (n = 5); the paper lists 0.46 M parameters, 7.51 % CIFAR-10 error."""
    return CifarResNet(32, **kwargs)


@_register()
def resnet44(**kwargs: Any) -> CifarResNet:
    """ResNet-44 (n = 7); the paper lists 0.66 M parameters, 7.17 % CIFAR-10 error."""
    return CifarResNet(44, **kwargs)


@_register()
def resnet56(**kwargs: Any) -> CifarResNet:
    """ResNet-56 (n = 9); the paper lists 0.85 M parameters, 6.97 % CIFAR-10 error."""
    return CifarResNet(56, **kwargs)


@_register()
def resnet110(**kwargs: Any) -> CifarResNet:
    """ResNet-110 (n = 18); the paper lists 1.7 M parameters, 6.43 % CIFAR-10 error."""
    return CifarResNet(110, **kwargs)
