"""`cnnzoo weights`: list, describe, download and verify named weight sets."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cnnzoo.cli.common import CnnzooError, app, clear_errors, console

weights_app = typer.Typer(
    help="Named weight sets (MODEL.TAG): shipped with cnnzoo, or downloaded and verified.",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")


_SHORT = {
    "test/accuracy": "acc",
    "imagenet_val/acc1": "top1",
    "test/miou": "mIoU",
    "test/map_50": "mAP50",
    "test/psnr": "PSNR",
    "test/fid": "FID",
    "test/l1": "L1",
}
"""How ``weights list`` names each main metric (``weights info`` gives the full keys)."""


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**20:.1f}M" if n >= 2**20 else f"{n / 2**10:.0f}K"


@weights_app.command("list")
@clear_errors
def list_(
    model: Annotated[
        str | None, typer.Option(help="only this model (wildcards: 'resnet*')")
    ] = None,
    task: Annotated[str | None, typer.Option(help="only this task")] = None,
) -> None:
    """Table of the weight sets: name, data, metric, size, and whether shipped or downloaded."""
    from cnnzoo.weights import cache_dir, file_path, list_weights

    found = list_weights(model, task)
    if not found:
        raise CnnzooError(
            f"no weight sets for model {model!r}" if model else f"no weight sets for task {task!r}"
        )
    from rich import box

    # The model is the name's first part: its own column only where the terminal is wide.
    columns = ["name", "model", "data", "metric", "size", "where"]
    if console.width < 100:
        columns.remove("model")
    table = Table(
        title="cnnzoo weights",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
    )
    for col in columns:
        table.add_column(col, no_wrap=True, justify="right" if col == "size" else "left")
    for ws in found:
        metric = ws.main_metric()
        shown = f"{_SHORT.get(metric[0], metric[0])} {metric[1]:.4f}" if metric else "-"
        where = "shipped" if ws.shipped else "cached" if file_path(ws).is_file() else "download"
        data = ws.dataset or ws.spec.get("data", {}).get("name", "")
        values = dict(
            zip(
                ["name", "model", "data", "metric", "size", "where"],
                [ws.name, ws.model, data, shown, _size(ws.size), where],
                strict=True,
            )
        )
        table.add_row(*(values[c] for c in columns))
    console.print(table)
    console.print(f"cache: {cache_dir()}", highlight=False)


@weights_app.command("info")
@clear_errors
def info(name: Annotated[str, typer.Argument(help="MODEL.TAG")]) -> None:
    """Everything the catalog knows about one weight set."""
    from cnnzoo.weights import file_path, get

    ws = get(name)
    table = Table(title=ws.name, show_header=False, title_justify="left")
    rows = {
        "model": ws.model,
        "task": ws.task,
        "builder options": ", ".join(f"{k}={v}" for k, v in ws.spec.get("kwargs", {}).items()),
        "classes": _classes(ws.classes),
        "preprocessing": ws.preprocessing.describe(),
        "trained on": ws.trained_on,
        "metrics": ", ".join(f"{k} {v:.4f}" for k, v in ws.metrics.items()),
        "storage": ws.storage,
        "file": str(file_path(ws)),
        "url": ws.url or "(shipped in the package)",
        "sha256": ws.sha256,
        "size": _size(ws.size),
        "licence": ws.license,
        "recipe": ws.recipe,
        "notes": ws.notes,
    }
    for key, value in rows.items():
        if value:
            table.add_row(key, value)
    console.print(table)


def _classes(names: list[str]) -> str:
    if len(names) <= 12:
        return ", ".join(names)
    return f"{len(names)}: {', '.join(names[:5])}, ..."


@weights_app.command()
@clear_errors
def download(
    names: Annotated[list[str], typer.Argument(help="MODEL.TAG ...")],
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Download weight sets into the cache, verified by SHA-256 before they are kept."""
    from cnnzoo.weights import get, local_file

    for name in names:
        ws = get(name)
        path = local_file(ws, download=True, progress=progress)
        what = "shipped" if ws.shipped else "verified"
        typer.echo(f"{ws.name}\t{what}\t{path}")


@weights_app.command()
@clear_errors
def verify(
    names: Annotated[
        list[str] | None, typer.Argument(help="MODEL.TAG ... (default: the cache and shipped)")
    ] = None,
) -> None:
    """Re-hash weight files (the whole cache and the shipped files by default); exit status
    1 if any fails."""
    from cnnzoo.weights import verify as verify_files

    results = verify_files(names or None)
    bad = 0
    for r in results:
        mark = "ok" if r.ok else "FAILED"
        bad += not r.ok
        line = f"{r.name}\t{mark}\t{r.path}" + ("" if r.message == "ok" else f"\t{r.message}")
        typer.echo(line, err=not r.ok)
    if not results:
        console.print("nothing to verify: the cache is empty")
    if bad:
        raise typer.Exit(1)
