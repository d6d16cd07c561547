"""``cnnzoo bench``: task metric, size, MACs and latency of trained models, side by side.

Each run gives one row per way of running it: ``pytorch fp32`` (eager), ``onnxruntime fp32``
(the same weights exported to ONNX; with ``onnx=True``) and, for a run made by
``cnnzoo compress --quantize int8``, ``onnxruntime int8``. What runs is the run's family's
export plan (:meth:`Family.export_plan`): a classifier's or segmenter's logits, a one-stage
detector's candidates *and* its post-processing (threshold, class-aware NMS), in PyTorch and
in ONNX Runtime alike. Latency is the median of ``repeats`` timed calls after warm-up, at
batch 1 and batch 32, on the run's test images, with the stated number of CPU threads for
both PyTorch and ONNX Runtime. Each row's metric is its family's headline
(:attr:`Family.metrics`: accuracy, mIoU, mAP@[.5:.95]) on the run's test split, measured by
the family's evaluation code, so a mixed set of runs benches side by side.
"""

from __future__ import annotations

import json
import platform
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnzoo.errors import CnnzooError
from cnnzoo.families.assemble import flush_denormals
from cnnzoo.families.base import Graph, input_shape
from cnnzoo.families.registry import exporting_family
from cnnzoo.files import atomic_write_text
from cnnzoo.rundir import RunDir, WeightsRun
from cnnzoo.summary import count_macs

BATCHES = (1, 32)


@dataclass
class BenchRow:
    """One model, run one way."""

    run: str
    variant: str
    metric: str  # the family's headline metric, e.g. "accuracy", "miou", "map"
    score: float  # its value on the test split
    params: int
    nonzero_params: int
    macs: int
    size_bytes: int
    size_note: str
    latency_ms: dict[int, float]  # batch -> median ms per call
    scores: dict[str, float] = field(default_factory=dict)  # every metric of the family

    def per_image_ms(self, batch: int) -> float:
        """Return the latency per image at ``batch``."""
        return self.latency_ms[batch] / batch


@dataclass
class BenchReport:
    """Every row plus the conditions they were measured in."""

    rows: list[BenchRow]
    threads: int
    repeats: int
    machine: str
    versions: dict[str, str]
    files: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {
            "threads": self.threads,
            "repeats": self.repeats,
            "machine": self.machine,
            "versions": self.versions,
            "rows": [asdict(r) for r in self.rows],
        }

    def markdown(self) -> str:
        """Return the table as markdown, with the conditions above it."""
        lines = [
            f"Machine: {self.machine}; {self.threads} threads; median of {self.repeats} "
            f"calls; {', '.join(f'{k} {v}' for k, v in self.versions.items())}.",
            "",
            "| run | variant | metric | score | params | nonzero | MACs | size | latency b1 (ms) "
            "| latency b32 (ms) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.run} | {r.variant} | {r.metric} | {r.score:.4f} | {r.params:,} | "
                f"{r.nonzero_params:,} | {r.macs / 1e6:.2f} M | {r.size_bytes / 1024:.1f} KiB "
                f"({r.size_note}) | {r.latency_ms[1]:.3f} | {r.latency_ms[32]:.2f} |"
            )
        return "\n".join(lines) + "\n"


