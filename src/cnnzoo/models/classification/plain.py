"""Plain networks: the ResNets without their skip connections.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016: Fig. 3
(middle) and Table 2 (plain-18/34 on ImageNet), Fig. 6 left (plain-20 ... plain-110 on
CIFAR-10). Deeper plain networks train to a *higher* error than shallower ones — the
degradation problem residual learning solves. Each builder here is its ResNet twin with
``residual=False``, so the comparison changes nothing but the shortcuts: the CIFAR pairs
have identical parameters (option-A shortcuts have none); plain-18/34 lack only the three
projection shortcuts of resnet18/34.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from cnnzoo.layers import BasicBlock
from cnnzoo.models.classification.resnet import HE_2016, ResNet
from cnnzoo.models.classification.resnet_cifar import CifarResNet
from cnnzoo.registry import register_imagenet_classifier, register_model

PLAIN_IMAGENET = HE_2016 + " (plain baseline, Fig. 3 middle)"


def _register_cifar() -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    return register_model(
        task="classification",
        paper=HE_2016 + " (plain baseline, Sec. 4.2, CIFAR-10)",
        input_size=(3, 32, 32),
        min_input_size=1,  # as resnet20 ... resnet110
        small_input=False,
        family="plain",
    )


@register_imagenet_classifier(PLAIN_IMAGENET, "plain")
def plain18(**kwargs: Any) -> ResNet:
    """Plain-18: resnet18 without skip connections (27.94 % top-1 error in Table 2)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), residual=False, **kwargs)


@register_imagenet_classifier(PLAIN_IMAGENET, "plain")
def plain34(**kwargs: Any) -> ResNet:
    """Plain-34: resnet34 without skip connections (28.54 % top-1 error in Table 2)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), residual=False, **kwargs)


@_register_cifar()
def plain20(**kwargs: Any) -> CifarResNet:
    """Plain-20: resnet20 without skip connections."""
    return CifarResNet(20, residual=False, **kwargs)


@_register_cifar()
def plain32(**kwargs: Any) -> CifarResNet:
    """Plain-32: resnet32 without skip connections."""
    return CifarResNet(32, residual=False, **kwargs)


@_register_cifar()
def plain44(**kwargs: Any) -> CifarResNet:
    """Plain-44: resnet44 without skip connections."""
    return CifarResNet(44, residual=False, **kwargs)


@_register_cifar()
def plain56(**kwargs: Any) -> CifarResNet:
    """Plain-56: resnet56 without skip connections (higher error than plain-20, Fig. 6)."""
    return CifarResNet(56, residual=False, **kwargs)


@_register_cifar()
def plain110(**kwargs: Any) -> CifarResNet:
    """Plain-110: resnet110 without skip connections (the paper reports >60 % error, Fig. 6)."""
    return CifarResNet(110, residual=False, **kwargs)
