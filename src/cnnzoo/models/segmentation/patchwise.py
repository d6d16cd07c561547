"""Patch-wise classification: label each pixel by classifying the patch centred on it.

The lecture's "naive approach" to semantic segmentation, as in Farabet, Couprie, Najman &
LeCun, "Learning Hierarchical Features for Scene Labeling", TPAMI 2013, and Pinheiro &
Collobert, "Recurrent Convolutional Neural Networks for Scene Labeling", ICML 2014: a small
CNN classifier sees a ``patch x patch`` window around a pixel and predicts that pixel's class.

The naive semantics are kept on purpose: every pixel's window is cut out separately
(``F.unfold`` on the zero-padded image) and classified on its own, so a pixel's logits depend
only on its own patch, and neighbouring windows share no computation — which is why the
approach is slow, and what fully convolutional networks fix. To bound memory, windows are cut
out and classified a band of rows at a time, at most about ``chunk`` windows per batch.
The output has exactly the input's size (padding by ``patch // 2`` gives one window per pixel).

Batch norm caveat: in training mode the classifier's batch norm mixes the windows of one
chunk, as any batch; in eval mode each window is classified independently.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers import ConvBnAct
from cnnzoo.models.base import init_weights_kaiming
from cnnzoo.registry import register_model

FARABET_2013 = (
    "Farabet, Couprie, Najman & LeCun, Learning Hierarchical Features for Scene Labeling, "
    "TPAMI 2013; Pinheiro & Collobert, Recurrent Convolutional Neural Networks for Scene "
    "Labeling, ICML 2014"
)


class PatchClassifier(nn.Sequential):
    """A small CNN for one ``patch x patch`` window: conv-BN-ReLU, max-pool, conv-BN-ReLU,
    max-pool, conv-BN-ReLU, global average pool, linear."""

    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__(
            ConvBnAct(in_channels, width),
            nn.MaxPool2d(2, ceil_mode=True),
            ConvBnAct(width, 2 * width),
            nn.MaxPool2d(2, ceil_mode=True),
            ConvBnAct(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * width, num_classes),
        )


class PatchwiseSegmenter(nn.Module):
    """Classify every pixel's ``patch x patch`` neighbourhood with a :class:`PatchClassifier`.

    Args:
        num_classes: classes predicted per pixel.
        in_channels: input image channels.
        patch: window side, odd so that the pixel sits at its centre (15 by default).
        width: channels of the classifier's first convolution.
        chunk: about how many windows are classified per batch.

    Raises:
        CnnzooError: for an even or non-positive ``patch`` or a non-positive ``chunk``.
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        patch: int = 15,
        width: int = 16,
        chunk: int = 4096,
    ) -> None:
        super().__init__()
        if patch < 1 or patch % 2 == 0:
            raise CnnzooError(f"patch must be a positive odd number (centred window), got {patch}")
        if chunk < 1:
            raise CnnzooError(f"chunk must be a positive number of windows, got {chunk}")
        self.num_classes = num_classes
        self.patch = patch
        self.chunk = chunk
        self.classifier = PatchClassifier(num_classes, in_channels, width)
        init_weights_kaiming(self, linear_std=None)

    def forward(self, x: Tensor) -> Tensor:
        """Return per-pixel logits (N, num_classes, H, W), one window classified per pixel."""
        n, c, h, w = x.shape
        p, r = self.patch, self.patch // 2
        padded = F.pad(x, (r, r, r, r))
        rows = max(1, self.chunk // (n * w))  # rows of windows per band
        bands = []
        for top in range(0, h, rows):
            band_h = min(rows, h - top)
            # (N, C*p*p, band_h*W): the window of every pixel of rows top .. top + band_h - 1
            windows = F.unfold(padded[:, :, top : top + band_h + 2 * r], p)
            windows = windows.transpose(1, 2).reshape(n * band_h * w, c, p, p)
            logits = self.classifier(windows)  # (N*band_h*W, num_classes)
            bands.append(logits.reshape(n, band_h, w, -1))
        return torch.cat(bands, dim=1).permute(0, 3, 1, 2).contiguous()


@register_model(
    task="segmentation",
    paper=FARABET_2013,
    input_size=(3, 64, 64),
    min_input_size=1,
    family="patchwise",
)
def patchwise(
    num_classes: int = 21,
    in_channels: int = 3,
    patch: int = 15,
    width: int = 16,
    chunk: int = 4096,
) -> PatchwiseSegmenter:
    """The naive approach: a small CNN classifies the patch around each pixel."""
    return PatchwiseSegmenter(num_classes, in_channels, patch, width, chunk)