def cpu_name() -> str:
    """Return the CPU model (``/proc/cpuinfo``'s model name where there is one)."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return name


def _versions() -> dict[str, str]:
    import onnxruntime

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def _latency(call: Callable[[torch.Tensor], object], images: torch.Tensor, repeats: int) -> dict:
    from cnnzoo.compress.runtime import median_latency_ms

    out = {}
    for batch in BATCHES:
        x = images.repeat(-(-batch // len(images)), 1, 1, 1)[:batch].contiguous()
        out[batch] = median_latency_ms(lambda x=x: call(x), repeats=repeats)
    return out


def _size(run: RunDir, spec: dict[str, Any]) -> tuple[int, str]:
    compression = run.read_metrics().get("compression", {})
    packed = compression.get("packed_size")
    if spec.get("lowbit") and packed:
        mode = spec["lowbit"]["mode"]
        return int(packed["packed_bytes"]), f"packed {packed['bits_per_weight']}-bit {mode}"
    if isinstance(run, WeightsRun):
        return run.weights.stat().st_size, f"{run.weight_set.storage} file"
    return run.weights.stat().st_size, "safetensors fp32"


def bench_run(
    path: str | Path, threads: int, repeats: int, onnx: bool, data_dir: str | None = None
) -> list[BenchRow]:
    """Measure one run every way it can run.

    Returns:
        Its rows (see the module docstring).

    Raises:
        CnnzooError: for a run whose family or model does not export (a two-stage
            detector), or missing test data.
    """
    from cnnzoo.compress.export import export_onnx
    from cnnzoo.families.deployed import ort_graph, torch_graph

    run = RunDir.open(path)
    family = exporting_family(run, "bench")
    model, spec = run.load_model()
    plan = family.export_plan(model, spec, run.label)
    shape = input_shape(spec)
    images, _ = family.check_images(run, spec, 32)
    finish = plan.finish or (lambda outputs: outputs)
    metric = family.metrics[0]
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    macs = count_macs(model, shape)
    name = run.weight_set.name if isinstance(run, WeightsRun) else run.path.name

    def row(variant: str, graph: Graph, scores: dict, size: int, note: str) -> BenchRow:
        latency = _latency(lambda x: finish(graph(x)), images, repeats)
        return BenchRow(name, variant, metric, scores[metric], params, nonzero, macs, size,
                        note, latency, scores)  # fmt: skip

    def ort_row(file: Path, variant: str) -> BenchRow:
        graph = ort_graph(file, threads=threads)
        scores = family.score(run, graph, data_dir)
        return row(variant, graph, scores, file.stat().st_size, "onnx")

    if run.int8_file.is_file():
        return [ort_row(run.int8_file, "onnxruntime int8")]
    rows = [row("pytorch fp32", torch_graph(plan.module), family.score(run, None, data_dir),
                *_size(run, spec))]  # fmt: skip
    if onnx:
        with tempfile.TemporaryDirectory() as tmp:
            file = export_onnx(plan.module, Path(tmp) / "model.onnx", shape,
                               output_names=plan.output_names)  # fmt: skip
            rows.append(ort_row(file, "onnxruntime fp32"))
    return rows


def bench(
    runs: list[str],
    out: str | Path | None = None,
    threads: int = 2,
    repeats: int = 30,
    onnx: bool = True,
    data_dir: str | None = None,
    overwrite: bool = False,
) -> BenchReport:
    """Benchmark runs side by side; with ``out``, write ``bench.json``, ``bench.md`` and
    ``pareto.png`` (metric vs batch-1 latency, marker area ~ file size) there.

    Returns:
        The report (rows and measuring conditions).

    Raises:
        CnnzooError: for no runs, threads < 1, a run whose model does not export, or an
            existing ``out`` folder with files (without ``overwrite``).
    """
    if not runs:
        raise CnnzooError("give at least one run directory to benchmark")
    if threads < 1:
        raise CnnzooError(f"--threads must be 1 or more, got {threads}")
    out_dir = Path(out) if out else None
    if out_dir and out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise CnnzooError(f"{out_dir} already exists; choose another --out or --overwrite")
    flush_denormals()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows = [row for r in runs for row in bench_run(r, threads, repeats, onnx, data_dir)]
    finally:
        torch.set_num_threads(previous)
    report = BenchReport(rows, threads, repeats, cpu_name(), _versions())
    if out_dir:
        from cnnzoo.viz.pareto import plot_pareto

        metrics = " / ".join(dict.fromkeys(r.metric for r in rows))
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "bench.json", json.dumps(report.to_dict(), indent=2) + "\n")
        atomic_write_text(out_dir / "bench.md", report.markdown())
        png = plot_pareto(
            [f"{r.run}\n{r.variant}" for r in rows],
            [r.latency_ms[1] for r in rows],
            [r.score for r in rows],
            [r.size_bytes for r in rows],
            out_dir / "pareto.png",
            title=f"{metrics} vs latency ({threads} threads, batch 1)",
            ylabel=f"test {metrics}",
        )
        report.files = [out_dir / "bench.json", out_dir / "bench.md", png]
    return report
