"""Semantic segmentation architectures; importing this registers them."""

from cnnzoo.models.segmentation import (  # noqa: F401
    encdec,
    fcn,
    patchwise,
    pspnet,
    segnet,
    unet,
)
