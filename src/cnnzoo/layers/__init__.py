"""Reusable blocks shared by several models."""

from cnnzoo.layers.conv import ConvBnAct

__all__ = ["ConvBnAct"]
