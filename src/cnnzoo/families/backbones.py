"""Encoders pre-trained on classification, for every model built on a backbone
(segmentation and detection): which architecture a weights file holds, the builder options
that follow from ``--backbone`` / ``--backbone-weights``, and loading the weights."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import torch

from cnnzoo.errors import CnnzooError
from cnnzoo.registry import model_info

if TYPE_CHECKING:
    from cnnzoo.families.base import TrainConfig

_NOT_BACKBONE_OPTIONS = ("num_classes", "in_channels", "features_only", "out_indices")


def backbone_source(path: str) -> tuple[str | None, dict[str, Any]]:
    """Return the architecture and builder options of classification weights at ``path``.

    A cnnzoo run directory (or its ``model.safetensors`` beside ``model.json``) or a weight
    set's name (``convnet.fmnist``) names them; a bare weights file (e.g. torchvision's
    ``.pth``) does not: ``(None, {})``.

    Raises:
        CnnzooError: if ``path`` does not exist, or names a model that is not a classifier.
    """
    from cnnzoo.models.weights import read_source_spec, resolve_weights_path

    resolve_weights_path(path)  # exists (or is a weight set that can be fetched)
    spec = read_source_spec(path)
    if spec is None:
        return None, {}
    name = spec.get("model")
    if name is None:
        return None, {}
    if model_info(name).task != "classification":
        raise CnnzooError(
            f"--backbone-weights {path} holds a {model_info(name).task} model ({name}); "
            "an encoder starts from a classifier's weights"
        )
    kwargs = {k: v for k, v in spec.get("kwargs", {}).items() if k not in _NOT_BACKBONE_OPTIONS}
    return name, kwargs


def backbone_model_args(cfg: TrainConfig, in_channels: int, num_classes: int) -> dict[str, Any]:
    """Return the ``create_model`` options of ``cfg.model`` for data of these channels/classes.

    ``--backbone`` picks the encoder; ``--backbone-weights`` from a cnnzoo run also brings
    that run's architecture options (e.g. ``small_input``) so that its weights fit.

    Raises:
        CnnzooError: for a model without a backbone given ``--backbone``, a backbone that
            differs from the weights' architecture, or options that contradict the data.
    """
    info = model_info(cfg.model)
    params = inspect.signature(info.builder).parameters
    for key, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if key in cfg.model_kwargs and cfg.model_kwargs[key] != value:
            raise CnnzooError(
                f"model option {key}={cfg.model_kwargs[key]} does not match the data, which "
                f"has {value}; drop the option"
            )
    args: dict[str, Any] = {}
    backbone = cfg.backbone
    if cfg.backbone_weights is not None:
        source, source_kwargs = backbone_source(cfg.backbone_weights)
        if source is not None and backbone is not None and source != backbone:
            raise CnnzooError(
                f"--backbone {backbone} does not match --backbone-weights "
                f"{cfg.backbone_weights}, which holds a {source}; drop --backbone or pick "
                "weights of that architecture"
            )
        backbone = backbone or source
        if "backbone" in params:
            args.update(source_kwargs)
        elif info.family != "segnet":
            raise CnnzooError(
                f"{cfg.model} has no pre-trainable encoder: --backbone-weights applies to "
                "models with a backbone (fcn*, pspnet, encdec, unet, detectors) and to segnet "
                "(a vgg*_bn or convnet run)"
            )
    if backbone is not None:
        if "backbone" in params:
            args["backbone"] = backbone
        elif cfg.backbone_weights is None:
            raise CnnzooError(
                f"{cfg.model} has no backbone option: it builds its own encoder (drop --backbone)"
            )
    args.update(cfg.model_kwargs)
    args.update(num_classes=num_classes, in_channels=in_channels)
    return args


def load_backbone_weights(
    model: torch.nn.Module, path: str, backbone: str | None = None
) -> dict[str, Any]:
    """Fill a segmentation model's encoder with classification weights.

    Models with a ``backbone`` (a features-only classifier) load the weights into it; a model
    that loads its encoder itself says so with a ``load_encoder_weights`` method (SegNet
    copies a ``vgg*_bn`` classifier's convolutions). A different
    number of input channels is adapted in the first convolution, the classifier head is
    not needed.

    Args:
        model: the segmentation model.
        path: a weight set's name, a cnnzoo run directory, ``.safetensors`` or torchvision
            ``.pth``.
        backbone: the weights' architecture, when ``path`` does not say (models with
            ``load_encoder_weights``).

    Returns:
        A summary (tensors loaded, adapted convolution) for ``config.yaml``.

    Raises:
        CnnzooError: for weights that do not fit the encoder, or a model without one.
    """
    from cnnzoo.models.features import FeatureExtractor
    from cnnzoo.models.weights import load_weights

    encoder = getattr(model, "backbone", None)
    if isinstance(encoder, FeatureExtractor):
        report = load_weights(encoder, path)
        return {"path": str(path), "loaded": report.loaded, "adapted_conv": report.adapted_conv}
    if hasattr(model, "load_encoder_weights"):  # a model that loads its encoder itself
        report = model.load_encoder_weights(path, backbone)
        return {"path": str(path), "loaded": report.loaded, "adapted_conv": report.adapted_conv}
    raise CnnzooError(f"{type(model).__name__} has no encoder to load classification weights into")
