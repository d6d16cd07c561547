"""Receptive fields of a model's stages: which input pixels one feature-map cell depends on.

For every stage of a model's ``feature_info``, :func:`receptive_fields` reports, per axis,

- the *size* of the theoretical receptive field, in input pixels: the extent of the union of
  the fields of every path from the input to the cell (branches and shortcuts included);
- the *jump*, the distance in input pixels between neighbouring cells (the effective
  stride; it equals the stage's ``reduction``);
- the *start*, the input coordinate of the first pixel seen by the first cell (negative
  where the field reaches into the zero padding), hence its centre
  ``start + (size - 1) / 2``.

How: analytic propagation, ``size' = size + dilation * (kernel - 1) * jump``,
``jump' = jump * stride``, ``start' = start - padding * jump``, starting from the input's
``(1, 1, 0)``; where maps meet (addition, concatenation) the union is taken: the lowest start
and the highest end, which is the maximum over paths. The model's ``forward`` runs once on the
meta device (shapes only, no arithmetic, stand-ins for the weights) under a
``TorchFunctionMode`` that sees every torch function the forward calls and carries the three
numbers along with each tensor. Nothing depends on the model's name or on its module types:
convolutions and poolings are recognised as the functions they call (``conv2d``,
``max_pool2d``, ``avg_pool2d``), and the functional code between modules (ResNet's strided
slicing in option-A shortcuts, ShuffleNet's channel split and shuffle, GoogLeNet's
concatenation) is seen too, which graph tracing with ``torch.fx`` would miss or fail on
(channel shuffle reads ``x.size()``).

Why not the gradient probe (constant positive weights, back-propagating from one cell and
measuring where the input gradient is non-zero): it is exact as well, but its input must be
larger than the field. ResNet-152's deepest field is over 1,000 pixels wide, so the probe would
run a forward and backward pass some 50 times the usual 224x224 cost, minutes on a small CPU,
and it needs care against underflow along 50 layers and saturating activations (ReLU6). The
analytic pass costs milliseconds per layer whatever the field; the tests check it against the
probe on the models small enough for one.

Assumptions, the usual ones of the theoretical receptive field: an operation that keeps the
spatial size and has no rule here (activations, batch norm with its running statistics,
additions, concatenations, channel shuffles) acts on each position separately. An operation
without a rule that changes the spatial size or moves pixels (interpolation, flips, global
pooling inside a stage) makes the field unknown, and :func:`receptive_fields` says so rather
than guessing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from cnnzoo.errors import CnnzooError
from cnnzoo.explain.layers import stages_of

Pair = tuple[int, int]


@dataclass(frozen=True)
class StageField:
    """The receptive field of one stage's output map; pairs are (height, width).

    Attributes:
        module: dotted path of the stage's module, as in ``feature_info``.
        channels: channels of the stage's output.
        reduction: the stage's stride according to ``feature_info``.
        size: side of the receptive field of one cell, in input pixels.
        jump: input pixels between neighbouring cells (the effective stride).
        start: input coordinate of the first pixel the first cell sees (negative: padding).
        map_size: height and width of the stage's map for ``input_size``.
        input_size: the input's height and width the map sizes were measured on.
    """

    module: str
    channels: int
    reduction: int
    size: Pair
    jump: Pair
    start: Pair
    map_size: Pair
    input_size: Pair

    @property
    def center(self) -> tuple[float, float]:
        """Input coordinates of the centre of the first cell's field."""
        return (
            self.start[0] + (self.size[0] - 1) / 2,
            self.start[1] + (self.size[1] - 1) / 2,
        )

    @property
    def coverage(self) -> float:
        """Share of the input's area (0 to 1) inside the field of the map's central cell."""
        share = 1.0
        for axis in range(2):
            side = self.input_size[axis]
            low = self.start[axis] + (self.map_size[axis] - 1) // 2 * self.jump[axis]
            high = low + self.size[axis] - 1
            share *= max(0, min(high, side - 1) - max(low, 0) + 1) / side
        return share


# -- what travels with each tensor ------------------------------------------------------------
@dataclass(frozen=True)
class _Axis:
    """Field of the first cell along one axis: ``size`` pixels from ``start``, cells ``jump``
    apart."""

    size: int
    jump: int
    start: int

    @property
    def end(self) -> int:
        return self.start + self.size - 1

    def window(self, kernel: int, stride: int, padding: int, dilation: int) -> _Axis:
        """The field after a sliding window (convolution or pooling) along this axis."""
        return _Axis(
            self.size + dilation * (kernel - 1) * self.jump,
            self.jump * stride,
            self.start - padding * self.jump,
        )

    def shift(self, offset: int, step: int = 1) -> _Axis:
        """The field after dropping ``offset`` cells in front and keeping every ``step``-th."""
        return _Axis(self.size, self.jump * step, self.start + offset * self.jump)


