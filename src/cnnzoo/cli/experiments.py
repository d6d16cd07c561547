"""`cnnzoo experiment` and `cnnzoo demo`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cnnzoo.cli.common import (
    app,
    clear_errors,
    console,
    print_metrics,
)


@app.command()
@clear_errors
def experiment(
    name: Annotated[str, typer.Argument(help="experiment name, or 'list'")],
    quick: Annotated[bool, typer.Option(help="a few-minute version")] = False,
    out: Annotated[str | None, typer.Option(help="output folder (must not exist)")] = None,
) -> None:
    """The lecture's claims, measured: `cnnzoo experiment list`, `cnnzoo experiment NAME`."""
    from cnnzoo.experiments import list_experiments, run_experiment

    if name == "list":
        table = Table(title="cnnzoo experiments")
        table.add_column("name")
        table.add_column("what it measures")
        for exp in list_experiments():
            table.add_row(exp.name, exp.description)
        console.print(table)
        return
    result = run_experiment(name, out=out, quick=quick)
    table = Table(title=result.title)
    for col in result.columns:
        table.add_column(col)
    for row in result.rows:
        table.add_row(*(str(row.get(c, "")) for c in result.columns))
    console.print(table)
    if result.notes:
        console.print(result.notes, highlight=False)
    for fig in result.figures:
        console.print(f"figure: {fig}")


@app.command()
@clear_errors
def demo(
    out: str = "runs/demo",
    epochs: Annotated[int | None, typer.Option(help="default: the recipe's")] = None,
    data_dir: str | None = None,
    progress: bool = True,
) -> None:
    """The main job: train the compact classifier on Fashion-MNIST, evaluate, summarise."""
    from cnnzoo.workflows.demo import run_demo

    result, why = run_demo(out=out, epochs=epochs, data_dir=data_dir, progress=progress)
    console.print(f"data: {why}")
    extra = {
        "run directory": result.run_dir,
        "model": "convnet",
        "params": f"{result.params:,}",
        "epochs": result.epochs,
        "training seconds": f"{result.seconds:.1f}",
    }
    print_metrics("cnnzoo demo: Fashion-MNIST", result.metrics, extra)
    console.print(f"plots: {result.run_dir / 'plots'}")
