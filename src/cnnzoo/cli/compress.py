"""`cnnzoo compress`, `cnnzoo export` and `cnnzoo bench`: models for small devices."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cnnzoo.cli.common import app, clear_errors, console, human, print_metrics


@app.command()
@clear_errors
def compress(
    source: Annotated[
        str,
        typer.Argument(help="a classification run (segmentation, one-stage detection: int8)"),
    ],
    out: Annotated[str, typer.Option(help="the new run directory")],
    prune: Annotated[
        str | None,
        typer.Option(
            help="structured:R[:l1|bn|taylor] (R = MAC reduction), unstructured:S or "
            "unstructured-layer:S (S = weight sparsity)"
        ),
    ] = None,
    prune_rounds: Annotated[
        int, typer.Option(help="unstructured: prune in this many steps, one per epoch")
    ] = 1,
    quantize: Annotated[
        str | None, typer.Option(help="int8 (ONNX Runtime, no training), ternary or binary")
    ] = None,
    calibration: Annotated[int, typer.Option(help="int8: training images calibrated on")] = 512,
    qat: Annotated[
        bool, typer.Option(help="int8: quantization-aware fine-tuning first (--finetune-epochs)")
    ] = False,
    distill_from: Annotated[
        str | None, typer.Option(help="teacher run: train SOURCE's model afresh with KD")
    ] = None,
    temperature: Annotated[float, typer.Option(help="KD: softmax temperature T")] = 4.0,
    alpha: Annotated[
        float, typer.Option(help="KD: weight of the soft term alpha*T^2*KL (1-alpha: CE)")
    ] = 0.9,
    finetune_epochs: Annotated[
        int, typer.Option(help="prune/ternary/binary/int8 --qat: fine-tuning epochs")
    ] = 3,
    epochs: Annotated[
        int | None, typer.Option(help="KD: student epochs (default: the source run's)")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="default: source lr x 0.1 (fine-tuning), source lr (KD)")
    ] = None,
    batch_size: int | None = None,
    data_dir: str | None = None,
    accelerator: str = "auto",
    precision: Annotated[str | None, typer.Option(help="default: the source run's")] = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> None:
    """A smaller or faster model from a trained classifier, as a new run directory.

    Segmenters and one-stage detectors take --quantize int8: their task metric (mIoU, mAP)
    is measured on the int8 and the fp32 ONNX model, and the run says whether int8 holds."""
    from cnnzoo.workflows.compress import CompressConfig
    from cnnzoo.workflows.compress import compress as run_compress

    values = {k: v for k, v in locals().items() if k in CompressConfig.__dataclass_fields__}
    result = run_compress(CompressConfig(**values))
    info = result.compression
    extra = {"run": result.run_dir, "method": info["method"], "seconds": f"{result.seconds:.1f}"}
    for key in ("source_accuracy", "teacher_accuracy", "student_alone_accuracy"):
        if info.get(key) is not None:
            extra[key.replace("_", " ")] = f"{info[key]:.4f}"
    if "macs_before" in info:
        extra["MACs"] = f"{human(info['macs_before'])} -> {human(info['macs_after'])}"
        extra["params"] = f"{human(info['params_before'])} -> {human(info['params_after'])}"
    if "sparsity" in info:
        extra["sparsity"] = f"{info['sparsity']['sparsity']:.4f}"
    if "packed_size" in info:
        p = info["packed_size"]
        extra["size"] = f"{human(p['fp32_bytes'])}B fp32 -> {human(p['packed_bytes'])}B packed"
    if "int8" in info:
        q = info["int8"]
        extra[f"int8 {q['metric']}"] = (
            f"{q['int8']:.4f} vs {q['fp32_onnx']:.4f} fp32 onnx ({-q['drop']:+.4f}; "
            + ("holds" if q["holds"] else "does not hold")
            + f" at tolerance {q['tolerance']})"
        )
    if "onnx_int8_bytes" in info:
        extra["size"] = (
            f"{human(info['onnx_fp32_bytes'])}B onnx fp32 -> {human(info['onnx_int8_bytes'])}B int8"
        )
    print_metrics(f"compressed {source}", result.metrics, extra)
    if info.get("note"):
        console.print(info["note"], highlight=False)


@app.command()
@clear_errors
def export(
    run: Annotated[
        str,
        typer.Argument(
            help="a classification, segmentation or one-stage detection run (or weight set)"
        ),
    ],
    out: Annotated[str, typer.Option(help="the .onnx file; its manifest goes to .json")] = (
        "model.onnx"
    ),
    format: Annotated[
        str, typer.Option("--format", help="onnx (fp32) or onnx-int8 (from compress)")
    ] = "onnx",
    opset: Annotated[int, typer.Option(help="ONNX opset (18 or more)")] = 18,
    check_images: Annotated[int, typer.Option(help="test images compared with PyTorch")] = 32,
    overwrite: bool = False,
) -> None:
    """ONNX (dynamic batch) checked against PyTorch, plus model.json for a device app.

    Classifiers and segmenters export their logits; one-stage detectors their candidate
    boxes and scores, the manifest describing the NMS to run after the graph."""
    from cnnzoo.workflows.export import ATOL, RTOL, export_run

    r = export_run(run, out, fmt=format, opset=opset, check_images=check_images,
                   overwrite=overwrite)  # fmt: skip
    console.print(f"wrote {r.onnx} and {r.manifest}")
    if r.max_abs_diff is not None:
        console.print(
            f"ONNX Runtime vs PyTorch on {r.images_checked} images: max |diff| "
            f"{r.max_abs_diff:.2e} (tolerance {ATOL:g} + {RTOL:g} x |value|)"
        )
    if r.postprocessing:
        steps = "; ".join(r.postprocessing["steps"])
        console.print(f"after the graph: {steps}", highlight=False)


@app.command()
@clear_errors
def bench(
    runs: Annotated[
        list[str],
        typer.Argument(help="classification, segmentation or one-stage detection runs"),
    ],
    out: Annotated[
        str | None, typer.Option(help="folder for bench.json, bench.md and pareto.png")
    ] = None,
    threads: Annotated[int, typer.Option(help="CPU threads (PyTorch and ONNX Runtime)")] = 2,
    repeats: Annotated[int, typer.Option(help="timed calls per latency (median)")] = 30,
    onnx: Annotated[bool, typer.Option(help="also time each run with ONNX Runtime fp32")] = True,
    data_dir: str | None = None,
    overwrite: bool = False,
) -> None:
    """Task metric (accuracy, mIoU, mAP), params, MACs, file size and latency (batch 1 and
    32) of each run: PyTorch, ONNX Runtime fp32 and, for an int8 run, ONNX Runtime int8."""
    from cnnzoo.workflows.bench import bench as run_bench

    report = run_bench(runs, out, threads=threads, repeats=repeats, onnx=onnx,
                       data_dir=data_dir, overwrite=overwrite)  # fmt: skip
    table = Table(title=f"{report.machine}, {threads} threads, median of {repeats}")
    for col in ("run", "variant", "metric", "score", "params", "nonzero", "MACs", "size",
                "ms b1", "ms b32"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("run", "variant", "metric") else "right")
    for r in report.rows:
        table.add_row(
            r.run, r.variant, r.metric, f"{r.score:.4f}", human(r.params), human(r.nonzero_params),
            human(r.macs), f"{human(r.size_bytes)}B", f"{r.latency_ms[1]:.3f}",
            f"{r.latency_ms[32]:.2f}",
        )  # fmt: skip
    console.print(table)
    for path in report.files:
        console.print(f"wrote {path}")