@dataclass(frozen=True)
class _Unknown:
    """A tensor whose field cannot be told, and why."""

    reason: str


_Field = tuple[_Axis, _Axis] | _Unknown

_WINDOW = re.compile(r"(conv|max_pool|avg_pool)([123])d(_with_indices)?")
# Functions without a rule that move pixels even where they keep the spatial size.
_UNSUPPORTED = re.compile(
    r"conv|pool|interpolate|upsample|grid_sample|roll|flip|rot90|fold|pixel_(un)?shuffle|fft"
)
# Positions of stride, padding and dilation in the functions' signatures (input first).
_WINDOW_ARGS = {
    "conv": {"stride": 3, "padding": 4, "dilation": 5},
    "max_pool": {"stride": 2, "padding": 3, "dilation": 4},
    "avg_pool": {"stride": 2, "padding": 3},
}


def _tensors(value: Any) -> Iterator[Tensor]:
    """Yield the tensors in ``value``, looking into lists, tuples and dicts."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _union(fields: Sequence[_Field]) -> _Field:
    """The field of a map combining ``fields`` position by position (sum, concatenation)."""
    for field in fields:
        if isinstance(field, _Unknown):
            return field
    axes = []
    for axis in range(2):
        parts = [field[axis] for field in fields]  # type: ignore[index]
        jumps = {part.jump for part in parts}
        if len(jumps) > 1:
            return _Unknown(f"it combines maps of different strides {sorted(jumps)}")
        start = min(part.start for part in parts)
        end = max(part.end for part in parts)
        axes.append(_Axis(end - start + 1, jumps.pop(), start))
    return axes[0], axes[1]


def _per_axis(value: Any, n: int, default: Any) -> list[int]:
    """Return a window parameter as ``n`` ints (an int, a sequence, or empty for default)."""
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        value = default
    if isinstance(value, int):
        return [value] * n
    values = [int(v) for v in value]
    return values * n if len(values) == 1 else values


class _FieldTracker(TorchFunctionMode):
    """Carries a receptive field along every tensor computed from the input."""

    def __init__(self) -> None:
        super().__init__()
        # id -> (tensor, field); the tensor is kept so that its id is not reused.
        self._fields: dict[int, tuple[Tensor, _Field]] = {}

    def field_of(self, tensor: Tensor) -> _Field | None:
        """Return the field of ``tensor``, or None for a tensor not computed from the input."""
        entry = self._fields.get(id(tensor))
        return entry[1] if entry is not None and entry[0] is tensor else None

    def set_field(self, tensor: Tensor, field: _Field) -> None:
        """Record the field of ``tensor``."""
        self._fields[id(tensor)] = (tensor, field)

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        inputs = [t for t in _tensors((args, kwargs)) if self.field_of(t) is not None]
        out = func(*args, **kwargs)
        if not inputs:
            return out
        outputs = [t for t in _tensors(out) if t.dim() >= 2]
        if outputs:
            field = self._rule(getattr(func, "__name__", ""), args, kwargs, inputs, outputs)
            for tensor in outputs:
                self.set_field(tensor, field)
        return out

    def _rule(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inputs: list[Tensor],
        outputs: list[Tensor],
    ) -> _Field:
        """Return the field of the outputs of function ``name`` applied to ``inputs``."""
        first = args[0] if args else kwargs.get("input")
        if isinstance(first, Tensor) and (field := self.field_of(first)) is not None:
            if isinstance(field, _Unknown):
                return field
            window = _WINDOW.fullmatch(name)
            if window:
                return self._window(field, window.group(1), int(window.group(2)), args, kwargs)
            if name == "pad":
                return _pad(field, args[1] if len(args) > 1 else kwargs["pad"])
            if name == "__getitem__":
                sliced = _slice(field, first, args[1])
                if sliced is not None:
                    return sliced
        if _UNSUPPORTED.search(name) and not ("adaptive" in name and _same_grid(inputs, outputs)):
            return _Unknown(f"it passes through {name}, which has no receptive-field rule")
        if not _same_grid(inputs, outputs):
            return _Unknown(f"{name} changes the map size in a way with no receptive-field rule")
        fields = [self.field_of(t) for t in inputs]
        return _union([f for f in fields if f is not None])

    @staticmethod
    def _window(
        field: tuple[_Axis, _Axis],
        kind: str,
        n: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> _Field:
        """The field after an n-d convolution or pooling over the last ``n`` dimensions."""

        def arg(key: str, default: Any) -> Any:
            position = _WINDOW_ARGS[kind].get(key)
            if position is not None and len(args) > position:
                return args[position]
            return kwargs.get(key, default)

        if kind == "conv":
            kernel = list(args[1].shape[-n:] if len(args) > 1 else kwargs["weight"].shape[-n:])
        else:
            kernel = _per_axis(args[1] if len(args) > 1 else kwargs["kernel_size"], n, 1)
        stride = _per_axis(arg("stride", None), n, kernel)
        dilation = _per_axis(arg("dilation", 1), n, 1)
        padding_arg = arg("padding", 0)
        if padding_arg == "same":
            padding = [d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True)]
        elif padding_arg == "valid":
            padding = [0] * n
        else:
            padding = _per_axis(padding_arg, n, 0)
        axes = list(field)
        # The last window dimension is the width, the one before it the height.
        for axis, offset in ((1, -1), (0, -2)):
            if n >= -offset:
                axes[axis] = axes[axis].window(
                    kernel[offset], stride[offset], padding[offset], dilation[offset]
                )
        return axes[0], axes[1]


def _same_grid(inputs: list[Tensor], outputs: list[Tensor]) -> bool:
    """Whether all ``inputs`` and ``outputs`` have the same last two (spatial) sizes."""
    grids = {tuple(t.shape[-2:]) for t in (*inputs, *outputs)}
    return len(grids) == 1 and all(t.dim() >= 2 for t in inputs)


def _pad(field: tuple[_Axis, _Axis], pad: Sequence[int]) -> _Field:
    """The field after ``F.pad``: padding in front of an axis moves its start back."""
    height, width = field
    width = width.shift(-int(pad[0]))
    if len(pad) >= 4:
        height = height.shift(-int(pad[2]))
    return height, width


def _slice(field: tuple[_Axis, _Axis], tensor: Tensor, index: Any) -> _Field | None:
    """The field after basic indexing ``tensor[index]`` that keeps both spatial dimensions.

    Returns:
        The new field, or None for indexing this rule does not cover (the general one then
        decides).
    """
    items = list(index) if isinstance(index, tuple) else [index]
    if any(not isinstance(i, (slice, int, type(None), type(Ellipsis))) for i in items):
        return None
    if items.count(Ellipsis) > 1:
        return None
    ndim = tensor.dim()
    consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at : at + 1] = [slice(None)] * (ndim - consumed)
    items += [slice(None)] * (ndim - sum(1 for i in items if i is not None))
    origins: list[int | None] = []  # input dimension of each output dimension
    slices: dict[int, slice] = {}
    dim = 0
    for item in items:
        if item is None:
            origins.append(None)
            continue
        if isinstance(item, slice):
            origins.append(dim)
            slices[dim] = item
        dim += 1
    if origins[-2:] != [ndim - 2, ndim - 1]:
        return None
    axes = list(field)
    for axis, dim in ((0, ndim - 2), (1, ndim - 1)):
        begin, _, step = slices[dim].indices(tensor.shape[dim])
        if step < 1:
            return None
        axes[axis] = axes[axis].shift(begin, step)
    return axes[0], axes[1]


class _DoneError(Exception):
    """Raised by the last stage's hook: the rest of the forward pass is not needed."""


