"""One self-contained HTML page comparing run directories (``cnnzoo report``).

The page holds a summary table (model, task, data, cost and every ``test/*`` metric, the best
per column highlighted), the configuration keys that differ between the runs, the
``metrics.csv`` curves the runs share overlaid in one new figure, and a section per run with
every PNG of its ``plots/`` folder (and, when asked for, a classification run's most
confident mistakes with their class activation maps, computed at report time). Images are
embedded as base64 data URIs and the CSS is inline, so the file can be mailed or archived
alone; nothing needs JavaScript.

Any task's runs work (classification, segmentation, detection, generative, compressed):
the page shows what a run has and skips what it lacks. A multi-seed run (``cnnzoo train
--seeds N``, :mod:`cnnzoo.workflows.seeds`) shows each metric as mean ± std, a table of its
seeds' values and the plots of every seed's run.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from cnnzoo.documents import parse_yaml
from cnnzoo.errors import CnnzooError
from cnnzoo.files import atomic_write_text

RUN_FILES = ("metrics.json", "model.json", "config.yaml", "metrics.csv")
# metrics where a smaller value is better (matched against the last part of the name)
LOWER_IS_BETTER = ("loss", "mse", "mae", "l1", "fid", "error", "bpd", "nll", "kl", "seconds")
CONFIG_IGNORED = ("out",)  # always differs, and the run's name already says it
CSV_NOT_CURVES = ("epoch", "step", "seconds")
MAX_PLOTS_PER_RUN = 40
MAX_OVERLAYS = 12
TOP_LOSSES_LIMIT = 1000  # test images scored per run, so a report stays quick
SEED_FOLDER = re.compile(r"seed--?\d+")  # a multi-seed run's per-seed runs (workflows/seeds.py)

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;
 padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.best{background:#d9f2d9;font-weight:bold}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}.note{color:#777;font-size:.9em}
code{background:#f6f6f6;padding:0 .2em}
"""


@dataclass
class RunRecord:
    """What one run directory holds (each part empty when its file is missing or unreadable)."""

    path: Path
    name: str
    summary: dict[str, Any] = field(default_factory=dict)  # metrics.json
    spec: dict[str, Any] = field(default_factory=dict)  # model.json
    config: dict[str, Any] = field(default_factory=dict)  # config.yaml
    rows: list[dict[str, str]] = field(default_factory=list)  # metrics.csv
    plots: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, Any]:
        m = self.summary.get("metrics")
        return m if isinstance(m, dict) else {}

    @property
    def seeds(self) -> dict[str, Any]:
        """A multi-seed run's ``multi_seed`` section of metrics.json (empty for one seed)."""
        m = self.summary.get("multi_seed")
        return m if isinstance(m, dict) else {}

    @property
    def std(self) -> dict[str, Any]:
        """Per metric, its standard deviation over a multi-seed run's seeds (else empty)."""
        m = self.seeds.get("std")
        return m if isinstance(m, dict) else {}

    def seed_list(self, key: str) -> list[Any]:
        """A list of a multi-seed run's ``multi_seed`` section (``seeds``, ``runs``), or []."""
        m = self.seeds.get(key)
        return m if isinstance(m, list) else []

    def get(self, key: str) -> Any:
        """Return ``key`` from metrics.json, else model.json, else config.yaml (or None)."""
        aliases = {"dataset": "data"}
        for source in (self.summary, self.spec, self.config):
            for k in (key, aliases.get(key, key)):
                if source.get(k) is not None:
                    return source[k]
        return None


def _read(run: RunRecord, name: str, parse: Any) -> Any:
    path = run.path / name
    if not path.is_file():
        return None
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, CnnzooError, csv.Error) as err:
        run.problems.append(f"{name} could not be read ({type(err).__name__})")
        return None


def load_run(path: str | Path, name: str | None = None) -> RunRecord:
    """Read what exists of a run directory.

    Returns:
        The run's record; files that are missing leave their part empty, unreadable ones
        add a line to ``problems``.

    Raises:
        CnnzooError: if ``path`` is not a directory with any of metrics.json, model.json,
            config.yaml or metrics.csv.
    """
    p = Path(path)
    if not p.is_dir() or not any((p / f).is_file() for f in RUN_FILES):
        raise CnnzooError(
            f"{path} is not a cnnzoo run directory: expected a folder with "
            f"{', '.join(RUN_FILES)} (written by `cnnzoo train`)"
        )
    run = RunRecord(p, name or p.name)
    for attr, file, parse in (
        ("summary", "metrics.json", json.loads),
        ("spec", "model.json", json.loads),
        ("config", "config.yaml", lambda text: parse_yaml(text, "config.yaml")),  # no bombs
    ):
        value = _read(run, file, parse)
        if isinstance(value, dict):
            setattr(run, attr, value)
        elif value is not None:
            run.problems.append(f"{file} does not hold a mapping")
    rows = _read(run, "metrics.csv", lambda text: list(csv.DictReader(io.StringIO(text))))
    run.rows = rows or []
    if (p / "plots").is_dir():
        top = sorted(p.glob("plots/*.png"))
        nested = sorted(q for q in p.glob("plots/*/**/*.png") if q.is_file())
        run.plots = [q for q in top if q.is_file()] + nested
    for folder in run.seed_list("runs"):  # a multi-seed run: each seed's own plots
        if isinstance(folder, str) and SEED_FOLDER.fullmatch(folder) and (p / folder).is_dir():
            run.plots += sorted(q for q in (p / folder).glob("plots/*.png") if q.is_file())
    return run


