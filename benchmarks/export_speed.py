"""Inference speed of segmenters and detectors: PyTorch eager (as stored, and channels-last)
vs their ONNX export, fp32 and int8.

Examples::

    python benchmarks/export_speed.py                      # the shipped scenes models
    python benchmarks/export_speed.py runs/yolo --threads 2
    python benchmarks/export_speed.py --clock cpu          # on a CPU shared with other jobs

For each run (or weight set) the model is exported with ``cnnzoo export`` (checked against
PyTorch) and quantized to int8 as ``cnnzoo compress --quantize int8`` does (QDQ, calibrated
on ``--calibration`` training images; a detector's prediction heads and decoding stay fp32);
``cnnzoo compress`` and ``cnnzoo bench`` measure the int8 model's mIoU / mAP. Each way of
running is timed on one image and on a batch of 32 real test images, with the same number of
threads for PyTorch and ONNX Runtime (median of ``--repeats`` calls). A detector's figure
includes its post-processing (score threshold 0.3, class-aware NMS): PyTorch's ``decode`` on
the eager outputs, ``score_candidates`` on the ONNX ones, so every column is whole
predictions. "PyTorch CL" is the path ``cnnzoo predict`` takes: channels-last weights and
inputs, one forward pass and one batched decoding per batch.

Prints a Markdown table: milliseconds per single image, and per image in a batch of 32.
``--clock cpu`` times with the process's CPU time instead of the wall clock: on a machine
whose cores other jobs share, that leaves out the time spent waiting for the core (with one
thread, the two agree on an idle machine).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from classification import machine

DEFAULT = ["fcn8s.scenes", "unet.scenes", "yolov3.scenes", "ssd.scenes"]
COLUMNS = ("PyTorch", "PyTorch CL", "ONNX fp32", "ONNX int8")


def measure(
    name: str, folder: Path, threads: int, repeats: int, calibration: int, clock: object
) -> str:
    """Export and quantize one run; return its table row."""
    import torch

    from cnnzoo.compress.quantize import quantize_int8
    from cnnzoo.compress.runtime import median_latency_ms
    from cnnzoo.families import family_for
    from cnnzoo.families.deployed import ort_graph
    from cnnzoo.families.detection.predict import detect, inference_model
    from cnnzoo.rundir import RunDir
    from cnnzoo.workflows.export import export_run

    run = RunDir.open(name)
    model, spec = run.load_model()
    model.eval()
    task = spec["task"]
    family = family_for(task)
    plan = family.export_plan(model, spec, run.label)
    onnx = export_run(name, folder / "m.onnx", check_images=8, overwrite=True).onnx
    images = family.calibration_images(run, spec, calibration).numpy()
    int8 = quantize_int8(onnx, folder / "m.int8.onnx", images, overwrite=True,
                         float_tail=plan.float_tail, float_heads=plan.float_tail)  # fmt: skip
    x32, _ = family.check_images(run, spec, 32)
    x32 = x32.repeat(32 // len(x32) + 1, 1, 1, 1)[:32]
    detector = task == "detection"
    finish = plan.finish or (lambda outputs: outputs)
    fast = inference_model(RunDir.open(name).load_model()[0])

    def eager(x: torch.Tensor) -> object:
        with torch.inference_mode():
            out = model(x)
            return model.decode(out, tuple(x.shape[-2:]), 0.3, 0.5, 100) if detector else out

    def channels_last(x: torch.Tensor) -> object:
        if detector:
            return detect(fast, x, 0.3, 0.5, 100)
        with torch.inference_mode():
            return fast(x.contiguous(memory_format=torch.channels_last))

    fp32_graph, int8_graph = ort_graph(onnx, threads), ort_graph(int8, threads)
    calls = {
        "PyTorch": eager,
        "PyTorch CL": channels_last,
        "ONNX fp32": lambda x: finish(fp32_graph(x)),
        "ONNX int8": lambda x: finish(int8_graph(x)),
    }
    few = max(3, repeats // 4)
    one = [median_latency_ms(lambda c=c: c(x32[:1]), repeats, clock=clock) for c in calls.values()]
    batch = [median_latency_ms(lambda c=c: c(x32), few, clock=clock) / 32 for c in calls.values()]
    cells = [f"{v:.2f}" for v in one] + [f"{v:.2f}" for v in batch]
    return f"| {run.label} | {task} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=DEFAULT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--calibration", type=int, default=128, help="int8: training images")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    header = " | ".join(f"{c} ms (1 image)" for c in COLUMNS)
    header += " | " + " | ".join(f"{c} ms/image (batch 32)" for c in COLUMNS)
    lines = [f"| model | task | {header} |", "|---|---|" + "---|" * 2 * len(COLUMNS)]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.runs:
            lines.append(
                measure(name, Path(tmp), args.threads, args.repeats, args.calibration, clock)
            )
            print(lines[-1], flush=True)
    print(f"\n{machine()}; {args.threads} thread(s) for PyTorch and ONNX Runtime; "
          f"{args.clock} clock; median of {args.repeats} calls (batch 32: "
          f"{max(3, args.repeats // 4)}).\n")  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
