"""A registered classifier as a segmentation or detection backbone: the stage maps at the
strides a head asks for (the lecture's "feature extractor trained on classification, reused
everywhere"). Built through the registry's ``features_only`` door
(:class:`~cnnzoo.models.features.FeatureExtractor`).

This is the one way a cnnzoo model gets a backbone: FCN, PSPNet (plain or dilated), the
encoder-decoder, U-Net's encoder option, Fast R-CNN, YOLOv3 and SSD all call
:func:`build_backbone`; :func:`stage_reductions` tells them which strides a classifier offers.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from cnnzoo.errors import CnnzooError
from cnnzoo.models.features import FeatureExtractor
from cnnzoo.models.meta import shapes_only
from cnnzoo.registry import create_model, model_info

DILATED_OUTPUT_STRIDE = 8
"""Output stride of a dilated backbone (PSPNet's, DeepLab's): its last two stages keep
stride 8 and dilate their convolutions by 2 and 4 instead."""


def stage_reductions(name: str, in_channels: int, **backbone_kwargs: Any) -> list[int]:
    """Return the reduction (stride) of each stage of classifier ``name``, shallowest first.

    Read from a shapes-only build on the meta device (no weights allocated, no
    initialisation run: milliseconds even for ResNet-152).

    Raises:
        CnnzooError: if ``name`` has no stages (``feature_info``), i.e. is no classifier.
    """
    with shapes_only():
        probe = create_model(name, in_channels=in_channels, **backbone_kwargs)
    if not getattr(probe, "feature_info", None):
        raise CnnzooError(
            f"model {name!r} has no feature_info, so it cannot be a backbone; "
            "use a classification model such as 'resnet18' or 'convnet'"
        )
    return list(probe.feature_info.reduction())


def build_backbone(
    name: str,
    in_channels: int,
    strides: Sequence[int | None],
    dilated: bool = False,
    **backbone_kwargs: Any,
) -> FeatureExtractor:
    """Build ``name`` as a feature backbone returning one map per requested stride.

    Args:
        name: a registered classifier.
        in_channels: channels of the input image.
        strides: the wanted reductions, deepest first relative to the coarsest map: ``None``
            stands for the backbone's deepest stage, ``k`` for the stage whose reduction
            is that of the deepest divided by ``k`` (e.g. ``(None, 2, 4)`` gives
            pool5/pool4/pool3 of VGG). The deepest stage of each reduction is taken.
        dilated: dilate the last two stages (ResNets' ``replace_stride_with_dilation``) so
            that they stay at stride 8; ``strides`` still name the stages by their undilated
            reductions (``(None, 2)``: the last stage and the one before it).
        **backbone_kwargs: options of the backbone builder, e.g. ``small_input=True``.

    Returns:
        The backbone; ``forward`` returns the maps in the order of ``strides``.

    Raises:
        CnnzooError: if the backbone has no stage at one of the wanted reductions; with
            ``dilated``, if it cannot be dilated (no ``replace_stride_with_dilation``), if
            ``backbone_kwargs`` sets that option too, or if the dilated maps are not at
            stride 8 (e.g. with ``small_input=True``).
    """
    if dilated:
        _check_dilatable(name, backbone_kwargs)
    reductions = stage_reductions(name, in_channels, **backbone_kwargs)
    coarsest = reductions[-1]
    indices = []
    for divisor in strides:
        want = coarsest if divisor is None else coarsest // divisor
        matches = [i for i, r in enumerate(reductions) if r == want]
        if not matches or (divisor is not None and coarsest % divisor):
            raise CnnzooError(
                f"backbone {name!r} has stages at strides {reductions}, none at stride {want} "
                f"(1/{divisor} of its deepest); choose a backbone with stride-halving stages "
                "such as 'resnet18' or 'vgg16_bn'"
            )
        indices.append(matches[-1])
    if dilated:
        backbone_kwargs["replace_stride_with_dilation"] = (False, True, True)
    backbone = create_model(
        name, in_channels=in_channels, features_only=True, out_indices=indices, **backbone_kwargs
    )
    got = backbone.feature_info.reduction()
    if dilated and any(r != DILATED_OUTPUT_STRIDE for r in got):
        raise CnnzooError(
            f"dilated backbone {name!r} gives maps at strides {got}, not "
            f"{DILATED_OUTPUT_STRIDE}; build it with its ImageNet stem (small_input=False)"
        )
    return backbone


def _check_dilatable(name: str, backbone_kwargs: dict[str, Any]) -> None:
    if "replace_stride_with_dilation" not in inspect.signature(model_info(name).builder).parameters:
        raise CnnzooError(
            f"backbone {name!r} cannot be dilated: dilated=True needs a ResNet backbone "
            "('resnet18' ... 'resnet152'); use dilated=False with this backbone"
        )
    if "replace_stride_with_dilation" in backbone_kwargs:
        raise CnnzooError(
            "dilated=True sets replace_stride_with_dilation=(False, True, True) itself; "
            "pass one or the other"
        )
