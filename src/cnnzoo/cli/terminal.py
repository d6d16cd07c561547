"""What the terminal shows: cnnzoo's own lines, not other libraries' banners.

Every ``cnnzoo`` command runs :func:`setup_terminal` first (the app's callback). Without
``--verbose``, Lightning's start-up lines ("GPU available", "TPU available", "💡 Tip", "was
configured so 100% of the batches will be used", "Loading `train_dataloader` to estimate ...")
and the deprecation / future warnings that libraries raise about each other are hidden;
warnings that concern the user's run (e.g. a dataloader bottleneck) still show. cnnzoo's own
information lines (``logging.getLogger("cnnzoo")``: which weights were loaded, what AutoAnchor
fitted) go to standard error, one plain line each. ``--verbose`` shows everything.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Annotated

import typer

from cnnzoo.cli.common import app, err_console

QUIET_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch",
    "lightning.fabric",
)
"""Loggers whose INFO lines are banners and tips, shown only with ``--verbose``. Lightning
sets its packages' loggers to INFO when it is imported (after this runs), so the loggers its
``rank_zero_info`` writes to are named as well: Lightning never sets their level."""
QUIET_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
"""Warning categories libraries raise about each other's APIs, shown only with ``--verbose``."""


class _PlainHandler(logging.Handler):
    """cnnzoo's log records as plain lines on the error console."""

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
        err_console.print(prefix + record.getMessage(), highlight=False, markup=False)


def setup_terminal(verbose: bool) -> None:
    """Route cnnzoo's log lines to standard error; unless ``verbose``, silence the others'.

    Returns nothing; changes the ``logging`` configuration and the ``warnings`` filters of
    this process.
    """
    # The command line only writes figures to files: matplotlib's file backend, chosen before
    # matplotlib is first imported (the library itself leaves the backend to its user, so a
    # notebook keeps its inline figures).
    os.environ.setdefault("MPLBACKEND", "Agg")
    own = logging.getLogger("cnnzoo")
    if not any(isinstance(h, _PlainHandler) for h in own.handlers):
        own.addHandler(_PlainHandler())
    own.setLevel(logging.DEBUG if verbose else logging.INFO)
    own.propagate = False
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    if verbose:
        return
    for category in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", category=category)


@app.callback()
def main(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="also show other libraries' banners, tips and deprecation warnings",
        ),
    ] = False,
) -> None:
    """Every architecture of the lecture 'CNN Architectures': build, train, evaluate."""
    setup_terminal(verbose)