# -- the public function ----------------------------------------------------------------------
def _build(name: str, size: tuple[int, int, int], model_kwargs: dict[str, Any]) -> nn.Module:
    """Build registered model ``name`` on the meta device (no weights, no time)."""
    from cnnzoo.models.meta import shapes_only
    from cnnzoo.registry import create_model, model_info

    model_info(name)  # an unknown name: one line with close matches
    with shapes_only():
        return create_model(name, **{"in_channels": size[0], **model_kwargs})


def _default_size(model: str | nn.Module) -> tuple[int, int, int]:
    """The registry's input size for a name or a model built by ``create_model``."""
    from cnnzoo.registry import model_info

    name = model if isinstance(model, str) else getattr(model, "model_name", None)
    if name is not None:
        return model_info(name).input_size
    for module in model.modules():  # type: ignore[union-attr]
        if isinstance(module, nn.Conv2d):
            return (module.in_channels, 224, 224)
    raise CnnzooError(f"{type(model).__name__} has no Conv2d; pass input_size=(C, H, W)")


def receptive_fields(
    model: str | nn.Module,
    input_size: Sequence[int] | None = None,
    **model_kwargs: Any,
) -> list[StageField]:
    """Return the receptive field of every stage in a model's ``feature_info``.

    A segmenter or detector built on a backbone uses its backbone's stages
    (:func:`~cnnzoo.explain.layers.stages_of`), named from the model's root.

    Args:
        model: a registered model's name, built on the meta device (no
            weights), or a built model with ``feature_info``, which stays untouched (its
            weights are replaced by meta stand-ins for the pass; its modes are restored).
        input_size: (channels, height, width) of the input; default: the registry's size
            (224x224 for a model not built by ``create_model``). The fields do not depend
            on it; the map sizes and :attr:`StageField.coverage` do.
        **model_kwargs: builder options for a model given by name, e.g. ``small_input=True``.

    Returns:
        One :class:`StageField` per stage, shallow to deep.

    Raises:
        CnnzooError: for an unknown name, a model without ``feature_info`` (its own or its
            backbone's), builder options with a built model, an input the model
            cannot run, or a stage whose field cannot be told (see the module docstring).
    """
    size = tuple(int(v) for v in (input_size or _default_size(model)))
    if len(size) != 3 or min(size) < 1:
        raise CnnzooError(f"input_size must be three positive ints (C, H, W), got {size}")
    if isinstance(model, str):
        name = model
        net = _build(name, size, model_kwargs)  # type: ignore[arg-type]
    else:
        if model_kwargs:
            raise CnnzooError(
                f"builder options {sorted(model_kwargs)} apply to a model given by name only"
            )
        net = model
        name = getattr(model, "model_name", type(model).__name__)
    stages = stages_of(net)
    if not stages:
        raise CnnzooError(
            f"model {name!r} has no feature_info (its own or its backbone's): receptive "
            "fields are computed for the stages it lists"
        )
    return _trace(net, name, stages, size)  # type: ignore[arg-type]