def _names(paths: list[Path]) -> list[str]:
    """Folder names, or the paths as given where two folders share a name."""
    names = [p.name or str(p) for p in paths]
    return [str(p) if names.count(n) > 1 else n for p, n in zip(paths, names, strict=True)]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 1e5 or 0 < abs(value) < 1e-3:
            return f"{value:.4g}"
        return f"{value:.2f}" if abs(value) >= 100 else f"{value:.4f}"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _cell(value: Any, best: bool = False, std: Any = None) -> str:
    """One ``<td>``: numbers right-aligned, the exact value in the tooltip; with ``std`` (a
    multi-seed run's mean), ``mean ± std``."""
    classes = []
    if _number(value) is not None and not isinstance(value, str):
        classes.append("num")
    if best:
        classes.append("best")
    cls = f' class="{" ".join(classes)}"' if classes else ""
    title = f' title="{escape(repr(value))}"' if isinstance(value, float) else ""
    text = _fmt(value)
    if _number(std) is not None and _number(value) is not None:
        text += f" ± {_fmt(float(std))}"
        title = f' title="{escape(repr(value))} ± {escape(repr(std))}"'
    return f"<td{cls}{title}>{escape(text)}</td>"


def _lower_is_better(metric: str) -> bool:
    last = metric.rsplit("/", 1)[-1].lower()
    return any(last == w or last.endswith("_" + w) or last.startswith(w) for w in LOWER_IS_BETTER)


def best_runs(runs: list[RunRecord], metric: str) -> set[int]:
    """Return the indices of the runs with the best value of ``metric`` among the runs of
    their task (a task's best only where at least two of its runs have the metric)."""
    groups: dict[str, list[tuple[float, int]]] = {}
    for i, r in enumerate(runs):
        if (v := _number(r.metrics.get(metric))) is not None:
            groups.setdefault(str(r.get("task")), []).append((v, i))
    out: set[int] = set()
    for present in groups.values():
        if len(present) >= 2:
            target = (min if _lower_is_better(metric) else max)(v for v, _ in present)
            out |= {i for v, i in present if v == target}
    return out


