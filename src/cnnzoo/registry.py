"""Build any model by name: ``@register_model`` next to each builder, ``create_model`` as the door.

Each entry carries a small :class:`ModelInfo` (task, paper, input sizes, torchvision twin),
in the way timm keeps metadata beside the model rather than inside it.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from cnnzoo.errors import CnnzooError

TASKS = (
    "classification",
    "segmentation",
    "detection",
    "reconstruction",
    "generation",
    "translation",
)


@dataclass(frozen=True)
class ModelInfo:
    """What cnnzoo knows about a model without building it.

    Attributes:
        name: registry name, e.g. ``"resnet18"``.
        task: one of :data:`TASKS`.
        paper: short citation, "Authors, Title, Venue Year".
        input_size: default input as (channels, height, width).
        min_input_size: smallest height/width the model accepts (after its own downsampling).
        small_input: the builder takes ``small_input=True`` for a stem without early
            downsampling (28x28 or 32x32 images); when False, smaller images are resized
            up to ``min_input_size`` by the data pipeline.
        small_input_below: images smaller than this use the small-input variant when there
            is one (default: ``min_input_size``); ImageNet ResNets switch below 64 pixels,
            where their 4x-downsampling stem would leave final maps of 2x2 or less.
        torchvision: the torchvision builder with the same architecture (parity oracle), if any.
        family: architecture family, e.g. ``"resnet"``.
        builder: the function that builds the model.
        defaults: keyword arguments the builder is called with unless overridden.
    """

    name: str
    task: str
    paper: str
    input_size: tuple[int, int, int]
    min_input_size: int
    small_input: bool
    small_input_below: int
    torchvision: str | None
    family: str
    builder: Callable[..., nn.Module] = field(repr=False, compare=False)
    defaults: dict[str, Any] = field(default_factory=dict, compare=False)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    *,
    task: str,
    paper: str,
    input_size: tuple[int, int, int] = (3, 224, 224),
    min_input_size: int = 32,
    small_input: bool = False,
    small_input_below: int | None = None,
    torchvision: str | None = None,
    family: str = "",
    name: str | None = None,
    **defaults: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model builder under its function name (or ``name``).

    Returns:
        The decorator; it returns the builder unchanged.

    Raises:
        ValueError: for an unknown task or a name registered twice (programming errors).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is registered twice")
        _REGISTRY[key] = ModelInfo(
            name=key,
            task=task,
            paper=paper,
            input_size=input_size,
            min_input_size=min_input_size,
            small_input=small_input,
            small_input_below=min_input_size if small_input_below is None else small_input_below,
            torchvision=torchvision,
            family=family or key,  # a model of its own family unless told
            builder=fn,
            defaults=dict(defaults),
        )
        return fn

    return decorator


def register_imagenet_classifier(
    paper: str, family: str, torchvision: str | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """:func:`register_model` for an ImageNet-layout classifier (3x224x224) whose strided
    layers are all padded, so each maps any size >= 1 to ceil(size / 2) and global average
    pooling ends in 1x1: any input size runs (``min_input_size=1``). Below 64 pixels the 32x
    downsampling would leave maps of 2x2 or less, so the builder's ``small_input`` stem takes
    over (``small_input_below=64``). ResNet, the plain nets, MobileNet and ShuffleNet.

    Returns:
        The decorator.
    """
    return register_model(
        task="classification",
        paper=paper,
        input_size=(3, 224, 224),
        min_input_size=1,
        small_input=True,
        small_input_below=64,
        torchvision=torchvision,
        family=family,
    )


def _ensure_loaded() -> None:
    # Importing the models package runs every @register_model decorator once.
    import cnnzoo.models  # noqa: F401


def model_info(name: str) -> ModelInfo:
    """Return the :class:`ModelInfo` of a registered model.

    Raises:
        CnnzooError: if ``name`` is not registered; the message lists close matches.
    """
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `cnnzoo models`"
        raise CnnzooError(f"unknown model {name!r}; {hint}") from None


def _is_weight_name(text: str) -> bool:
    """A string that is no file or folder and no path: a weight set's name or tag."""
    return not Path(text).exists() and "/" not in text and "\\" not in text


