"""Reusable blocks shared by several models."""

from cnnzoo.layers.conv import ConvBnAct, ExtraLayer
from cnnzoo.layers.inception import Inception
from cnnzoo.layers.mobile import ChannelShuffle, DepthwiseSeparableConv, InvertedResidual
from cnnzoo.layers.pyramid import PyramidPooling
from cnnzoo.layers.residual import BasicBlock, Bottleneck, ProjectionShortcut, ZeroPadShortcut

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ChannelShuffle",
    "ConvBnAct",
    "DepthwiseSeparableConv",
    "ExtraLayer",
    "Inception",
    "InvertedResidual",
    "ProjectionShortcut",
    "PyramidPooling",
    "ZeroPadShortcut",
]
