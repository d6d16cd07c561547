"""Running exported models with ONNX Runtime on the CPU, and timing them.

Sessions are set up for reproducible benchmarks: a fixed number of intra-op threads, one
inter-op thread with sequential execution, and every graph optimisation (ORT fuses the
``DequantizeLinear -> Conv -> QuantizeLinear`` patterns of a QDQ model into integer kernels).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cnnzoo.errors import CnnzooError


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def ort_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """Open an ONNX model for CPU inference.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: the CPUs this process may use).

    Returns:
        An ``onnxruntime.InferenceSession`` on the CPU execution provider.

    Raises:
        CnnzooError: if the file is missing or is not a model ONNX Runtime can load, or
            ``threads`` is not positive.
    """
    path = Path(path)
    if not path.is_file():
        raise CnnzooError(f"{path} does not exist: expected an .onnx file")
    if threads is not None and threads < 1:
        raise CnnzooError(f"threads={threads} is invalid: expected 1 or more")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or _cpu_count()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CnnzooError(f"onnxruntime cannot load {path}: {first}") from None


def ort_logits(session: ort.InferenceSession, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run the model's single input on ``x`` in batches of ``batch_size``.

    Args:
        session: from :func:`ort_session`.
        x: float images ``(N, C, H, W)``, already preprocessed.
        batch_size: images per ``session.run`` call.

    Returns:
        float32 logits ``(N, num_classes)``.

    Raises:
        CnnzooError: if ``x`` is not 4-D, ``batch_size`` is not positive, or the model
            rejects the input (e.g. a wrong channel count or size).
    """
    return ort_outputs(session, x, batch_size)[0]


def ort_outputs(
    session: ort.InferenceSession, x: np.ndarray, batch_size: int = 256
) -> list[np.ndarray]:
    """Run ``x`` in batches and return every output of the graph, each concatenated over
    the batches (a detector's boxes and scores; a classifier's or segmenter's logits).

    Raises:
        CnnzooError: if ``x`` is not 4-D, ``batch_size`` is not positive, or the model
            rejects the input (e.g. a wrong channel count or size).
    """
    x = np.ascontiguousarray(np.asarray(x), dtype=np.float32)
    if x.ndim != 4:
        raise CnnzooError(f"expected images (N, C, H, W), got shape {x.shape}")
    if batch_size < 1:
        raise CnnzooError(f"batch size {batch_size} is invalid: expected 1 or more")
    name = session.get_inputs()[0].name
    chunks: list[list[np.ndarray]] = []
    try:
        for start in range(0, len(x), batch_size):
            chunks.append(session.run(None, {name: x[start : start + batch_size]}))
    except Exception as err:
        expected = session.get_inputs()[0].shape
        first = str(err).strip().splitlines()[0]
        raise CnnzooError(
            f"the ONNX model expects input {expected}, got {x.shape[1:]} per image: {first}"
        ) from None
    if not chunks:  # no images: empty outputs of the graph's shapes
        return [
            np.zeros((0, *(d if isinstance(d, int) else 0 for d in o.shape[1:])), np.float32)
            for o in session.get_outputs()
        ]
    outputs = zip(*chunks, strict=True)
    return [np.concatenate(parts).astype(np.float32, copy=False) for parts in outputs]


def median_latency_ms(
    fn: Callable[[], object],
    repeats: int = 20,
    warmup: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Time ``fn()``: ``warmup`` untimed calls, then the median of ``repeats`` timed calls.

    The median, not the mean, so a call slowed by another process on a shared CPU does not
    drag the figure. ``clock`` is wall-clock time by default; ``time.process_time`` counts
    only the CPU time of this process, which, for one-thread inference on a CPU shared with
    other jobs, leaves out the time spent waiting for the core.

    Returns:
        The median wall-clock time of one call, in milliseconds.

    Raises:
        CnnzooError: if ``repeats`` < 1 or ``warmup`` < 0.
    """
    if repeats < 1 or warmup < 0:
        raise CnnzooError(
            f"repeats={repeats}, warmup={warmup} are invalid: expected repeats >= 1, warmup >= 0"
        )
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times) * 1000.0
