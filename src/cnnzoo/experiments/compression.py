"""The embedded frontier, measured: every compression of one classifier, benchmarked together.

The lecture's "Optimizing for embedded" lists pruning, weight quantization (down to
ternary/binary), efficient filter design and knowledge distillation. Here, on Fashion-MNIST:

1. a ResNet-20 base (the recipe of ``docs/benchmarks.md``);
2. from it, with ``cnnzoo compress``: structured pruning to half the MACs (L1 channel
   importance, torch-pruning) and unstructured 80 % sparsity, each fine-tuned; int8
   post-training static quantization (ONNX Runtime QDQ); ternary and binary weights
   fine-tuned with a straight-through estimator;
3. knowledge distillation, Hinton et al.'s "soft targets as regularizers" setting: a small
   convnet student (widths 8-16, 64 hidden; 55 k params) trained on 600 images per class
   (10 % of the training set, no augmentation, 30 epochs) alone, and the same recipe with
   the ResNet-20 — trained on all of it — as teacher (T = 4, alpha = 0.5). On the full
   training set the students trained alone match the 5-epoch teacher and distillation did
   not help (``benchmarks/compression_sweep.py``, docs/embedded.md);
4. ``cnnzoo bench`` over all of them: accuracy, params, MACs, file size, latency at batch 1
   and 32 (median, threads stated), a table and a Pareto plot.

The default takes about 12 minutes on 2 CPU cores (bf16 autocast); ``--quick`` uses the bundled
mini set and single epochs (a few minutes: it shows the mechanics, not the accuracies).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnzoo.experiments import ExperimentResult, fashion_mnist_name, register_experiment


@dataclass(frozen=True)
class CompressionSettings:
    """The knobs of the experiment; ``QUICK`` and the default below."""

    data: str = "fashion-mnist"
    base: str = "resnet20"
    base_epochs: int = 5
    student: str = "convnet"
    student_kwargs: dict[str, Any] = field(default_factory=lambda: {"widths": [8, 16],
                                                                    "hidden": 64})  # fmt: skip
    student_epochs: int = 30
    student_per_class: int | None = 600
    student_augment: bool = False
    finetune_epochs: int = 3
    structured: float = 0.5
    sparsity: float = 0.8
    calibration: int = 512
    temperature: float = 4.0
    alpha: float = 0.5
    subset: int | None = None
    repeats: int = 30
    threads: int = 2


QUICK = CompressionSettings(
    data="fashion-mnist-mini", base_epochs=1, student_epochs=1, student_per_class=None,
    finetune_epochs=1, calibration=64, subset=1024, repeats=5,
)  # fmt: skip
DEFAULT = CompressionSettings()
RECIPE = {"batch_size": 256, "lr": 0.1, "precision": "bf16-mixed", "channels_last": True,
          "val_fraction": 0.0, "progress": False}  # fmt: skip


def _dataset(s: CompressionSettings) -> str:
    return fashion_mnist_name() if s.data == "fashion-mnist" else s.data


def _train(model: str, out: Path, epochs: int, data: str, s: CompressionSettings,
           **options: Any) -> Path:  # fmt: skip
    from cnnzoo.workflows.train import TrainConfig, train

    cfg = TrainConfig(model=model, data=data, out=str(out), epochs=epochs, subset=s.subset,
                      **RECIPE, **options)  # fmt: skip
    return train(cfg).run_dir


def variants(runs: Path, s: CompressionSettings) -> list[tuple[str, Path]]:
    """Train the base and the student, make every compressed variant; return them by label."""
    from cnnzoo.workflows.compress import CompressConfig, compress

    data = _dataset(s)
    base = _train(s.base, runs / f"base-{s.base}", s.base_epochs, data, s)
    out: list[tuple[str, Path]] = [(f"{s.base} (base)", base)]
    jobs = {
        f"structured {s.structured:.0%} MACs": {"prune": f"structured:{s.structured}"},
        f"unstructured {s.sparsity:.0%}": {"prune": f"unstructured:{s.sparsity}"},
        "int8": {"quantize": "int8", "calibration": s.calibration},
        "ternary": {"quantize": "ternary"},
        "binary": {"quantize": "binary"},
    }
    for i, (label, options) in enumerate(jobs.items()):
        run = runs / f"{s.base}-{i + 1}-{label.split()[0]}"
        compress(CompressConfig(source=str(base), out=str(run), progress=False,
                                finetune_epochs=s.finetune_epochs, **options))  # fmt: skip
        out.append((f"{s.base} {label}", run))
    student = _train(s.student, runs / f"student-{s.student}", s.student_epochs, data, s,
                     model_kwargs=s.student_kwargs, per_class=s.student_per_class,
                     augment=s.student_augment)  # fmt: skip
    out.append((f"{s.student} alone", student))
    kd = runs / f"student-{s.student}-kd"
    compress(CompressConfig(source=str(student), out=str(kd), distill_from=str(base),
                            temperature=s.temperature, alpha=s.alpha, progress=False))  # fmt: skip
    out.append((f"{s.student} KD from {s.base}", kd))
    return out


def _row(label: str, bench_rows: list[Any], base: dict[str, float]) -> dict[str, Any]:
    best = bench_rows[0]
    ort = next((r for r in bench_rows if r.variant.startswith("onnxruntime")), None)
    return {
        "variant": label,
        "runtime": best.variant,
        "accuracy": f"{best.score:.4f}",
        "Δ pt": f"{100 * (best.score - base['accuracy']):+.2f}",
        "params": f"{best.nonzero_params:,}",
        "MACs (M)": f"{best.macs / 1e6:.2f}",
        "size (KiB)": f"{best.size_bytes / 1024:.1f}",
        "ms b1": f"{best.latency_ms[1]:.3f}",
        "ms b32": f"{best.latency_ms[32]:.2f}",
        "ORT fp32 ms b1": f"{ort.latency_ms[1]:.3f}" if ort and ort is not best else "",
        "ORT fp32 ms b32": f"{ort.latency_ms[32]:.2f}" if ort and ort is not best else "",
    }


@register_experiment(
    "compression",
    "pruning, int8, ternary/binary, distillation of one classifier: accuracy vs size vs latency",
)
def compression(out: Path, quick: bool) -> ExperimentResult:
    """Run the experiment into ``out``.

    Returns:
        One row per variant (accuracy and its change from the base, nonzero params, MACs,
        size, latency at batch 1 and 32), the Pareto plot, and notes.
    """
    from cnnzoo.workflows.bench import bench

    s = QUICK if quick else DEFAULT
    made = variants(out / "runs", s)
    report = bench([str(p) for _, p in made], out / "bench", threads=s.threads,
                   repeats=s.repeats, onnx=True)  # fmt: skip
    by_run: dict[str, list[Any]] = {}
    for r in report.rows:
        by_run.setdefault(r.run, []).append(r)
    base_rows = by_run[made[0][1].name]
    base = {"accuracy": base_rows[0].score}
    rows = [_row(label, by_run[path.name], base) for label, path in made]
    (out / "pareto.png").write_bytes((out / "bench" / "pareto.png").read_bytes())
    settings = {**asdict(s), "data": _dataset(s), "machine": report.machine,
                **report.versions}  # fmt: skip
    return ExperimentResult(
        title="Compression frontier: accuracy, size and latency of each variant",
        columns=list(rows[0]),
        rows=rows,
        figures=[out / "pareto.png"],
        notes=_notes(made, by_run),
        settings=settings,
    )


def _notes(made: list[tuple[str, Path]], by_run: dict[str, list[Any]]) -> str:
    """What the table shows, from the measured numbers (nothing claimed beyond them)."""
    rows = {label: by_run[path.name] for label, path in made}
    labels = [label for label, _ in made]
    base = rows[labels[0]]
    torch_b32 = base[0].latency_ms[32]
    ort_b32 = base[1].latency_ms[32] if len(base) > 1 else float("nan")
    lines = []
    for label in labels[1:]:
        r = rows[label][0]
        lines.append(
            f"- {label}: accuracy {r.score:.4f} ({100 * (r.score - base[0].score):+.2f} "
            f"pt), {r.macs / 1e6:.2f} M MACs, batch-32 latency {r.latency_ms[32]:.2f} ms "
            f"({torch_b32 / r.latency_ms[32]:.2f}x PyTorch fp32 eager, "
            f"{ort_b32 / r.latency_ms[32]:.2f}x ONNX Runtime fp32 of the base)."
        )
    kd, alone = rows[labels[-1]][0], rows[labels[-2]][0]
    lines.append(
        f"- Distillation: the student gains {100 * (kd.score - alone.score):+.2f} pt "
        "over the same student trained alone (one seed)."
    )
    metrics = json.loads((made[2][1] / "metrics.json").read_text())
    note = metrics.get("compression", {}).get("note")
    if note:
        lines.append(f"- Unstructured pruning: {note}.")
    return "\n".join(lines)
