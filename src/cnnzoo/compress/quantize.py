"""Int8 post-training static quantization of an exported ONNX model (ONNX Runtime, QDQ format).

Static quantization fixes the scale of every activation ahead of time from a few hundred
calibration images, so inference runs in integer arithmetic end to end; weights are
quantized per output channel, which keeps the error of layers whose filters have very
different ranges (depthwise convolutions, folded BatchNorm) small. The result is a QDQ model:
the float graph with ``QuantizeLinear``/``DequantizeLinear`` pairs around each quantized
operator, which ONNX Runtime fuses into integer kernels (``QLinearConv`` and friends) and
which other runtimes read as well.

Settings: signed int8 weights, symmetric, per output channel; unsigned int8 activations,
asymmetric (most activations follow a ReLU and are non-negative, so uint8 keeps all 256
levels for them); no ``reduce_range`` (needed only on CPUs without VNNI, to avoid saturating
the 16-bit intermediate sums of the u8s8 kernels). Calibration defaults to MinMax: on a
ResNet-20 trained on Fashion-MNIST (83.2 % fp32, 512 calibration images) MinMax and Entropy
both gave 82.8 %, Percentile 82.7 %, with 99.1 % of argmaxes unchanged, and MinMax
calibrates fastest.

A detector's graph ends in arithmetic on the network's outputs, not in a layer: its box
decoding (``sigmoid``, ``exp``, products with anchors and strides) and scores
(``sigmoid(objectness) x sigmoid(class)``). With ``float_tail`` those operators stay fp32:
quantized, a box coordinate in a 96-pixel image moves in steps of ~0.4 px and a score in
steps of ~1/255, which blurs the low scores that mAP ranks by; kept in float they cost
almost nothing (a few element-wise operators after the last convolution).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnzoo.errors import CnnzooError
from cnnzoo.files import atomic_write_bytes

METHODS = ("minmax", "percentile", "entropy")


class _ArrayReader:
    """A ``CalibrationDataReader`` over an in-memory array, ``batch_size`` images at a time."""

    def __init__(self, input_name: str, data: np.ndarray, batch_size: int) -> None:
        self.input_name = input_name
        self.data = data
        self.batch_size = batch_size
        self.start = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.start >= len(self.data):
            return None
        batch = self.data[self.start : self.start + self.batch_size]
        self.start += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.start = 0

    def __iter__(self) -> _ArrayReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _check_calibration(calibration: np.ndarray, input_dims: list[int | str]) -> np.ndarray:
    data = np.asarray(calibration)
    if data.ndim != 4:
        raise CnnzooError(
            f"calibration data has shape {data.shape}: expected preprocessed images (N, C, H, W)"
        )
    if len(data) == 0:
        raise CnnzooError("calibration data is empty: give at least one preprocessed image")
    if not np.issubdtype(data.dtype, np.floating):
        raise CnnzooError(
            f"calibration data is {data.dtype}: expected float32 images, already normalised "
            "like the model's input (not raw uint8 pixels)"
        )
    for axis, (got, want) in enumerate(zip(data.shape[1:], input_dims[1:], strict=False), 1):
        if isinstance(want, int) and want > 0 and got != want:
            raise CnnzooError(
                f"calibration data has shape {data.shape}, the model input is {input_dims} "
                f"(axis {axis} differs)"
            )
    if not np.isfinite(data).all():
        raise CnnzooError("calibration data contains NaN or infinite values")
    return np.ascontiguousarray(data, dtype=np.float32)


WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def float_tail_nodes(graph: Any, heads: bool = False) -> list[str]:
    """Return the names of the nodes of an ONNX ``graph`` after its last weighted layers:
    the nodes from which no convolution or matrix product can be reached (a detector's box
    decoding and score products), in graph order; with ``heads``, those last weighted
    layers too (a detector's prediction convolutions)."""
    leads: set[str] = set()  # tensors from which a weighted node can be reached
    tail: list[str] = []
    for node in reversed(graph.node):  # ONNX lists nodes in topological order
        weighted = node.op_type in WEIGHTED_OPS
        if any(out in leads for out in node.output):
            leads.update(node.input)
        elif weighted:
            leads.update(node.input)
            if heads:
                tail.append(node.name)
        else:
            tail.append(node.name)
    return tail[::-1]


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    per_channel: bool = True,
    method: str = "minmax",
    batch_size: int = 64,
    reduce_range: bool = False,
    overwrite: bool = False,
    float_tail: bool = False,
    float_heads: bool = False,
    exclude_ops: Sequence[str] = (),
) -> Path:
    """Quantize an fp32 ONNX classifier to int8 (QDQ) with calibrated activation ranges.

    The model is first pre-processed (``quant_pre_process``: graph optimisation and shape
    inference, so every tensor has a known type for the quantizer), then calibrated on
    ``calibration`` and quantized with ``quantize_static``.

    Args:
        fp32_path: the float model from :func:`cnnzoo.compress.export.export_onnx`.
        out_path: the int8 ``.onnx`` file to write (atomically).
        calibration: float32 images ``(N, C, H, W)``, preprocessed exactly as for inference
            (a few hundred from the training set are plenty).
        per_channel: one weight scale per output channel (otherwise one per tensor).
        method: activation range calibration: ``"minmax"`` (observed min/max),
            ``"percentile"`` (99.999th percentile of |x|) or ``"entropy"`` (KL divergence).
        batch_size: calibration images per inference call.
        reduce_range: 7-bit weights, for CPUs without VNNI instructions (older x86), where
            ONNX Runtime's u8s8 kernels can otherwise saturate.
        overwrite: replace an existing ``out_path``.
        float_tail: keep the operators after the last convolution in fp32
            (:func:`float_tail_nodes`; a detector's decoding, see the module docstring).
        float_heads: with ``float_tail``, keep the last weighted layers in fp32 as well.
        exclude_ops: further operator types to keep in fp32 (e.g. ``("Resize",)``).

    Returns:
        The path written.

    Raises:
        CnnzooError: for a missing model, an existing output, an unknown method, or empty,
            non-float or wrongly shaped calibration data.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, out = Path(fp32_path), Path(out_path)
    if not src.is_file():
        raise CnnzooError(f"{src} does not exist: export the fp32 ONNX model first")
    if out.exists() and not overwrite:
        raise CnnzooError(f"{out} already exists; choose another output or pass --overwrite")
    if out.resolve() == src.resolve():
        raise CnnzooError(f"the int8 output {out} would replace its fp32 source")
    if method not in METHODS:
        raise CnnzooError(f"calibration method {method!r} is unknown: expected one of {METHODS}")
    if batch_size < 1:
        raise CnnzooError(f"calibration batch size {batch_size} is invalid: expected 1 or more")
    graph = onnx.load(str(src), load_external_data=False).graph
    dims = [
        d.dim_value if d.HasField("dim_value") else d.dim_param
        for d in graph.input[0].type.tensor_type.shape.dim
    ]
    data = _check_calibration(calibration, dims)
    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    with tempfile.TemporaryDirectory(prefix="cnnzoo-quant-") as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(src), str(prepared))
        graph = onnx.load(str(prepared), load_external_data=False).graph
        excluded = float_tail_nodes(graph, heads=float_heads) if float_tail else []
        excluded += [n.name for n in graph.node if n.op_type in set(exclude_ops)]
        quantize_static(
            str(prepared),
            str(quantized),
            _ArrayReader(graph.input[0].name, data, batch_size),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calibrate,
            nodes_to_exclude=excluded or None,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
        atomic_write_bytes(out, quantized.read_bytes())
    return out
