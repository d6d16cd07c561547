"""``cnnzoo export``: a run's classifier as an ONNX file plus the JSON a device app needs."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnzoo.errors import CnnzooError
from cnnzoo.families.registry import exporting_family
from cnnzoo.files import atomic_write_text
from cnnzoo.rundir import INT8_FILE, RunDir
from cnnzoo.workflows.compress import input_shape

FORMATS = ("onnx", "onnx-int8")
ATOL, RTOL = 1e-4, 1e-3  # |onnx - torch| <= ATOL + RTOL * |torch|, on real test images


@dataclass
class ExportResult:
    """What ``cnnzoo export`` wrote and how closely it matches PyTorch."""

    onnx: Path
    manifest: Path
    max_abs_diff: float | None  # None for int8 (quantized: compared by accuracy instead)
    images_checked: int


def export_run(
    run_or_weights: str | Path,
    out: str | Path,
    fmt: str = "onnx",
    opset: int = 18,
    check_images: int = 32,
    overwrite: bool = False,
) -> ExportResult:
    """Export a classification run to ``out`` (``.onnx``) and its manifest ``out.json``.

    ``onnx`` exports the PyTorch weights (fp32, dynamic batch) and checks the file against
    PyTorch with ONNX Runtime on ``check_images`` test images (tolerance :data:`ATOL` +
    :data:`RTOL` x |output|). ``onnx-int8`` copies the int8 model that
    ``cnnzoo compress --quantize int8`` made in the run.

    Returns:
        The paths written and the largest difference from PyTorch.

    Raises:
        CnnzooError: for an unknown format, a run that is not a classifier or has no int8
            model, an existing output (without ``overwrite``), or an ONNX model that does not
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
    exporting_family(run, "export")
    model, spec = run.load_model()
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
        export_onnx(model, out, input_shape(spec), opset=opset, overwrite=overwrite)
        images, inputs = _test_images(run, spec, check_images)
        checked = len(images)
        diff = verify_onnx(model, out, images, atol=ATOL, rtol=RTOL)
    data = spec["data"]
    manifest = device_manifest(
        out, model_name=spec["model"], class_names=data["class_names"], mean=data["mean"],
        std=data["std"], image_size=data["image_size"], resize_to=spec.get("resize_to"),
        quantization="int8" if fmt == "onnx-int8" else "fp32",
    )  # fmt: skip
    if diff is not None:
        manifest["verified"] = {
            "max_abs_diff": diff, "atol": ATOL, "rtol": RTOL, "images": checked,
            "inputs": inputs, "against": "PyTorch fp32 eager, ONNX Runtime CPU",
        }  # fmt: skip
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return ExportResult(out, manifest_path, diff, checked)


def _test_images(run: RunDir, spec: dict, n: int) -> tuple[torch.Tensor, str]:
    """The first ``n`` test images as the model sees them, and what they are.

    Where the training data is not on this machine, standard-normal noise (seed 0) instead.
    """
    from cnnzoo.families.classification.evaluate import first_images, run_data

    try:
        dm, _ = run_data(run, spec, split="test", batch_size=max(n, 1))
    except CnnzooError:
        noise = torch.randn(n, *input_shape(spec), generator=torch.Generator().manual_seed(0))
        return noise, "standard-normal noise (the training data was not found)"
    x = first_images(dm, "test", n)
    return x, f"the first {len(x)} test images of {spec['data']['name']}"
