"""ONNX export of classification models, a check against PyTorch, and the device manifest.

The exported graph has one input ``"input"`` (float32, NCHW) and one output ``"logits"``, both
with a dynamic batch axis, so one file serves batch 1 on a device and large batches on a server.

Exporter choice: torch's dynamo exporter (``torch.export`` + onnxscript, the default since
PyTorch 2.9). On cnnzoo's classifiers it gives the clean graph that quantizes well later:
BatchNorm folded into the convolutions, no ``Identity``/``Shape``/``Gather`` chains (the legacy
TorchScript exporter emits ~300 ``Constant``/``Shape``/``Gather``/``Unsqueeze`` nodes for
ShuffleNet V2's channel shuffle, the dynamo exporter a plain ``Reshape``/``Transpose``), and
the batch axis symbolic by construction. Its operators are implemented from opset 18; asking
for 17 would go through the ONNX version converter, which fails on the opset-18
``ReduceMean`` of global average pooling, so ``opset`` must be 18 or more. ONNX Runtime runs
and quantizes opset 18 models.

The weights are kept inside the one ``.onnx`` file (no external data file): a model must be
under protobuf's 2 GB limit, which every cnnzoo classifier is by far.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.files import atomic_write_bytes

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
CLASSIFIER_OUTPUT = (
    "logits: unnormalised class scores; softmax over axis 1 gives probabilities, argmax "
    "gives the class index into 'classes'"
)
MIN_OPSET = 18
_MAX_BYTES = 2**31 - 1  # protobuf's limit for one serialized message


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise CnnzooError(
            f"input shape {input_shape!r} is invalid: expected three positive ints (C, H, W)"
        )
    return shape  # type: ignore[return-value]


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _strip_debug_metadata(proto: Any) -> None:
    """Drop the exporter's per-node debug records (Python stack traces, FX names).

    They are ~8 % of a ResNet-20 file and would outweigh its int8 weights after quantization;
    a device app has no use for them.
    """
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for info in proto.graph.value_info:
        del info.metadata_props[:]


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: tuple[int, int, int],
    opset: int = MIN_OPSET,
    dynamic_batch: bool = True,
    overwrite: bool = False,
    output_names: Sequence[str] = (OUTPUT_NAME,),
) -> Path:
    """Export ``model`` (in eval mode) to a self-contained ONNX file.

    The graph takes ``"input"`` of shape ``(batch, *input_shape)`` and returns
    ``output_names`` (``"logits"`` by default); with ``dynamic_batch`` the batch axis is
    symbolic, otherwise fixed at 1. The model's training/eval mode is restored afterwards.

    Args:
        model: ``forward(x)`` returns one tensor (logits of a classifier or a segmenter) or a
            tuple of tensors, one per name in ``output_names``.
        path: the ``.onnx`` file to write (atomically).
        input_shape: ``(C, H, W)`` of one image, as the model receives it (after any resize).
        opset: ONNX opset, 18 or more (see the module docstring).
        dynamic_batch: make the batch axis dynamic.
        overwrite: replace an existing file.
        output_names: the graph's output names, in the order ``forward`` returns them.

    Returns:
        The path written.

    Raises:
        CnnzooError: if the file exists (and not ``overwrite``), the shape or opset is invalid,
            or the exporter cannot trace the model.
    """
    path = Path(path)
    shape = _check_input_shape(input_shape)
    if path.exists() and not overwrite:
        raise CnnzooError(f"{path} already exists; choose another output or pass --overwrite")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise CnnzooError(
            f"opset {opset!r} is not supported: expected {MIN_OPSET} or more "
            "(torch's ONNX exporter implements its operators from opset 18)"
        )
    was_training = model.training
    model.eval()
    # An example batch of 2: a batch of 1 would let the tracer treat the axis as constant.
    example = torch.zeros(2 if dynamic_batch else 1, *shape, device=_device(model))
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # exporter chatter, not the user's concern
            program = torch.onnx.export(
                model,
                (example,),
                input_names=[INPUT_NAME],
                output_names=list(output_names),
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                dynamo=True,
                optimize=True,
                verbose=False,
            )
    except Exception as err:  # the exporter raises many types; the first line says why
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CnnzooError(
            f"could not export {type(model).__name__} with input {shape} to ONNX: {first}"
        ) from err
    finally:
        model.train(was_training)
    proto = program.model_proto
    _strip_debug_metadata(proto)
    if proto.ByteSize() > _MAX_BYTES:
        raise CnnzooError(
            f"{type(model).__name__} is over 2 GB, too large for a single-file ONNX model"
        )
    atomic_write_bytes(path, proto.SerializeToString())
    return path


def verify_onnx(
    model: nn.Module,
    path: str | Path,
    inputs: Tensor,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> float:
    """Run ``inputs`` through ``model`` (eval mode) and through the ONNX file with onnxruntime.

    The outputs agree when ``|onnx - torch| <= atol + rtol * |torch|`` element-wise (the
    ``numpy.allclose`` rule). The model's training/eval mode is restored afterwards.

    Returns:
        The largest absolute difference between the two outputs.

    Raises:
        CnnzooError: if the file cannot run on ``inputs``, the output shapes differ, or an
            element is outside the tolerance (the message gives both the difference and the
            tolerance).
    """
    from cnnzoo.compress.runtime import ort_outputs, ort_session

    x = inputs.detach().float().cpu()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.to(_device(model)))
    finally:
        model.train(was_training)
    torch_outputs = [out] if isinstance(out, Tensor) else list(out)
    session = ort_session(path, threads=1)
    onnx_outputs = ort_outputs(session, x.numpy())
    max_diff = 0.0
    for name, expected_t, actual in zip(
        [o.name for o in session.get_outputs()], torch_outputs, onnx_outputs, strict=True
    ):
        expected = expected_t.float().cpu().numpy()
        if actual.shape != expected.shape:
            raise CnnzooError(
                f"{path} gives {name} of shape {actual.shape}, PyTorch {expected.shape}: "
                "the file is for a different model"
            )
        diff = np.abs(actual - expected)
        worst = float(diff.max()) if diff.size else 0.0
        bound = atol + rtol * np.abs(expected)
        if not bool(np.all(diff <= bound)):
            worst_bound = float(bound.flat[int(np.argmax(diff - bound))])
            raise CnnzooError(
                f"{path} does not match PyTorch: max abs difference {worst:.3g} in {name} "
                f"exceeds the tolerance atol={atol:g} + rtol={rtol:g}*|value| "
                f"(<= {worst_bound:.3g} there)"
            )
        max_diff = max(max_diff, worst)
    return max_diff


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _dims(value_info: Any) -> list[int | str]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return dims


def device_manifest(
    onnx_path: str | Path,
    *,
    model_name: str,
    class_names: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    image_size: Sequence[int],
    resize_to: int | None = None,
    quantization: str = "fp32",
    meanings: Sequence[str] | None = None,
    postprocessing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Describe an exported model for an app that runs it without cnnzoo (its ``model.json``).

    Input/output names, shapes and the opset are read from the ONNX file itself. The
    preprocessing is cnnzoo's own (``cnnzoo.data.datamodule.prepare_batch``): 8-bit pixels are
    divided by 255, normalised per channel with the run's ``mean``/``std``, and, when the
    model was trained on resized batches (``resize_to`` in the run's spec), resized
    bilinearly. The arguments come from the run's spec: ``spec["model"]``,
    ``spec["data"]["class_names" | "mean" | "std" | "image_size"]`` and ``spec["resize_to"]``.

    ``meanings`` says what each graph output is (default: a classifier's logits); a graph
    with several outputs (a detector's boxes and scores) is listed under ``outputs``, one
    under ``output``. ``postprocessing`` (a detector's score threshold and NMS) is copied in.

    Returns:
        A JSON-ready dict (see the keys below; ``format`` is ``"cnnzoo-device-manifest"``).

    Raises:
        CnnzooError: for a missing or unreadable ONNX file, an unknown ``quantization``, or
            mean/std/class names that do not fit the model's input channels and outputs.
    """
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise CnnzooError(f"{path} does not exist: export the model first")
    if quantization not in ("fp32", "int8"):
        raise CnnzooError(f"quantization {quantization!r} is unknown: expected fp32 or int8")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise CnnzooError(f"{path} is not an ONNX model: {err}") from None
    graph = proto.graph
    if len(graph.input) != 1:
        raise CnnzooError(f"{path} has {len(graph.input)} inputs: expected one image input")
    meanings = list(meanings or [CLASSIFIER_OUTPUT])
    if len(meanings) != len(graph.output):
        raise CnnzooError(
            f"{path} has {len(graph.output)} outputs but {len(meanings)} meanings were given"
        )
    in_dims, out_dims = _dims(graph.input[0]), _dims(graph.output[0])
    channels = in_dims[1] if len(in_dims) == 4 else None
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    if not isinstance(channels, int) or len(mean) not in (1, channels) or len(mean) != len(std):
        raise CnnzooError(
            f"mean {mean} / std {std} do not fit the model input {in_dims}: "
            "expected one value per channel"
        )
    if len(mean) == 1 and channels > 1:  # cnnzoo broadcasts one value to all channels
        mean, std = mean * channels, std * channels
    if len(out_dims) == 2 and isinstance(out_dims[1], int) and out_dims[1] != len(class_names):
        raise CnnzooError(f"{len(class_names)} class names for a model with {out_dims[1]} outputs")
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    size = [int(s) for s in image_size]
    resize = None
    if resize_to is not None and [resize_to, resize_to] != size:
        resize = {
            "size": [int(resize_to), int(resize_to)],
            "method": "bilinear",
            "coordinate_transformation": "half_pixel",  # torch align_corners=False
            "antialias": resize_to < max(size),  # cnnzoo antialiases when shrinking
            "after_normalize": True,
        }
    color = {1: "grayscale", 3: "RGB"}.get(channels, f"{channels} channels")
    described = [
        {"name": o.name, "shape": _dims(o), "dtype": "float32", "meaning": meaning}
        for o, meaning in zip(graph.output, meanings, strict=True)
    ]
    outputs = {"output": described[0]} if len(described) == 1 else {"outputs": described}
    return {
        "format": "cnnzoo-device-manifest",
        "version": 1,
        "model": {
            "name": model_name,
            "file": path.name,
            "sha256": _sha256(path),
            "bytes": path.stat().st_size,
            "opset": opset,
            "quantization": quantization,
        },
        "input": {
            "name": graph.input[0].name,
            "layout": "NCHW",
            "shape": in_dims,
            "dtype": "float32",
        },
        "preprocessing": {
            "pixels": f"uint8 0..255, {color}, {size[0]}x{size[1]} (height x width)",
            "color": color,
            "image_size": size,
            "scale": 1.0 / 255.0,
            "mean": mean,
            "std": std,
            "formula": "x[c] = (pixel[c] / 255 - mean[c]) / std[c]",
            "resize": resize,
        },
        **outputs,
        **({"postprocessing": postprocessing} if postprocessing else {}),
        "classes": list(class_names),
    }
