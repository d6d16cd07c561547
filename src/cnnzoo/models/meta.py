"""Shape-only builds and passes on the meta device, without importing ``torch._dynamo``.

cnnzoo builds models on PyTorch's meta device to read their stages (which strides a
backbone has) and runs ``forward`` on meta tensors to learn which modules a backbone calls.
No arithmetic happens there, but some of PyTorch's meta kernels are written in Python
(``normal_``/``uniform_`` of weight initialisation, batch norm's statistics), and the first
of them imports ``torch._dynamo``: about 1.1 s on a 2-core CPU, more than the whole
``cnnzoo predict`` of a small detector otherwise costs. :func:`shapes_only` answers those
calls itself, with the same shapes:

- an in-place operation on a meta tensor (weight initialisation, ``relu_``) returns the
  tensor unchanged: a meta tensor holds no values to change;
- a normalisation on a meta tensor returns its input: normalising keeps the shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_SHAPE_KEEPING = frozenset(
    {F.batch_norm, F.instance_norm, F.group_norm, F.layer_norm, F.local_response_norm}
)


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if args:
        return args[0]
    return kwargs.get("tensor", kwargs.get("input", kwargs.get("self")))


class _ShapesOnly(TorchFunctionMode):
    """Answers in-place operations and normalisations on meta tensors without a kernel."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        first = _first_tensor(args, kwargs)
        if isinstance(first, torch.Tensor) and first.is_meta:
            name = getattr(func, "__name__", "")
            if func in _SHAPE_KEEPING or (name.endswith("_") and not name.endswith("__")):
                return first
        return func(*args, **kwargs)


@contextlib.contextmanager
def shapes_only(build: bool = True) -> Iterator[None]:
    """Within the block, meta tensors skip values (see the module docstring).

    Args:
        build: also make new tensors on the meta device (``torch.device("meta")``), for
            building a model whose shapes alone are wanted; False for a pass over tensors
            that are already on the meta device.

    Yields:
        Nothing; the mode ends with the block.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(_ShapesOnly())
        if build:
            stack.enter_context(torch.device("meta"))
        yield
