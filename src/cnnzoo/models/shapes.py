"""Layer sizes of a pruned model, so it can be rebuilt without pickle.

A structurally pruned model has thinner layers than its registry spec builds, and cnnzoo
never pickles models. :func:`module_shapes` records the sizes of the layers that differ from
a freshly built reference (a small JSON-ready dict saved in ``model.json`` under
``"shapes"``); :func:`apply_module_shapes` resizes a fresh model the same way, after which
the pruned weights load with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers.residual import PrunableZeroPadShortcut

_CONV_TYPES: dict[str, type[nn.Module]] = {
    t.__name__: t for t in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)
}
_NORM_TYPES: dict[str, type[nn.Module]] = {
    t.__name__: t for t in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
}
_SHORTCUT = PrunableZeroPadShortcut.__name__


def _sizes(m: nn.Module) -> dict[str, Any] | None:
    """The sizes of ``m`` that pruning can change, with its type; None for other modules."""
    name = type(m).__name__
    if name in _CONV_TYPES and type(m) is _CONV_TYPES[name]:
        return {
            "type": name,
            "in_channels": m.in_channels,
            "out_channels": m.out_channels,
            "groups": m.groups,
        }
    if type(m) is nn.Linear:
        return {"type": "Linear", "in_features": m.in_features, "out_features": m.out_features}
    if name in _NORM_TYPES and type(m) is _NORM_TYPES[name]:
        return {"type": name, "num_features": m.num_features}
    if type(m) is nn.GroupNorm:
        return {"type": "GroupNorm", "num_groups": m.num_groups, "num_channels": m.num_channels}
    if type(m) is PrunableZeroPadShortcut:
        return {"type": _SHORTCUT, "in_channels": m.in_channels, "out_channels": m.out_channels}
    return None


def module_shapes(model: nn.Module, reference: nn.Module) -> dict[str, dict[str, Any]]:
    """Record the layers of ``model`` whose sizes (or type) differ from ``reference``'s.

    Covers convolutions, linear layers, batch/group norms and the pruning's
    :class:`~cnnzoo.compress.prune.PrunableZeroPadShortcut` (which replaces a CIFAR
    ResNet's zero-padding shortcut, so it is recorded even at its original size).

    Args:
        model: the pruned model.
        reference: the same architecture freshly built from its registry spec.

    Returns:
        Module name -> ``{"type": ..., sizes}``, e.g. ``{"stem.conv": {"type": "Conv2d",
        "in_channels": 1, "out_channels": 11, "groups": 1}}``; empty when nothing differs.

    Raises:
        CnnzooError: if ``model`` has a resized layer that ``reference`` lacks.
    """
    ref_modules = dict(reference.named_modules())
    shapes: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        sizes = _sizes(m)
        if sizes is None:
            continue
        if name not in ref_modules:
            raise CnnzooError(
                f"layer {name!r} of the model is not in the reference "
                f"{type(reference).__name__}; is it the same architecture?"
            )
        if _sizes(ref_modules[name]) != sizes:
            shapes[name] = sizes
    return shapes


def _rebuild(name: str, old: nn.Module, sizes: dict[str, Any]) -> nn.Module:
    """A fresh module of the recorded sizes with ``old``'s other settings."""
    kind = sizes.get("type")
    try:
        if kind in _CONV_TYPES:
            cls = _CONV_TYPES[kind]
            if type(old) is not cls:
                raise TypeError
            kwargs: dict[str, Any] = dict(
                kernel_size=old.kernel_size,
                stride=old.stride,
                padding=old.padding,
                dilation=old.dilation,
                groups=int(sizes["groups"]),
                bias=old.bias is not None,
                padding_mode=old.padding_mode,
            )
            if old.transposed:
                kwargs["output_padding"] = old.output_padding
            new: nn.Module = cls(int(sizes["in_channels"]), int(sizes["out_channels"]), **kwargs)
        elif kind == "Linear":
            if type(old) is not nn.Linear:
                raise TypeError
            new = nn.Linear(
                int(sizes["in_features"]), int(sizes["out_features"]), bias=old.bias is not None
            )
        elif kind in _NORM_TYPES:
            cls = _NORM_TYPES[kind]
            if type(old) is not cls:
                raise TypeError
            new = cls(
                int(sizes["num_features"]),
                eps=old.eps,
                momentum=old.momentum,
                affine=old.affine,
                track_running_stats=old.track_running_stats,
            )
        elif kind == "GroupNorm":
            if type(old) is not nn.GroupNorm:
                raise TypeError
            new = nn.GroupNorm(
                int(sizes["num_groups"]),
                int(sizes["num_channels"]),
                eps=old.eps,
                affine=old.affine,
            )
        elif kind == _SHORTCUT:
            from cnnzoo.layers.residual import ZeroPadShortcut

            if not isinstance(old, (ZeroPadShortcut, PrunableZeroPadShortcut)):
                raise TypeError
            new = PrunableZeroPadShortcut(
                int(sizes["in_channels"]), int(sizes["out_channels"]), old.stride
            )
        else:
            raise CnnzooError(
                f"shapes entry {name!r} has unknown layer type {kind!r}; expected one of "
                f"{', '.join([*_CONV_TYPES, 'Linear', *_NORM_TYPES, 'GroupNorm', _SHORTCUT])}"
            )
    except TypeError:
        raise CnnzooError(
            f"shapes entry {name!r} is a {kind}, but the model's {name!r} is a "
            f"{type(old).__name__}; the shapes belong to another architecture"
        ) from None
    except (KeyError, ValueError) as err:
        raise CnnzooError(f"shapes entry {name!r} is malformed ({err}): {sizes!r}") from None
    floats = [t for t in [*old.parameters(), *old.buffers()] if t.is_floating_point()]
    if floats:
        new = new.to(device=floats[0].device, dtype=floats[0].dtype)
    return new.train(old.training)


def apply_module_shapes(model: nn.Module, shapes: dict[str, dict[str, Any]]) -> nn.Module:
    """Replace the named layers of ``model`` by fresh ones of the recorded sizes, in place.

    Constructor settings the record does not hold (kernel size, stride, padding,
    dilation, bias, eps, momentum, ...) are copied from the layer being replaced, so the
    weights of the pruned model then load with ``load_state_dict(strict=True)``.

    Returns:
        ``model`` (resized; the new layers' values are fresh until weights are loaded).

    Raises:
        CnnzooError: for a name the model does not have, an unknown layer type, a type that
            does not match the model's layer, or a malformed entry.
    """
    if not isinstance(shapes, dict):
        raise CnnzooError(f"shapes must map layer names to sizes, got {type(shapes).__name__}")
    for name, sizes in shapes.items():
        if not name:
            raise CnnzooError("shapes entry '' (the whole model) cannot be resized; name a layer")
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise CnnzooError(
                f"shapes entry {name!r}: {type(model).__name__} has no such layer; "
                "the shapes belong to another architecture"
            ) from None
        if not isinstance(sizes, dict):
            raise CnnzooError(f"shapes entry {name!r} must be a dict of sizes, got {sizes!r}")
        new = _rebuild(name, old, sizes)
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, new)
    return model
