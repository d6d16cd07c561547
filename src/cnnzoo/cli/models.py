"""`cnnzoo models` and `cnnzoo info`: what is registered and what it costs."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from cnnzoo.cli.common import (
    CnnzooError,
    app,
    clear_errors,
    console,
    human,
)


@app.command()
@clear_errors
def models(
    patterns: Annotated[
        list[str] | None,
        typer.Argument(help="only names matching these wildcards, e.g. 'resnet*' '*net'"),
    ] = None,
    task: Annotated[str | None, typer.Option(help="only this task")] = None,
    long: Annotated[
        bool, typer.Option("--long", help="also the input size and the full citations")
    ] = False,
) -> None:
    """Table of the registered models: name, task, parameters, MACs, paper."""
    from cnnzoo.registry import list_models, model_info
    from cnnzoo.summary import model_cost

    names = list_models(task, filter=patterns or ())
    if not names:
        raise CnnzooError(
            f"no model matches {' '.join(patterns or [])!r}"
            + (f" among the {task} models" if task else "")
            + "; see `cnnzoo models`"
        )
    table = Table(title="cnnzoo models", box=None if not long else box.SIMPLE_HEAD,
                  pad_edge=False, header_style="bold")  # fmt: skip
    columns = ["name", "task", *(["input"] if long else []), "params", "MACs", "paper"]
    for col in columns:
        table.add_column(
            col,
            justify="right" if col in ("params", "MACs") else "left",
            no_wrap=col != "paper",
            overflow="fold" if long else "ellipsis",
        )
    for name in names:
        info = model_info(name)
        params, macs = model_cost(name)
        paper = info.paper if long else short_citation(info.paper)
        size = ["x".join(map(str, info.input_size))] if long else []
        table.add_row(name, info.task, *size, human(params), human(macs), paper)
    console.print(table)


def short_citation(paper: str) -> str:
    """``"He, Zhang, Ren, Sun, Deep Residual Learning ..., CVPR 2016"`` -> ``"He et al.
    2016"``: the first author (both of two), ``et al.`` for more, and the year; several
    papers separated by ``"; "`` stay several."""
    return "; ".join(_short(one) for one in paper.split("; "))


def _short(citation: str) -> str:
    authors: list[str] = []
    more = False
    for token in citation.split(", "):
        names = token.split(" & ")
        if not all(re.fullmatch(r"[A-Z][\w'-]*( et al\.)?", n) for n in names):
            break
        more = more or any(n.endswith(" et al.") for n in names)
        authors += [n.removesuffix(" et al.") for n in names]
    years = re.findall(r"\b(?:19|20)\d\d\b", citation)
    year = f" {years[-1]}" if years else ""
    if not authors:
        return citation
    if len(authors) == 2 and not more:
        return f"{authors[0]} & {authors[1]}{year}"
    return f"{authors[0]}{' et al.' if more or len(authors) > 2 else ''}{year}"


@app.command()
@clear_errors
def info(
    name: str,
    input_size: Annotated[
        tuple[int, int, int] | None, typer.Option(help="C H W (default: the model's)")
    ] = None,
    num_classes: Annotated[int | None, typer.Option()] = None,
    depth: Annotated[int, typer.Option(help="module nesting depth shown")] = 2,
    graph: Annotated[
        str | None,
        typer.Option(
            help="also draw the computational graph (modules, tensor shapes) to "
            "this .svg or .png file (needs Graphviz)"
        ),
    ] = None,
    graph_depth: Annotated[
        int | None,
        typer.Option(
            help="graph: modules deeper than this are one box (default: the "
            "deepest level with at most 70 nodes)"
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="graph: replace an existing file")] = False,
    receptive_field: Annotated[
        bool,
        typer.Option(
            "--receptive-field",
            help="also print each stage's receptive field and jump (classifiers)",
        ),
    ] = False,
) -> None:
    """Per-layer output shapes, parameters and MACs of one model (and its graph)."""
    from cnnzoo.registry import create_model, model_info
    from cnnzoo.summary import summarize

    meta = model_info(name)
    size = tuple(input_size) if input_size else meta.input_size
    kwargs: dict[str, Any] = {"in_channels": size[0]}
    if num_classes:
        kwargs["num_classes"] = num_classes
    if size[1] < meta.small_input_below and meta.small_input:
        kwargs["small_input"] = True
    if size[1] < meta.min_input_size and not kwargs.get("small_input"):
        raise CnnzooError(
            f"{name} needs inputs of at least {meta.min_input_size}x{meta.min_input_size}, "
            f"got {size[1]}x{size[2]}"
        )
    fields = None
    if receptive_field:  # first, so that a model without stages fails before any output
        from cnnzoo.explain.receptive import receptive_fields

        options = {k: v for k, v in kwargs.items() if k != "in_channels"}
        fields = receptive_fields(name, size, **options)
    model = create_model(name, **kwargs)
    rows = summarize(model, size, max_depth=depth)
    table = Table(title=f"{name}  input {'x'.join(map(str, size))}  ({meta.paper})")
    for col in ("layer", "type", "output shape", "params", "MACs"):
        table.add_column(col, justify="right" if col in ("params", "MACs") else "left")
    for r in rows:
        shape = "x".join(map(str, r.output_shape[1:])) if r.output_shape else "-"
        indent = "  " * (r.depth - 1)
        table.add_row(indent + r.name, r.kind, shape, f"{r.params:,}", human(r.macs))
    total_params = sum(p.numel() for p in model.parameters())
    total_macs = sum(r.macs for r in rows if r.depth == 1)
    table.add_row("total", "", "", f"{total_params:,}", human(total_macs), style="bold")
    console.print(table)
    if graph is not None:
        from cnnzoo.viz.graph import draw_graph

        written = draw_graph(model, (1, *size), graph, depth=graph_depth, overwrite=overwrite)
        console.print(f"wrote the computational graph to {written}", highlight=False)
    if fields is not None:
        print_receptive_fields(name, fields)


def _pair(values: tuple[int, int]) -> str:
    """``435`` for equal height and width, ``435x211`` otherwise."""
    return str(values[0]) if values[0] == values[1] else f"{values[0]}x{values[1]}"


def _percent(share: float) -> str:
    """``12%``, or ``0.4%`` below 10 %."""
    return f"{share:.1%}" if share < 0.1 else f"{share:.0%}"


def print_receptive_fields(name: str, fields: list[Any]) -> None:
    """Print one row per stage: channels, jump, receptive field and how much input it sees.

    ``fields`` are :class:`~cnnzoo.explain.receptive.StageField` of one model.
    """
    side = fields[0].input_size
    table = Table(
        title=f"{name} receptive fields, input {_pair(side)} px",
        caption="jump: input pixels between neighbouring cells. field: input pixels one "
        "cell depends on (padding included), also per input side. sees: share of the "
        "input inside the field of the map's central cell.",
        caption_justify="left",
    )
    table.add_column("stage", no_wrap=True)
    for col in ("channels", "jump", "field", "field/side", "sees"):
        table.add_column(col, justify="right", no_wrap=True)
    for f in fields:
        relative = "/".join(
            dict.fromkeys(_percent(s / n) for s, n in zip(f.size, side, strict=True))
        )
        table.add_row(
            f.module, str(f.channels), _pair(f.jump), _pair(f.size), relative, _percent(f.coverage)
        )
    console.print(table)
