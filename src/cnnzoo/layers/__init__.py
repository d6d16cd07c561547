"""Reusable blocks shared by several models."""

from cnnzoo.layers.conv import ConvBnAct
from cnnzoo.layers.inception import Inception
from cnnzoo.layers.pyramid import PyramidPooling
from cnnzoo.layers.residual import BasicBlock, Bottleneck, ProjectionShortcut, ZeroPadShortcut

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ConvBnAct",
    "Inception",
    "ProjectionShortcut",
    "PyramidPooling",
    "ZeroPadShortcut",
]
