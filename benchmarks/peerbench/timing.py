"""Inference speed, measured the same way for cnnzoo and its peers.

Imported by cnnzoo's side and by the peer scripts in the peers' virtual environment, so it
needs nothing but torch (and onnxruntime for :func:`onnx_images_per_second`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

SPEED_BATCH = 32
"""Images per forward pass in the speed figures (the issue's protocol)."""


def median_seconds(call: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    """Return the median wall time of ``call()`` over ``repeats`` runs after ``warmup`` ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_images_per_second(model: Any, batch: Any, repeats: int = 5) -> float:
    """Images per second of ``model(batch)``: eval mode, fp32, no autograd, on the CPU, in
    the faster of the two memory layouts (NCHW, channels-last), so neither side is timed in
    a layout it would not be deployed in.

    Args:
        model: a ``torch.nn.Module`` (its raw forward is timed: no decoding, no NMS).
        batch: a float32 ``(N, C, H, W)`` tensor.
        repeats: timed calls (the median counts).
    """
    import torch

    model = model.float().eval().cpu()
    best = 0.0
    for layout in (torch.contiguous_format, torch.channels_last):
        model = model.to(memory_format=layout)
        x = batch.float().cpu().contiguous(memory_format=layout)
        with torch.inference_mode():
            seconds = median_seconds(lambda m=model, x=x: m(x), repeats)
        best = max(best, len(batch) / seconds)
    return best


def onnx_images_per_second(path: str, batch: Any, threads: int, repeats: int = 5) -> float:
    """Images per second of an ONNX graph's first input fed ``batch`` (numpy float32 NCHW),
    with ONNX Runtime's CPU provider on ``threads`` intra-op threads (one inter-op)."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    feed = {name: np.ascontiguousarray(batch, dtype=np.float32)}
    seconds = median_seconds(lambda: session.run(None, feed), repeats)
    return len(batch) / seconds


def onnx_speed(
    export: Callable[[], Any], batch: Any, threads: int, repeats: int = 5
) -> dict[str, Any]:
    """Export with ``export()`` (returns the ONNX file's path) and time the file in ONNX
    Runtime on ``batch``; the export is optional, so a failure is recorded, not raised.

    Returns:
        ``{"onnx_images_per_s": ...}``, with ``None`` and ``"onnx_error"`` when it failed.
    """
    try:
        path = export()
        speed = onnx_images_per_second(str(path), batch, threads, repeats)
        return {"onnx_images_per_s": round(speed, 1)}
    except Exception as error:  # say why the ONNX figure is missing
        return {"onnx_images_per_s": None, "onnx_error": f"{type(error).__name__}: {error}"[:300]}