def list_models(task: str | None = None, *, filter: str | Sequence[str] = ()) -> list[str]:
    """Return the sorted registered model names, optionally only those of one ``task`` and
    those matching ``filter`` (shell-style wildcards, as timm's ``list_models("resnet*")``; a
    list keeps names matching any of its patterns).

    Examples: ``list_models("detection")``, ``list_models(filter="resnet*")``,
    ``list_models("classification", filter=["vgg*", "*net"])``.

    Raises:
        CnnzooError: for a task that is not one of :data:`TASKS`.
    """
    _ensure_loaded()
    if task is not None and task not in TASKS:
        hint = f"; for names use filter={task!r}" if any(c in task for c in "*?[") else ""
        raise CnnzooError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}{hint}")
    patterns = [filter] if isinstance(filter, str) else list(filter)
    return sorted(
        n
        for n, i in _REGISTRY.items()
        if (task is None or i.task == task)
        and (not patterns or any(fnmatch.fnmatchcase(n, p) for p in patterns))
    )


def create_model(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    *,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    weights: str | Path | Mapping[str, Tensor] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: registry name (see :func:`list_models`).
        num_classes: number of output classes, where the model has a classifier.
        in_channels: number of input image channels (1 for Fashion-MNIST, 3 for RGB).
        features_only: return a backbone whose ``forward`` gives the list of stage feature
            maps (a :class:`~cnnzoo.models.features.FeatureExtractor`, head removed).
        out_indices: with ``features_only``, the stages to return, as indices into the
            model's ``feature_info`` (negative from the deepest); default: every stage.
        weights: a weight set's name (``"resnet50.tv_in1k"``, or just its tag ``"tv_in1k"``;
            see :mod:`cnnzoo.weights`: its classes, channels and builder options become the
            defaults), a run directory, a ``.safetensors`` file or a torchvision ``.pth``
            state dict to start from (see :func:`~cnnzoo.models.weights.load_weights`):
            another ``num_classes`` keeps a fresh head, another ``in_channels`` adapts the
            first convolution.
        **kwargs: builder-specific options, e.g. ``small_input=True``, ``aux_logits=False``.

    Returns:
        The model, in training mode, with random weights unless ``weights`` is given.

    Raises:
        CnnzooError: for an unknown name, an option the builder does not take, bad
            ``out_indices``, or weights that do not fit the architecture.
    """
    info = model_info(name)
    if out_indices is not None and not features_only:
        raise CnnzooError("out_indices selects feature maps: pass features_only=True with it")
    args: dict[str, Any] = dict(info.defaults)
    if isinstance(weights, str) and _is_weight_name(weights):
        from cnnzoo.weights.catalog import get

        named = get(weights, model=name, as_path=True)
        weights = named.name
        args.update(named.spec.get("kwargs", {}))
    # A backbone needs no auxiliary classifiers (GoogLeNet's): build it without them.
    if features_only and "aux_logits" in inspect.signature(info.builder).parameters:
        args["aux_logits"] = False
    if num_classes is not None:
        args["num_classes"] = num_classes
    if in_channels is not None:
        args["in_channels"] = in_channels
    args.update(kwargs)
    # (Segmentation builders pass small_input on to their backbone, which checks it.)
    if args.get("small_input") and not info.small_input and info.task == "classification":
        raise CnnzooError(
            f"model {name!r} has no small-input variant; feed it inputs of at least "
            f"{info.min_input_size}x{info.min_input_size} pixels instead"
        )
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise CnnzooError(f"{key} must be a positive integer, got {value!r}")
    try:
        model = info.builder(**args)
    except TypeError as err:  # (torch's own TypeErrors span lines: keep the first)
        first = (str(err).splitlines() or [""])[0]
        raise CnnzooError(f"model {name!r} does not accept these options: {first}") from None
    model.model_name = name  # type: ignore[assignment]
    model.model_kwargs = {k: v for k, v in args.items()}  # type: ignore[assignment]
    if weights is not None:
        from cnnzoo.models.weights import load_weights

        load_weights(model, weights)
    if features_only:
        from cnnzoo.models.features import FeatureExtractor

        probe = max(info.input_size[1], info.min_input_size)
        model = FeatureExtractor(model, out_indices, probe_size=probe)
        model.model_name = name  # type: ignore[assignment]
        model.model_kwargs = {  # type: ignore[assignment]
            **args,
            "features_only": True,
            "out_indices": list(model.out_indices),
        }
    return model
