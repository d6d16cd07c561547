"""Reproducibility of a training run: the environment it ran in, and ``--deterministic``.

Every ``cnnzoo train`` writes ``RUN/environment.json`` (:func:`collect_environment`): the
versions of Python, PyTorch, torchvision, Lightning, NumPy and cnnzoo, the OS, the CPU model,
the GPUs and CUDA/cuDNN versions (if any), the torch thread count, the precision, the seed, the
world size and whether deterministic algorithms were on. Two runs that disagree can be told
apart by what differs there.

``--deterministic`` (:func:`deterministic_mode`) turns on PyTorch's deterministic algorithms
(``torch.use_deterministic_algorithms(True)``, which Lightning's ``deterministic=True`` calls
too), cuDNN's deterministic convolutions with its benchmark autotuner off, and cuBLAS's fixed
workspace (``CUBLAS_WORKSPACE_CONFIG=:4096:8``). It is strict: an operation PyTorch has no
deterministic implementation of (on GPUs, e.g. some pooling and interpolation backward passes)
stops the run with one line naming the operation, rather than a run that calls itself
deterministic but is not. On CPU, the same seed already gives bit-identical runs without it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cnnzoo.errors import CnnzooError

if TYPE_CHECKING:
    from cnnzoo.families.base import TrainConfig

ENVIRONMENT_FILE = "environment.json"
"""The run directory's record of where and with what it was trained."""

CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_DETERMINISTIC = ":4096:8"
"""cuBLAS's deterministic workspace setting (NVIDIA: cuBLAS reproducibility)."""

PACKAGES = ("cnnzoo", "torch", "torchvision", "lightning", "numpy")

_NO_DETERMINISTIC = re.compile(r"(\S+) does not have a deterministic implementation")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """Return the CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform``
    knows), or ``"unknown"``."""
    cpuinfo = Path("/proc/cpuinfo")
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def collect_environment(
    cfg: TrainConfig, world_size: int = 1, device: str = "cpu"
) -> dict[str, Any]:
    """Describe the process a run is trained in.

    Args:
        cfg: the run's resolved configuration (precision, seed, deterministic).
        world_size: processes training together (devices x nodes; 1 without DDP).
        device: what the model runs on (``"cpu"``, ``"cuda"``, ``"mps"``).

    Returns:
        A JSON-ready mapping: ``python``, ``os``, ``cpu``, ``cpu_count``, ``packages`` (name
        -> version; torch's with its build tag, e.g. ``+cu130``), ``device``, ``cuda`` (the
        CUDA version PyTorch was built with; None for a CPU build), ``cuda_available``,
        ``cudnn`` (None without a GPU), ``gpus`` (names of the visible GPUs),
        ``torch_threads``, ``precision``, ``deterministic`` (asked for),
        ``deterministic_algorithms`` and ``cudnn_benchmark`` (as set),
        ``cublas_workspace_config``, ``seed``, ``world_size`` and ``recorded`` (UTC time).
    """
    cuda = torch.cuda.is_available()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "os": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "packages": {name: _version(name) for name in PACKAGES} | {"torch": torch.__version__},
        "device": device,
        "cuda": torch.version.cuda,
        "cuda_available": cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpus": gpus,
        "torch_threads": torch.get_num_threads(),
        "precision": cfg.precision,
        "deterministic": bool(cfg.deterministic),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cublas_workspace_config": os.environ.get(CUBLAS_WORKSPACE),
        "seed": cfg.seed,
        "world_size": world_size,
        "recorded": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def nondeterministic_op(err: BaseException) -> str | None:
    """Return the operation PyTorch names in ``err`` when it refused to run it because it has
    no deterministic implementation, else None."""
    if not isinstance(err, RuntimeError):
        return None
    match = _NO_DETERMINISTIC.search(str(err))
    return match.group(1) if match else None


@contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Run the block with deterministic algorithms (when ``enabled``) and give the process its
    previous settings back afterwards (these flags are process-wide).

    Sets ``torch.use_deterministic_algorithms(True)``, ``torch.backends.cudnn.deterministic``,
    ``torch.backends.cudnn.benchmark = False`` and ``CUBLAS_WORKSPACE_CONFIG`` (cuBLAS reads it
    when it first runs in a process: set it before any GPU work to be sure).

    Raises:
        CnnzooError: when the block runs an operation PyTorch has no deterministic
            implementation of: one line naming it.
    """
    if not enabled:
        yield
        return
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get(CUBLAS_WORKSPACE),
    )
    os.environ[CUBLAS_WORKSPACE] = CUBLAS_DETERMINISTIC
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    except RuntimeError as err:
        op = nondeterministic_op(err)
        if op is None:
            raise
        raise CnnzooError(
            f"--deterministic: {op} has no deterministic implementation in PyTorch "
            f"{torch.__version__} on this device; train without --deterministic (or on CPU, "
            "where the same seed gives the same run)"
        ) from None
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic = saved[2]
        torch.backends.cudnn.benchmark = saved[3]
        if saved[4] is None:
            os.environ.pop(CUBLAS_WORKSPACE, None)
        else:
            os.environ[CUBLAS_WORKSPACE] = saved[4]
