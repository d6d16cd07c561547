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
    top_losses: Annotated[
        int,
        typer.Option(help="classification runs: the N most confident mistakes with CAMs (0: none)"),
    ] = 8,
) -> None:
    """Summary table, config differences, shared curves, every plot of the runs and (for
    classification) their most confident mistakes, as one HTML file that needs nothing else."""
    from cnnzoo.errors import CnnzooError
    from cnnzoo.workflows.report import write_report

    if top_losses < 0:
        raise CnnzooError(f"--top-losses must be 0 (none) or more, got {top_losses}")
    path = write_report(runs, out, overwrite=overwrite, top_losses=top_losses)
    console.print(f"wrote {path} ({len(runs)} runs)", highlight=False)