def _table(header: list[str], body: list[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _compression_method(run: RunRecord) -> str | None:
    info = run.summary.get("compression")
    if not isinstance(info, dict):
        return None
    return str(info.get("method") or "yes")


def _summary_table(runs: list[RunRecord]) -> str:
    metrics = sorted({k for r in runs for k in r.metrics if k.startswith("test/")})
    columns = ["model", "task", "dataset", "params", "epochs", "seconds"]
    methods = [_compression_method(r) for r in runs]
    if any(methods):
        columns.append("compression")
    seeded = any(r.seeds for r in runs)
    if seeded:
        columns.append("seeds")
    best = {m: best_runs(runs, m) for m in metrics}
    body = []
    for i, r in enumerate(runs):
        cells = [f"<td>{escape(r.name)}</td>"]
        for c in columns:
            if c == "seeds":
                cells.append(_cell(len(r.seed_list("seeds")) or 1))
            else:
                cells.append(_cell(methods[i] if c == "compression" else r.get(c)))
        cells += [_cell(r.metrics.get(m), i in best[m], r.std.get(m)) for m in metrics]
        body.append(f"<tr>{''.join(cells)}</tr>")
    note = (
        '<p class="note">Best per metric among runs of the same task highlighted (lowest for '
        "losses, errors, MSE and FID; highest otherwise). Hover a number for its exact value."
        "</p>"
        if metrics
        else '<p class="note">No run has test metrics.</p>'
    )
    if seeded:
        note += (
            '<p class="note">Runs of several seeds (<code>cnnzoo train --seeds N</code>): '
            "mean ± sample standard deviation over the seeds; seconds is their total.</p>"
        )
    return _table(["run", *columns, *metrics], body) + note


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value} if prefix else {}


def config_differences(runs: list[RunRecord]) -> list[tuple[str, list[Any]]]:
    """Return the (dotted) configuration keys whose values differ between runs, with each
    run's value (None where a run lacks the key), in the order they first appear."""
    flat = [_flatten(r.config) for r in runs]
    keys: dict[str, None] = {}
    for f in flat:
        keys.update(dict.fromkeys(f))
    missing = object()
    out = []
    for key in keys:
        if key.split(".")[0] in CONFIG_IGNORED:
            continue
        values = [f.get(key, missing) for f in flat]
        if any(json.dumps(v, default=str, sort_keys=True) !=
               json.dumps(values[0], default=str, sort_keys=True) for v in values):  # fmt: skip
            out.append((key, [None if v is missing else v for v in values]))
    return out


def _config_section(runs: list[RunRecord]) -> str:
    if len(runs) < 2:
        return '<p class="note">One run: nothing to compare.</p>'
    if not any(r.config for r in runs):
        return '<p class="note">No run has a config.yaml.</p>'
    diffs = config_differences(runs)
    if not diffs:
        return '<p class="note">The runs have the same configuration.</p>'
    body = [
        f"<tr><td><code>{escape(k)}</code></td>{''.join(_cell(v) for v in vals)}</tr>"
        for k, vals in diffs
    ]
    return _table(["key", *[r.name for r in runs]], body)


def _series(rows: list[dict[str, str]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(rows):
        y = _number(row.get(key))
        x = _number(row.get("epoch"))
        if y is not None:
            xs.append(x if x is not None else float(i + 1))
            ys.append(y)
    return xs, ys


def shared_curves(runs: list[RunRecord]) -> list[str]:
    """Return the ``metrics.csv`` columns (not epoch, step, seconds) with values in at least
    two runs, validation before training, at most 12."""
    counts: dict[str, int] = {}
    for r in runs:
        cols = {k for row in r.rows for k, v in row.items() if k and _number(v) is not None}
        for c in cols:
            counts[c] = counts.get(c, 0) + 1
    shared = [c for c, n in counts.items() if n >= 2 and c not in CSV_NOT_CURVES]
    order = {"val": 0, "train": 1}
    shared.sort(key=lambda c: (order.get(c.split("/")[0], 2), c.split("/")[-1], c))
    return shared[:MAX_OVERLAYS]


def overlay_figure(runs: list[RunRecord], columns: list[str]) -> bytes:
    """Return a PNG with one panel per column: every run's curve against epoch."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax, col in zip(axes.flat, columns, strict=False):
        for r in runs:
            x, y = _series(r.rows, col)
            if x:
                ax.plot(x, y, "-o", markersize=3, label=r.name)
        ax.set_title(col)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(columns) :]:
        ax.set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _img(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{escape(alt)}">'


def _details_table(run: RunRecord) -> str:
    """Everything else metrics.json holds (compression, class IoU / AP, ...), flattened."""
    standard = {"model", "task", "dataset", "epochs", "seconds", "params", "metrics"}
    extra = {k: v for k, v in run.summary.items() if k not in standard | {"multi_seed"}}
    parts = [_seeds_table(run)] if run.seeds else []
    other = {k: v for k, v in run.metrics.items() if not k.startswith("test/")}
    for title, data in (("", other), *extra.items()):
        flat = _flatten(data, title) if isinstance(data, dict) else {title: data}
        if not flat:
            continue
        body = [f"<tr><td><code>{escape(k)}</code></td>{_cell(v)}</tr>" for k, v in flat.items()]
        parts.append(_table(["entry", "value"], body))
    return "".join(parts)


def _seeds_table(run: RunRecord) -> str:
    """A multi-seed run's values per seed (one row each), then their mean and std."""
    seeds = run.seed_list("seeds")
    values = run.seeds.get("values")
    values = values if isinstance(values, dict) else {}
    metrics = sorted(k for k, v in values.items() if isinstance(v, list) and len(v) == len(seeds))
    body = []
    for i, seed in enumerate(seeds):
        cells = "".join(_cell(values[m][i]) for m in metrics)
        body.append(f"<tr><td>seed {escape(str(seed))}</td>{cells}</tr>")
    for label, source in (("mean", run.metrics), ("std", run.std)):
        body.append(f"<tr><th>{label}</th>{''.join(_cell(source.get(m)) for m in metrics)}</tr>")
    return _table(["seed", *metrics], body)


def _mistakes_section(run: RunRecord, n: int) -> str:
    """The run's ``n`` most confident mistakes with Grad-CAM (see
    :mod:`cnnzoo.explain.top_losses`), or a note saying why the page has none."""
    head = "<h4>Most confident mistakes</h4>"
    task = run.get("task")
    if task not in (None, "classification"):
        why = f"they apply to classification runs; this is a {task} run"
        return f'{head}<p class="note">Skipped: {escape(why)}.</p>'
    try:
        from cnnzoo.explain.top_losses import top_losses
        from cnnzoo.viz.top_losses import top_losses_png

        items = top_losses(run.path, n, limit=TOP_LOSSES_LIMIT, download=False)
        png = top_losses_png(items) if items else b""
    except CnnzooError as err:
        return f'{head}<p class="note">Skipped: {escape(str(err))}</p>'
    except Exception as err:  # one section never costs the whole page
        why = f"could not be computed ({type(err).__name__}: {err}".splitlines()[0] + ")"
        return f'{head}<p class="note">Skipped: {escape(why)}.</p>'
    if not items:
        none = f"No mistakes among the first {TOP_LOSSES_LIMIT:,} test images."
        return f'{head}<p class="note">{none}</p>'
    caption = (
        f"The {len(items)} largest losses among the mistakes on (up to) the first "
        f"{TOP_LOSSES_LIMIT:,} test images: each pair shows Grad-CAM of the predicted class, "
        "then of the true class; captions read pred / true / loss / prob of pred. "
        "<code>cnnzoo explain RUN --top-losses N</code> draws more."
    )
    figure = f"<figure>{_img(png, 'most confident mistakes')}<figcaption>{caption}</figcaption>"
    return f"{head}\n{figure}</figure>"


def _run_section(run: RunRecord, index: int, top_losses: int = 0) -> str:
    out = [f'<h3 id="run-{index}">{escape(run.name)}</h3>',
           f'<p class="note">{escape(str(run.path))}</p>']  # fmt: skip
    out += [f'<p class="note">{escape(p)}</p>' for p in run.problems]
    out.append(_details_table(run))
    if not run.plots:
        out.append('<p class="note">No plots.</p>')
    shown = run.plots[:MAX_PLOTS_PER_RUN]
    for plot in shown:
        try:
            data = plot.read_bytes()
        except OSError:
            out.append(f'<p class="note">{escape(plot.name)} could not be read.</p>')
            continue
        inside = plot.is_relative_to(run.path / "plots")  # else a seed's run's plot
        rel = plot.relative_to(run.path / "plots" if inside else run.path).as_posix()
        out.append(f"<figure>{_img(data, rel)}<figcaption>{escape(rel)}</figcaption></figure>")
    if len(run.plots) > len(shown):
        out.append(f'<p class="note">{len(run.plots) - len(shown)} more plots not shown.</p>')
    if top_losses > 0:
        out.append(_mistakes_section(run, top_losses))
    return "\n".join(out)


def render_report(runs: list[RunRecord], top_losses: int = 0) -> str:
    """Return the whole HTML page for ``runs`` (see the module docstring).

    Args:
        top_losses: show each classification run's this many most confident mistakes
            (0: none; the section explains itself where a run cannot have them).
    """
    title = "cnnzoo report: " + ", ".join(r.name for r in runs)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="note">{len(runs)} runs, written {escape(stamp)} by cnnzoo report.</p>',
        "<h2>Summary</h2>",
        _summary_table(runs),
        "<h2>Configuration differences</h2>",
        _config_section(runs),
    ]
    curves = shared_curves(runs) if len(runs) >= 2 else []
    if curves:
        parts += [
            "<h2>Curves across runs</h2>",
            f"<figure>{_img(overlay_figure(runs, curves), 'metrics.csv curves of every run')}"
            "<figcaption>metrics.csv columns shared by the runs, per epoch</figcaption></figure>",
        ]
    parts.append("<h2>Runs</h2>")
    parts += [_run_section(r, i, top_losses) for i, r in enumerate(runs)]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(
    runs: list[str | Path], out: str | Path, overwrite: bool = False, top_losses: int = 0
) -> Path:
    """Write one self-contained HTML page comparing the run directories ``runs``.

    Args:
        top_losses: show each classification run's this many most confident mistakes, with
            Grad-CAM of the predicted and the true class (0: none; ``cnnzoo report`` shows
            8 unless ``--top-losses`` says otherwise).

    Returns:
        The path written (atomically).

    Raises:
        CnnzooError: for no runs, a path that is not a run directory, or an existing ``out``
            without ``overwrite`` (or one that is a folder).
    """
    if not runs:
        raise CnnzooError("cnnzoo report needs at least one run directory")
    out = Path(out)
    if out.is_dir():
        raise CnnzooError(f"--out {out} is a folder; expected an .html file name")
    if out.exists() and not overwrite:
        raise CnnzooError(f"{out} already exists; choose another --out or pass --overwrite")
    paths = [Path(r) for r in runs]
    records = [load_run(p, n) for p, n in zip(paths, _names(paths), strict=True)]
    atomic_write_text(out, render_report(records, top_losses))
    return out
