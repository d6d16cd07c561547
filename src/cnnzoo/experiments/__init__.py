"""The lecture's claims as runnable experiments: each declares its runs, then writes a
results table (markdown + JSON) and PNG figures into its output folder.

``cnnzoo experiment list`` shows them; ``cnnzoo experiment NAME [--quick] [--out DIR]`` runs
one. ``--quick`` is a few-minute version with fewer seeds and sizes, for a first look.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnzoo.errors import CnnzooError
from cnnzoo.files import atomic_write_text


@dataclass
class ExperimentResult:
    """What an experiment measured: a table, figures and a short reading of them."""

    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    figures: list[Path] = field(default_factory=list)
    notes: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def markdown(self) -> str:
        """Return the result as a markdown section (title, settings, table, figures, notes)."""
        lines = [f"# {self.title}", ""]
        if self.settings:
            lines += [f"- {k}: {v}" for k, v in self.settings.items()] + [""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "---|" * len(self.columns))
        lines += [
            "| " + " | ".join(str(r.get(c, "")) for c in self.columns) + " |" for r in self.rows
        ]
        lines.append("")
        lines += [f"![{p.stem}]({p.name})" for p in self.figures]
        if self.notes:
            lines += ["", self.notes]
        lines += ["", f"Wall time: {self.seconds:.0f} s."]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: ``run(out_dir, quick)`` returns its :class:`ExperimentResult`."""

    name: str
    description: str
    run: Callable[[Path, bool], ExperimentResult]


_EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(
    name: str, description: str
) -> Callable[[Callable[[Path, bool], ExperimentResult]], Callable[[Path, bool], ExperimentResult]]:
    """Decorator registering ``fn(out_dir, quick) -> ExperimentResult`` under ``name``."""

    def decorator(fn: Callable[[Path, bool], ExperimentResult]):  # type: ignore[no-untyped-def]
        _EXPERIMENTS[name] = Experiment(name, description, fn)
        return fn

    return decorator


def fashion_mnist_name() -> str:
    """Return ``"fashion-mnist"`` where the full set is on this machine, else the bundled
    ``"fashion-mnist-mini"`` (experiments then run, on less data, rather than download)."""
    from cnnzoo.data.fashion_mnist import find_fashion_mnist

    return "fashion-mnist" if find_fashion_mnist() is not None else "fashion-mnist-mini"


def _ensure_loaded() -> None:
    from cnnzoo.experiments import (  # noqa: F401
        ae_pretraining,
        aux_loss,
        bottleneck,
        compression,
        detector_cost,
        layerwise,
        seg_cost,
        transfer,
        upsampling,
        vanishing_gradients,
        what_layers_learn,
    )


def list_experiments() -> list[Experiment]:
    """Return the registered experiments, sorted by name."""
    _ensure_loaded()
    return [_EXPERIMENTS[k] for k in sorted(_EXPERIMENTS)]


def run_experiment(
    name: str, out: str | Path | None = None, quick: bool = False
) -> ExperimentResult:
    """Run experiment ``name`` and write ``results.md``, ``results.json`` and its figures.

    Args:
        out: output folder (default ``runs/experiments/NAME`` or ``…/NAME-quick``); it must
            not exist yet, so earlier results are never overwritten.

    Returns:
        The experiment's result.

    Raises:
        CnnzooError: for an unknown name or an existing output folder.
    """
    import json

    _ensure_loaded()
    if name not in _EXPERIMENTS:
        close = difflib.get_close_matches(name, _EXPERIMENTS, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `cnnzoo experiment list`"
        raise CnnzooError(f"unknown experiment {name!r}; {hint}")
    out_dir = Path(out or f"runs/experiments/{name}{'-quick' if quick else ''}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise CnnzooError(f"{out_dir} already exists; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = _EXPERIMENTS[name].run(out_dir, quick)
    result.seconds = time.perf_counter() - start
    atomic_write_text(out_dir / "results.md", result.markdown())
    payload = {
        "experiment": name,
        "quick": quick,
        "title": result.title,
        "settings": result.settings,
        "columns": result.columns,
        "rows": result.rows,
        "figures": [p.name for p in result.figures],
        "seconds": round(result.seconds, 1),
    }
    atomic_write_text(out_dir / "results.json", json.dumps(payload, indent=2) + "\n")
    return result
