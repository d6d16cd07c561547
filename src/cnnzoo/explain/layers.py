"""Which layers of a model an explanation can look at: the stages of its ``feature_info``.

Every cnnzoo classifier publishes ``feature_info``; a segmenter or detector built on a
backbone publishes it on ``model.backbone`` (only the stages it uses), and the segmenters
built without one (U-Net, SegNet, the full-resolution FCN) publish their own. The names
returned here are dotted module paths from the model's root (``stages.3``,
``backbone.stages.2``), so they can be given to ``--layer`` as printed. No model is
special-cased by name.
"""

from __future__ import annotations

from torch import nn

from cnnzoo.errors import CnnzooError
from cnnzoo.models.base import FeatureStage


def stages_of(model: nn.Module) -> list[FeatureStage]:
    """Return the model's stages, shallow to deep, with module paths from the model's root.

    Stages are sorted by ``reduction`` (stable, so equal reductions keep their order); a
    backbone's stages get the ``backbone.`` prefix.

    Returns:
        The stages; empty when the model publishes no ``feature_info`` (its own or its
        backbone's).
    """
    owner, prefix = model, ""
    info = getattr(model, "feature_info", None)
    if not info:
        owner, prefix = getattr(model, "backbone", None), "backbone."
        info = getattr(owner, "feature_info", None)
    if not info:
        return []
    names = {n for n, _ in owner.named_modules()}  # type: ignore[union-attr]
    stages = [
        FeatureStage(prefix + _path_in(s.module, names), s.channels, s.reduction) for s in info
    ]
    return sorted(stages, key=lambda s: s.reduction)


def _path_in(module: str, names: set[str]) -> str:
    """The path of ``module`` inside its owner: as given, or (a wrapper such as
    :class:`~cnnzoo.models.features.FeatureExtractor` keeps the classifier one level down)
    the shortest path that ends with it."""
    if module in names:
        return module
    inner = sorted((n for n in names if n.endswith("." + module)), key=len)
    return inner[0] if inner else module


def default_layer(model: nn.Module) -> str:
    """Return the deepest stage (the last of the largest reduction): Grad-CAM's usual layer.

    Raises:
        CnnzooError: for a model without ``feature_info``.
    """
    stages = stages_of(model)
    if not stages:
        raise CnnzooError(_no_stages(model))
    return stages[-1].module


def resolve_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Module]:
    """Find the module an explanation reads.

    Args:
        model: the model.
        layer: a stage name from :func:`stages_of` (``stages.2``), a stage index into them
            (``0`` the shallowest, ``-1`` the deepest), any dotted module path of the model,
            or None for :func:`default_layer`.

    Returns:
        ``(name, module)``.

    Raises:
        CnnzooError: for a layer the model does not have (the valid stage names listed), or
            a model without ``feature_info`` when ``layer`` is None or an index.
    """
    stages = stages_of(model)
    if layer is None:
        name = default_layer(model)
    elif _is_int(layer):
        if not stages:
            raise CnnzooError(_no_stages(model))
        index = int(layer)
        if not -len(stages) <= index < len(stages):
            raise CnnzooError(
                f"layer index {index} is out of range: {_model_name(model)} has "
                f"{len(stages)} stages ({', '.join(s.module for s in stages)})"
            )
        name = stages[index].module
    else:
        name = layer
    modules = dict(model.named_modules())
    if not name or name not in modules:
        valid = ", ".join(s.module for s in stages) or "none (it has no feature_info)"
        raise CnnzooError(
            f"unknown layer {layer!r} for {_model_name(model)}: its stages are {valid} "
            "(or give any module path that `print(model)` shows)"
        )
    return name, modules[name]


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _model_name(model: nn.Module) -> str:
    return getattr(model, "model_name", None) or type(model).__name__


def _no_stages(model: nn.Module) -> str:
    return (
        f"{_model_name(model)} publishes no feature_info, so it has no stage to explain "
        "(patch-wise models classify each window separately): use --method occlusion, or "
        "--layer with a module path"
    )