def _trace(
    net: nn.Module, name: str, stages: Sequence[Any], size: tuple[int, int, int]
) -> list[StageField]:
    """Run ``net`` once on the meta device and read each stage's field from its output."""
    from cnnzoo.models.meta import shapes_only

    tracker = _FieldTracker()
    x = torch.zeros(1, *size, device="meta")
    tracker.set_field(x, (_Axis(1, 1, 0), _Axis(1, 1, 0)))
    captured: dict[int, tuple[_Field, Pair]] = {}

    def capture(index: int, module: nn.Module, args: Any, output: Any) -> None:
        tensor = next(_tensors(output), None)
        if tensor is None or tensor.dim() < 2:
            captured[index] = (_Unknown("its output is no feature map"), (0, 0))
        else:
            field = tracker.field_of(tensor) or _Unknown("its output does not come from the input")
            captured[index] = (field, (int(tensor.shape[-2]), int(tensor.shape[-1])))
        if len(captured) == len(stages):
            raise _DoneError

    handles = []
    for index, stage in enumerate(stages):
        try:
            module = net.get_submodule(stage.module)
        except AttributeError:
            raise CnnzooError(
                f"{name}'s feature_info names {stage.module!r}, which the model does not have"
            ) from None
        handles.append(module.register_forward_hook(lambda m, a, o, i=index: capture(i, m, a, o)))
    state = {
        key: torch.empty_like(t, device="meta")
        for key, t in (*net.named_parameters(), *net.named_buffers())
    }
    modes = {m: m.training for m in net.modules()}
    try:
        net.eval()
        with torch.no_grad(), shapes_only(build=False), tracker:
            torch.func.functional_call(net, state, (x,))
    except _DoneError:
        pass
    except (RuntimeError, ValueError, IndexError) as err:
        shape = "x".join(map(str, size))
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CnnzooError(f"{name} does not run on a {shape} input: {first}") from None
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes.items():
            m.training = mode
    return [_stage_field(name, stage, captured.get(i), size) for i, stage in enumerate(stages)]


def _stage_field(
    name: str, stage: Any, captured: tuple[_Field, Pair] | None, size: tuple[int, int, int]
) -> StageField:
    """Turn a stage's traced field into a :class:`StageField`."""
    if captured is None:
        raise CnnzooError(f"{name}'s forward never ran {stage.module}, listed in its feature_info")
    field, grid = captured
    if isinstance(field, _Unknown):
        raise CnnzooError(
            f"cannot compute the receptive field of {name}'s {stage.module}: {field.reason}"
        )
    height, width = field
    return StageField(
        module=stage.module,
        channels=stage.channels,
        reduction=stage.reduction,
        size=(height.size, width.size),
        jump=(height.jump, width.jump),
        start=(height.start, width.start),
        map_size=grid,
        input_size=(size[1], size[2]),
    )
