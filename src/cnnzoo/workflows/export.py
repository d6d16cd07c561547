"""``cnnzoo export``: a run's model as an ONNX file plus the JSON a device app needs.

What the graph computes is the run's family's answer (:meth:`Family.export_plan`): a
classifier's or a segmenter's logits, a one-stage detector's candidate boxes and scores
(the manifest describes the NMS an app runs after it)."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cnnzoo.errors import CnnzooError
from cnnzoo.families import family_for
from cnnzoo.families.base import input_shape
from cnnzoo.files import atomic_write_text
from cnnzoo.rundir import INT8_FILE, RunDir

FORMATS = ("onnx", "onnx-int8")
ATOL, RTOL = 1e-4, 1e-3  # |onnx - torch| <= ATOL + RTOL * |torch|, on real test images


@dataclass
class ExportResult:
    """What ``cnnzoo export`` wrote and how closely it matches PyTorch."""

    onnx: Path
    manifest: Path
    max_abs_diff: float | None  # None for int8 (quantized: compared by accuracy instead)
    images_checked: int
    postprocessing: dict | None = None  # what an app runs after the graph (detectors)


def export_run(
    run_or_weights: str | Path,
    out: str | Path,
    fmt: str = "onnx",
    opset: int = 18,
    check_images: int = 32,
    overwrite: bool = False,
) -> ExportResult:
    """Export a run to ``out`` (``.onnx``) and its manifest ``out.json``.

    ``onnx`` exports the PyTorch weights (fp32, dynamic batch) and checks the file against
    PyTorch with ONNX Runtime on ``check_images`` test images (tolerance :data:`ATOL` +
    :data:`RTOL` x |output|, every output). ``onnx-int8`` copies the int8 model that
    ``cnnzoo compress --quantize int8`` made (classifier, segmenter or one-stage detector),
    its manifest recording the test metric of the int8 and the fp32 graph.

    Returns:
        The paths written and the largest difference from PyTorch.

    Raises:
        CnnzooError: for an unknown format, a run whose model does not export or has no
            int8 model, an existing output (without ``overwrite``), or an ONNX model that does not
            match PyTorch within the tolerance.
    """
    from cnnzoo.compress.export import device_manifest, export_onnx, verify_onnx

    if fmt not in FORMATS:
        raise CnnzooError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.suffix != ".onnx":
        raise CnnzooError(f"--out {out}: expected a file name ending in .onnx")
    manifest_path = out.with_suffix(".json")
    if (out.parent / "model.safetensors").is_file() and manifest_path.name == "model.json":
        raise CnnzooError(
            f"{manifest_path} is the run's own model.json; export to another name or folder"
        )
    for path in (out, manifest_path):
        if path.exists() and not overwrite:
            raise CnnzooError(f"{path} already exists; pass --overwrite to replace it")
    run = RunDir.open(run_or_weights)
    model, spec = run.load_model()
    family = family_for(spec.get("task", "classification"))
    plan = family.export_plan(model, spec, run.label)
    out.parent.mkdir(parents=True, exist_ok=True)
    diff: float | None = None
    checked, inputs = 0, ""
    if fmt == "onnx-int8":
        source = run.int8_file
        if not source.is_file():
            raise CnnzooError(
                f"{run.label} has no {INT8_FILE}; make one with "
                f"`cnnzoo compress {run.label} --quantize int8 --out RUN`"
            )
        with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".onnx", delete=False) as tmp:
            shutil.copyfile(source, tmp.name)
        Path(tmp.name).replace(out)
    else:
        export_onnx(plan.module, out, input_shape(spec), opset=opset, overwrite=overwrite,
                    output_names=plan.output_names)  # fmt: skip
        images, inputs = family.check_images(run, spec, check_images)
        checked = len(images)
        diff = verify_onnx(plan.module, out, images, atol=ATOL, rtol=RTOL)
    data = spec["data"]
    manifest = device_manifest(
        out, model_name=spec["model"], class_names=data["class_names"], mean=data["mean"],
        std=data["std"], image_size=data["image_size"], resize_to=spec.get("resize_to"),
        quantization="int8" if fmt == "onnx-int8" else "fp32", meanings=plan.meanings,
        postprocessing=plan.postprocessing,
    )  # fmt: skip
    measured = run.read_metrics().get("compression", {}).get("int8")
    if fmt == "onnx-int8" and measured:  # the int8 model's metric beside the fp32 graph's
        manifest["measured"] = measured
    if diff is not None:
        manifest["verified"] = {
            "max_abs_diff": diff, "atol": ATOL, "rtol": RTOL, "images": checked,
            "inputs": inputs, "against": "PyTorch fp32 eager, ONNX Runtime CPU",
        }  # fmt: skip
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return ExportResult(out, manifest_path, diff, checked, plan.postprocessing)
