"""Inference speed of segmenters and detectors: PyTorch eager vs their ONNX export.

Examples::

    python benchmarks/export_speed.py                      # the shipped scenes models
    python benchmarks/export_speed.py runs/yolo --threads 2

For each run (or weight set) the model is exported with ``cnnzoo export`` (checked against
PyTorch), then timed on one image and on a batch of 32, fp32, with the same number of
threads for PyTorch and ONNX Runtime (median of ``--repeats`` calls). A detector's figure
includes its post-processing (score threshold, class-aware NMS): PyTorch's ``decode`` on the
eager outputs, ``score_candidates`` on the ONNX ones, so both columns are whole predictions.
Prints a Markdown table: images/s at batch 32, milliseconds per single image.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from classification import machine

DEFAULT = ["fcn8s.scenes", "unet.scenes", "yolov3.scenes", "ssd.scenes"]


def measure(name: str, folder: Path, threads: int, repeats: int) -> str:
    """Export one run and return its table row."""
    import torch

    from cnnzoo.compress.runtime import median_latency_ms, ort_outputs, ort_session
    from cnnzoo.families import family_for
    from cnnzoo.families.base import input_shape
    from cnnzoo.models.detection.postprocess import score_candidates
    from cnnzoo.rundir import RunDir
    from cnnzoo.workflows.export import export_run

    run = RunDir.open(name)
    model, spec = run.load_model()
    model.eval()
    task = spec["task"]
    onnx = export_run(name, folder / "m.onnx", check_images=8, overwrite=True).onnx
    session = ort_session(onnx, threads=threads)
    _, h, w = input_shape(spec)
    x32, _ = family_for(task).check_images(run, spec, 32)
    x32 = x32.repeat(32 // len(x32) + 1, 1, 1, 1)[:32]
    detector = task == "detection"

    def torch_call(x: torch.Tensor) -> object:
        with torch.inference_mode():
            out = model(x)
            return model.decode(out, (h, w), 0.3, 0.5, 100) if detector else out

    def onnx_call(x: torch.Tensor) -> object:
        outs = ort_outputs(session, x.numpy())
        if not detector:
            return outs
        boxes, scores = (torch.from_numpy(o) for o in outs)
        return score_candidates(boxes, scores, (h, w), 0.3, 0.5, 100)

    few = max(3, repeats // 4)
    t32 = median_latency_ms(lambda: torch_call(x32), repeats=few)
    o32 = median_latency_ms(lambda: onnx_call(x32), repeats=few)
    t1 = median_latency_ms(lambda: torch_call(x32[:1]), repeats=repeats)
    o1 = median_latency_ms(lambda: onnx_call(x32[:1]), repeats=repeats)
    return f"| {run.label} | {task} | {32000 / t32:.0f} | {32000 / o32:.0f} | {t1:.2f} | {o1:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=DEFAULT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    lines = [
        "| model | task | PyTorch img/s (batch 32) | ONNX img/s (batch 32) | PyTorch ms (1 image) "
        "| ONNX ms (1 image) |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.runs:
            lines.append(measure(name, Path(tmp), args.threads, args.repeats))
            print(lines[-1], flush=True)
    print(f"\n{machine()}; {args.threads} thread(s) for PyTorch and ONNX Runtime; fp32; median "
          f"of {args.repeats} calls (batch 32: {max(3, args.repeats // 4)}).\n")  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
