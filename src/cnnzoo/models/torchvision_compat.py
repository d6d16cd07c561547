"""Load torchvision's ImageNet weights into cnnzoo's own implementations.

Each model class knows how its names differ from torchvision's (``torchvision_key``); this
module only reads the file safely, renames, checks and loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.weights.storage import read_state_dict


def load_torchvision_weights(
    model: nn.Module, path_or_state_dict: str | Path | Mapping[str, Tensor]
) -> nn.Module:
    """Load a torchvision state dict (or ``.pth`` path) into the matching cnnzoo model.

    Returns:
        ``model``, with the weights loaded in place.

    Raises:
        CnnzooError: if the model has no torchvision twin, or keys/shapes do not match
            (the message names the first offending keys).
    """
    if isinstance(path_or_state_dict, (str, Path)):
        source = read_state_dict(path_or_state_dict)
    else:
        source = dict(path_or_state_dict)
    convert = getattr(model, "torchvision_key", None)
    try:
        mapped = {}
        for key, value in source.items():
            new_key = convert(key) if convert else key
            if new_key is not None:
                mapped[new_key] = value
    except NotImplementedError:
        name = getattr(model, "model_name", type(model).__name__)
        raise CnnzooError(f"model {name!r} has no torchvision counterpart") from None
    own = model.state_dict()
    missing = [k for k in own if k not in mapped]
    unexpected = [k for k in mapped if k not in own]
    if missing or unexpected:
        raise CnnzooError(
            "torchvision weights do not fit this model: "
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    bad = [k for k in own if own[k].shape != mapped[k].shape]
    if bad:
        k = bad[0]
        raise CnnzooError(
            f"shape mismatch for {k}: model has {tuple(own[k].shape)}, "
            f"weights have {tuple(mapped[k].shape)} ({len(bad)} tensors differ)"
        )
    model.load_state_dict(mapped)
    return model
