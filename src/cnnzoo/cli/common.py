"""Shared pieces of the command line: the typer app, the console, error handling, parsing."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from cnnzoo.errors import CnnzooError

app = typer.Typer(
    help="Every architecture of the lecture 'CNN Architectures': build, train, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # click's help layout: readable at 80 columns, no one-word column
)
console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def clear_errors(fn: F) -> F:
    """Turn a :class:`CnnzooError` into one red line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CnnzooError as err:
            err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def human(n: float) -> str:
    """Return ``n`` with a K/M/G suffix, e.g. ``1.23M``."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def parse_model_args(items: list[str]) -> dict[str, Any]:
    """Return ``--model-arg key=value`` items as a dict (values parsed as YAML).

    Raises:
        CnnzooError: for an item without ``=`` or a value that is not valid YAML.
    """
    from cnnzoo.documents import parse_yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CnnzooError(f"--model-arg expects key=value, got {item!r}")
        out[key] = parse_yaml(value, f"--model-arg {key}")
    return out


def width_arg(width: float | None) -> dict[str, float]:
    """Return ``{"width": width}`` for ``--width`` (empty when not given).

    Raises:
        CnnzooError: for a width that is not positive.
    """
    if width is None:
        return {}
    if width <= 0:
        raise CnnzooError(f"--width must be a positive multiplier such as 0.5, got {width}")
    return {"width": width}


def parse_classes(text: str | None) -> list[int] | None:
    """Return the class indices of ``--classes`` (``0-4`` or ``5,7,9``), or None.

    Raises:
        CnnzooError: for text that is not indices or ranges.
    """
    if text is None:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise CnnzooError(f"--classes expects e.g. 0-4 or 5,7,9, got {text!r}") from None
    return out


def train_config(values: dict[str, Any], **overrides: Any) -> Any:
    """Build a TrainConfig from a command's parameters (those that are TrainConfig fields)."""
    from dataclasses import fields

    from cnnzoo.workflows.train import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    args = {k: v for k, v in values.items() if k in names}
    devices = str(args.get("devices", "1"))
    args["devices"] = int(devices) if devices.isdigit() else devices
    args["classes"] = parse_classes(args.get("classes"))
    args.update(overrides)
    return TrainConfig(**args)


def print_metrics(title: str, metrics: dict[str, float], extra: dict[str, Any]) -> None:
    """Print ``extra`` rows, then the metrics (4 decimals), as one table."""
    table = Table(title=title, show_header=False)
    for k, v in extra.items():
        table.add_row(k, str(v))
    for k, v in sorted(metrics.items()):
        table.add_row(k, f"{v:.4f}")
    console.print(table)


DATA_HELP = (
    "classification, autoencoders, VAE, DCGAN: fashion-mnist, fashion-mnist-mini or an image "
    "folder; segmentation: scenes, scenes:PATH, voc:PATH, cityscapes:PATH or masks:PATH; "
    "detection: scenes, scenes:PATH, coco:ANN.json, voc:PATH or yolo:DATA.yaml; translation: "
    "unpaired:PATH, paired:PATH, fmnist-edges, fmnist-invert, fmnist-shoes"
)


def parse_floats(text: str | None, option: str) -> list[float] | None:
    """Return comma-separated numbers of ``option``, or None.

    Raises:
        CnnzooError: for text that is not numbers.
    """
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise CnnzooError(f"{option} expects numbers separated by commas, got {text!r}") from None


def open_run(run: str) -> tuple[Any, Any]:
    """Open a run directory, weights file or weight set name, and its task family.

    Returns:
        ``(RunDir, Family)``.

    Raises:
        CnnzooError: if ``run`` is none of those.
    """
    from cnnzoo.families import family_for
    from cnnzoo.rundir import RunDir

    opened = RunDir.open(run)
    return opened, family_for(opened.read_spec().get("task", "classification"))


def print_evaluation(result: Any) -> None:
    """Print a :class:`~cnnzoo.families.base.Evaluation`: its per-class table under its
    title, or its metrics and notes as one table; then the files it wrote."""
    if result.columns:
        table = Table(title=result.title)
        for i, col in enumerate(result.columns):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in result.rows:
            table.add_row(*row)
        console.print(table)
    else:
        print_metrics(result.title, result.metrics, result.notes)
    for what, path in result.files:
        console.print(f"{what}: {path}", highlight=False, soft_wrap=True)
