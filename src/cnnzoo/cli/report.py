"""`cnnzoo report`: one self-contained HTML page comparing run directories."""

from __future__ import annotations

from typing import Annotated

import typer

from cnnzoo.cli.common import app, clear_errors, console


@app.command()
@clear_errors
def report(
    runs: Annotated[list[str], typer.Argument(help="run directories (any task)")],
    out: Annotated[str, typer.Option(help="the HTML file (images embedded)")] = "report.html",
    overwrite: Annotated[bool, typer.Option(help="replace an existing --out")] = False,
) -> None:
    """Summary table, config differences, shared curves and every plot of the runs, as one
    HTML file that needs nothing else."""
    from cnnzoo.workflows.report import write_report

    path = write_report(runs, out, overwrite=overwrite)
    console.print(f"wrote {path} ({len(runs)} runs)", highlight=False)
