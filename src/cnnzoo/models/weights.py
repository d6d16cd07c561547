"""Load saved weights into a model the way transfer learning needs (after timm).

``load_weights`` takes cnnzoo's own weights (a run directory, its ``model.safetensors``, a
Lightning checkpoint) or torchvision's (a ``.pth`` state dict, renamed through the model's
``torchvision_key``), and bridges the two differences a new task usually brings:

- another number of classes: the classifier's weights are left out and the model keeps its
  freshly initialised head;
- another number of input channels: the first convolution's kernels are folded (RGB ->
  gray: summed over the input channels) or repeated and rescaled (gray -> RGB), so that an
  image whose channels are all equal gives the same output as before.

Everything else must fit exactly. A file is never unpickled: safetensors, or torch's
loader restricted to tensors (``weights_only=True``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.files import check_recorded_sha256
from cnnzoo.weights.cache import local_file
from cnnzoo.weights.catalog import get as get_weight_set
from cnnzoo.weights.catalog import looks_like_weight_name
from cnnzoo.weights.storage import read_state_dict

logger = logging.getLogger("cnnzoo")

# The weights file of a run directory (cnnzoo.rundir.WEIGHTS and SPEC; not imported from
# there: models sit below the run-directory layer).
_RUN_WEIGHTS = "model.safetensors"
_RUN_SPEC = "model.json"
# Lightning checkpoints of cnnzoo's tasks name the network ``model``.
_LIGHTNING_PREFIX = "model."
_SHOWN = 3  # keys listed in an error message


@dataclass
class LoadReport:
    """What :func:`load_weights` did.

    Attributes:
        loaded: number of tensors copied into the model.
        dropped_head: source keys left out because the classifier's shape differs
            (another ``num_classes``); the model keeps its fresh head for them.
        adapted_conv: name of the first convolution whose kernels were adapted to another
            number of input channels, or None.
        missing: model keys the weights do not provide (non-empty only with
            ``strict_body=False``; those tensors keep their initial values).
        unexpected: source keys the model has no place for (idem).
        mismatched: body keys whose shapes differ (idem; not loaded).
        unused: source keys of modules the model was built without or left out (GoogLeNet's
            auxiliary heads with ``aux_logits=False``, the head of a ``features_only``
            model); not loaded, not an error.
        key_format: ``"cnnzoo"``, ``"torchvision"`` or ``"lightning"`` (cnnzoo's keys
            under ``model.``): how the source names its tensors.
        source: where the weights came from (a file path, or ``"state dict"``).
    """

    loaded: int = 0
    dropped_head: list[str] = field(default_factory=list)
    adapted_conv: str | None = None
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    key_format: str = "cnnzoo"
    source: str = "state dict"


def resolve_weights_path(path: str | Path) -> Path:
    """Return the weights file of ``path``: itself, a run directory's ``model.safetensors``,
    or the verified local file of a named weight set (``MODEL.TAG``, downloaded if needed).

    Raises:
        CnnzooError: if ``path`` does not exist, is a directory without weights, or names a
            weight set that is unknown or cannot be fetched.
    """
    path = Path(path)
    if not path.exists() and looks_like_weight_name(str(path)):
        named = get_weight_set(str(path), as_path=True)
        if named.storage == "onnx":
            raise CnnzooError(
                f"{named.name} is an int8 ONNX model, not PyTorch weights: use it with "
                "`cnnzoo bench` or `cnnzoo export`"
            )
        return local_file(named)
    if path.is_dir():
        weights = path / _RUN_WEIGHTS
        if not weights.is_file():
            raise CnnzooError(
                f"{path} is a directory without {_RUN_WEIGHTS}: pass a cnnzoo run directory "
                "or a weights file (.safetensors, .pth, .pt)"
            )
        return weights
    if not path.is_file():
        raise CnnzooError(f"weights file not found: {path}")
    return path


def read_source_spec(source: str | Path) -> dict | None:
    """Return the ``model.json`` document of a run directory, of the file beside it, or of a
    named weight set; None for a bare weights file (e.g. torchvision's ``.pth``) or a
    ``model.json`` that cannot be read or is not a mapping.

    Raises:
        CnnzooError: for an unknown weight set name.
    """
    path = Path(source)
    if not path.exists() and looks_like_weight_name(str(source)):
        return dict(get_weight_set(str(source), as_path=True).spec)
    spec = (path if path.is_dir() else path.parent) / _RUN_SPEC
    try:
        document = json.loads(spec.read_text()) if spec.is_file() else None
    except (OSError, ValueError, RecursionError):  # unreadable: as if there were none
        return None
    return document if isinstance(document, dict) else None


def load_weights(
    model: nn.Module,
    path_or_state_dict: str | Path | Mapping[str, Tensor],
    strict_body: bool = True,
) -> LoadReport:
    """Load weights into ``model`` in place, adapting the head and the first convolution.

    Args:
        model: the model to fill, built with the ``num_classes`` and ``in_channels`` it
            should end up with (a classifier, or a ``features_only`` extractor).
        path_or_state_dict: a cnnzoo run directory, a ``.safetensors`` file, a torchvision
            or Lightning ``.pth``/``.pt``/``.ckpt`` (read with ``weights_only=True``), or a
            state dict. torchvision key names are recognised and renamed.
        strict_body: raise for missing or unexpected keys and for shape mismatches outside
            the classifier and the first convolution; with False, load what fits and
            report the rest.

    Returns:
        A :class:`LoadReport`. A dropped head is logged as a warning, an adapted first
        convolution as information (``logging.getLogger("cnnzoo")``).

    Raises:
        CnnzooError: for a missing or unreadable file, one that is not a state dict, a run's
            weights changed after training (their SHA-256 differs from ``model.json``'s), and
            (with ``strict_body``) weights of another architecture: the message names the
            first missing/unexpected keys, or the key whose shape differs with both shapes.
    """
    from cnnzoo.models.features import FeatureExtractor

    report = LoadReport()
    spec_model = None
    if isinstance(path_or_state_dict, (str, Path)):
        path = resolve_weights_path(path_or_state_dict)
        named = not Path(path_or_state_dict).exists()  # a weight set's name
        report.source = str(path_or_state_dict if named else path)
        if not named:  # a run's weights: refused if changed after training
            recorded = (read_source_spec(path) or {}).get("sha256")
            check_recorded_sha256(path, recorded, str(path.parent / _RUN_SPEC))
        source = read_state_dict(path)
        spec_model = _spec_model_name(Path(path_or_state_dict) if named else path)
    elif isinstance(path_or_state_dict, Mapping):
        source = dict(path_or_state_dict.get("state_dict", path_or_state_dict))
        if not all(isinstance(v, Tensor) for v in source.values()):
            raise CnnzooError("the weights given do not form a state dict (name -> tensor)")
    else:
        raise CnnzooError(
            "weights must be a path or a state dict (name -> tensor), "
            f"got {type(path_or_state_dict).__name__}"
        )

    # A features_only model: fill the classifier inside it; the modules it replaced by
    # nn.Identity have no tensors left, so their weights are not needed.
    left_out: list[str] = []
    if isinstance(model, FeatureExtractor):
        left_out = model.pruned
        model = model.model

    own = model.state_dict()
    source, report.key_format = _rename_to(model, source, own)
    report.unused = [
        k for k in source if k not in own and (_in_any(k, left_out) or _disabled(model, k))
    ]
    unused = set(report.unused)
    source = {k: v for k, v in source.items() if k not in unused}

    head = _head_keys(model, source, own)
    if head:
        report.dropped_head = sorted(head)
        weight = next(k for k in report.dropped_head if k.endswith(".weight"))
        logger.warning(
            "weights from %s have %d classes, the model %d: their classifier (%s) is left "
            "out and the model keeps its freshly initialised one",
            report.source,
            source[weight].shape[0],
            own[weight].shape[0],
            ", ".join(sorted({k.rpartition(".")[0] for k in head})),
        )
        source = {k: v for k, v in source.items() if k not in head}

    conv = _first_conv(model)
    key = f"{conv}.weight"
    if conv is not None and key in source and key in own and _adaptable(source[key], own[key]):
        channels = source[key].shape[1]
        source[key] = adapt_input_channels(source[key], own[key].shape[1])
        report.adapted_conv = conv
        logger.info(
            "adapted %s of the weights from %s from %d to %d input channels",
            conv,
            report.source,
            channels,
            own[key].shape[1],
        )

    # Old checkpoints lack BN's step counter; it only matters with momentum=None.
    report.missing = [
        k
        for k in own
        if k not in source and k not in head and not k.endswith("num_batches_tracked")
    ]
    report.unexpected = [k for k in source if k not in own]
    report.mismatched = [k for k in source if k in own and source[k].shape != own[k].shape]
    if strict_body:
        name = getattr(model, "model_name", type(model).__name__)
        _check(report, source, own, name, spec_model)

    fitting = {k: v for k, v in source.items() if k in own and k not in report.mismatched}
    model.load_state_dict(fitting, strict=False)
    report.loaded = len(fitting)
    return report


def adapt_input_channels(weight: Tensor, channels: int) -> Tensor:
    """Return a convolution kernel ``weight`` (out, C, kh, kw) adapted to ``channels`` inputs.

    To one channel, the kernels are summed over their C input channels; to k > 1 channels,
    they are repeated cyclically (channel i takes source channel i mod C) and scaled by C/k.
    Either way an input whose channels are all equal gives the same output as the source
    convolution on an input whose C channels are all that same image.
    """
    source_channels = weight.shape[1]
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(channels, device=weight.device) % source_channels
    return weight[:, index] * (source_channels / channels)


# -- helpers --------------------------------------------------------------------------------
def _spec_model_name(path: Path) -> str | None:
    """Return the model name of a ``model.json`` beside ``path`` (or of the weight set it
    names), if there is a readable one."""
    spec = read_source_spec(path)
    model = spec.get("model") if isinstance(spec, dict) else None
    return str(model) if model is not None else None


def _rename_to(
    model: nn.Module, source: dict[str, Tensor], own: Mapping[str, Tensor]
) -> tuple[dict[str, Tensor], str]:
    """Return ``source`` under the key names that fit ``model`` best, and their format.

    cnnzoo's own names are kept unless torchvision's names (renamed by the model's
    ``torchvision_key``) or a Lightning checkpoint's (``model.`` prefix) match more keys.
    """
    candidates = {"cnnzoo": source}
    if any(k.startswith(_LIGHTNING_PREFIX) for k in source):
        n = len(_LIGHTNING_PREFIX)
        candidates["lightning"] = {
            k[n:]: v for k, v in source.items() if k.startswith(_LIGHTNING_PREFIX)
        }
    convert = getattr(model, "torchvision_key", None)
    if convert is not None:
        try:
            renamed = {convert(k): v for k, v in source.items()}
        except NotImplementedError:  # no torchvision twin
            pass
        else:
            candidates["torchvision"] = {k: v for k, v in renamed.items() if k is not None}

    def hits(keys: dict[str, Tensor]) -> int:
        return sum(k in own for k in keys)

    best = max(candidates, key=lambda name: hits(candidates[name]))  # first wins a tie
    return candidates[best], best


def _in_any(key: str, modules: list[str]) -> bool:
    return any(key.startswith(f"{m}.") for m in modules)


def _disabled(model: nn.Module, key: str) -> bool:
    """Tell whether ``key`` belongs to a submodule the model was built without (set to None)."""
    obj: object = model
    for part in key.split(".")[:-1]:
        if not isinstance(obj, nn.Module) or not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
        if obj is None:
            return True
    return False


def _head_keys(
    model: nn.Module, source: Mapping[str, Tensor], own: Mapping[str, Tensor]
) -> set[str]:
    """Return the source keys of classifier layers whose number of classes differs.

    A classifier layer is the model's ``classifier_name`` (an ``nn.Linear``, or SqueezeNet's
    1x1 ``nn.Conv2d``) or any other ``nn.Linear`` with ``num_classes`` outputs (GoogLeNet's
    auxiliary ``fc2``), and it is only dropped when its output size alone differs from the
    source's.
    """
    num_classes = getattr(model, "num_classes", None)
    classifier = getattr(model, "classifier_name", None)
    head_modules = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and name == classifier:
            weight = source.get(f"{name}.weight")
            if (
                weight is not None
                and weight.dim() == 4
                and weight.shape[0] != module.out_channels
                and weight.shape[1:] == module.weight.shape[1:]
            ):
                head_modules.append(name)
            continue
        if not isinstance(module, nn.Linear):
            continue
        if name != classifier and module.out_features != num_classes:
            continue
        weight = source.get(f"{name}.weight")
        if (
            weight is not None
            and weight.dim() == 2
            and weight.shape[0] != module.out_features
            and weight.shape[1] == module.in_features
        ):
            head_modules.append(name)
    return {k for k in source if k in own and _in_any(k, head_modules)}


def _first_conv(model: nn.Module) -> str | None:
    """Return the name of the model's first ``nn.Conv2d`` without groups, or None."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name if module.groups == 1 else None
    return None


def _adaptable(source: Tensor, target: Tensor) -> bool:
    """Tell whether two conv kernels differ in their number of input channels only."""
    return (
        source.dim() == target.dim() == 4
        and source.shape[1] != target.shape[1]
        and source.shape[0] == target.shape[0]
        and source.shape[2:] == target.shape[2:]
    )


def _listing(keys: list[str]) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def _check(
    report: LoadReport,
    source: Mapping[str, Tensor],
    own: Mapping[str, Tensor],
    model_name: str,
    spec_model: str | None,
) -> None:
    """Raise CnnzooError if the weights do not fit the model's body."""
    hint = ""
    if spec_model is not None and spec_model != model_name:
        hint = f" (its model.json says they belong to {spec_model!r})"
    if report.missing or report.unexpected:
        problems = []
        if report.missing:
            problems.append(f"missing {_listing(report.missing)}")
        if report.unexpected:
            problems.append(f"unexpected {_listing(report.unexpected)}")
        raise CnnzooError(
            f"weights from {report.source}{hint} do not fit model {model_name!r}: "
            + "; ".join(problems)
        )
    if report.mismatched:
        key = report.mismatched[0]
        others = len(report.mismatched) - 1
        raise CnnzooError(
            f"weights from {report.source}{hint} do not fit model {model_name!r}: shape "
            f"mismatch for {key}: model has {tuple(own[key].shape)}, weights have "
            f"{tuple(source[key].shape)}" + (f" ({others} more tensors differ)" if others else "")
        )
