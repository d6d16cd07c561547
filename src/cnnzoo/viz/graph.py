"""The model as the lecture's differentiable computational graph: modules and tensor shapes.

torchview traces one forward pass and Graphviz lays the graph out. A module deeper than
``depth`` is drawn as one box; shallower containers are drawn as dashed clusters around
their children, so ResNet's shortcut ``add`` and GoogLeNet's four-branch ``cat`` are visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from cnnzoo.errors import CnnzooError
from cnnzoo.files import atomic_write_bytes

FORMATS = (".svg", ".png")
# the default depth is the deepest level whose graph has at most this many nodes: ResNet-18
# at depth 4 (49 nodes: every block's convs, shortcut and add), GoogLeNet at depth 2
# (64 nodes: every Inception module's four branches and their concatenation)
MAX_AUTO_NODES = 70
MAX_AUTO_DEPTH = 6


def _trace(model: nn.Module, input_size: tuple[int, ...], depth: int, expand: bool) -> Any:
    from torchview import draw_graph as torchview_graph

    return torchview_graph(
        model,
        input_size=input_size,
        depth=depth,
        expand_nested=expand,
        device="cpu",
        graph_name=type(model).__name__,
    )


def auto_depth(model: nn.Module, input_size: tuple[int, ...], expand_nested: bool = True) -> int:
    """Return the deepest module depth (1 to 6) whose graph has at most 70 nodes.

    Depth 1 when even that has more; the search stops early once a deeper level adds nothing.
    """
    best, previous = 1, -1
    for depth in range(1, MAX_AUTO_DEPTH + 1):
        nodes = len(_trace(model, input_size, depth, expand_nested).node_set)
        if nodes > MAX_AUTO_NODES or nodes == previous:
            break
        best, previous = depth, nodes
    return best


def draw_graph(
    model: nn.Module,
    input_size: tuple[int, ...],
    path: str | Path,
    depth: int | None = None,
    expand_nested: bool = True,
    overwrite: bool = False,
) -> Path:
    """Draw ``model`` for one input of ``input_size`` (with batch, e.g. ``(1, 3, 224, 224)``)
    as a graph of modules with their input and output shapes, to an SVG or PNG file.

    Args:
        depth: modules nested deeper than this are drawn as one box; None picks
            :func:`auto_depth` (at most 70 nodes).
        expand_nested: draw shallower containers as dashed clusters around their children.
        overwrite: replace an existing ``path``.

    Returns:
        The path written (atomically; the format follows its suffix).

    Raises:
        CnnzooError: for a suffix other than .svg or .png, an existing file without
            ``overwrite``, a depth below 1, an input the model cannot run, or no Graphviz
            ``dot`` program.
    """
    import graphviz

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise CnnzooError(
            f"cannot draw a graph as {path.name!r}: expected a .svg or .png file, "
            f"got suffix {path.suffix or '(none)'!r}"
        )
    if path.exists() and not overwrite:
        raise CnnzooError(f"{path} already exists; choose another file or pass --overwrite")
    if depth is not None and depth < 1:
        raise CnnzooError(f"graph depth must be 1 or more, got {depth}")
    was_training = model.training
    model.eval()
    try:
        if depth is None:
            depth = auto_depth(model, input_size, expand_nested)
        graph = _trace(model, input_size, depth, expand_nested)
    except RuntimeError as err:
        cause = err.__cause__ or err  # torchview wraps the model's own error
        text = str(cause).strip()
        first = text.splitlines()[0] if text else type(cause).__name__
        raise CnnzooError(
            f"cannot trace {type(model).__name__} with input {tuple(input_size)}: {first}"
        ) from None
    finally:
        model.train(was_training)
    try:
        data = graph.visual_graph.pipe(format=suffix[1:])
    except graphviz.ExecutableNotFound:
        raise CnnzooError(
            "drawing a graph needs Graphviz's `dot` program: install Graphviz "
            "(e.g. `apt-get install graphviz` or `brew install graphviz`)"
        ) from None
    atomic_write_bytes(path, data)
    return path
