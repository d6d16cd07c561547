"""A registered classifier as a segmentation or detection backbone: the stage maps at the
strides a head asks for (the lecture's "feature extractor trained on classification, reused
everywhere"). Built through the registry's ``features_only`` door
(:class:`~cnnzoo.models.features.FeatureExtractor`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnnzoo.errors import CnnzooError
from cnnzoo.models.features import FeatureExtractor
from cnnzoo.models.meta import shapes_only
from cnnzoo.registry import create_model


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
    return create_model(
        name,
        in_channels=in_channels,
        features_only=True,
        out_indices=indices,
        **backbone_kwargs,
    )
