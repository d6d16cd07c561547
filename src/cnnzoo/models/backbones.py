"""A registered classifier as a segmentation or detection backbone: the stage maps at the
strides a head asks for (the lecture's "feature extractor trained on classification, reused
everywhere"). Built through the registry's ``features_only`` door
(:class:`~cnnzoo.models.features.FeatureExtractor`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cnnzoo.errors import CnnzooError
from cnnzoo.models.features import FeatureExtractor
from cnnzoo.registry import create_model


def build_backbone(
    name: str, in_channels: int, strides: Sequence[int | None], **backbone_kwargs: Any
) -> FeatureExtractor:
    """Build ``name`` as a feature backbone returning one map per requested stride.

    Args:
        name: a registered classifier.
        in_channels: channels of the input image.
        strides: the wanted reductions, deepest first relative to the coarsest map: ``None``
            stands for the backbone's deepest stage, ``k`` for the stage whose reduction
            is that of the deepest divided by ``k`` (e.g. ``(None, 2, 4)`` gives
            pool5/pool4/pool3 of VGG). The deepest stage of each reduction is taken.
        **backbone_kwargs: options of the backbone builder, e.g. ``small_input=True``.

    Returns:
        The backbone; ``forward`` returns the maps in the order of ``strides``.

    Raises:
        CnnzooError: if the backbone has no stage at one of the wanted reductions.
    """
    # A shapes-only build on the meta device reads the stage list without allocating weights.
    with torch.device("meta"):
        probe = create_model(name, in_channels=in_channels, features_only=True, **backbone_kwargs)
    reductions = probe.feature_info.reduction()
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
    return create_model(
        name,
        in_channels=in_channels,
        features_only=True,
        out_indices=indices,
        **backbone_kwargs,
    )
