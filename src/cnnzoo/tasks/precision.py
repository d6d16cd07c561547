"""``--precision auto``: bf16 autocast where the hardware runs it fast, fp32 elsewhere.

bf16 autocast pays on CPUs with bf16 instructions (AVX512-BF16, AMX); without them PyTorch
emulates the bf16 matrix products and a training step gets about ten times *slower* than in
fp32 (measured on a 2-core AVX2 AMD EPYC, U-Net on 96 px scenes, one thread: 15.4 vs 1.3 s
per step of 16 images). GPUs get bf16 where they support it, fp16 mixed precision otherwise.
"""

from __future__ import annotations

from pathlib import Path

import torch

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""``/proc/cpuinfo`` flags of a CPU whose bf16 matrix products are native."""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """Return the CPU's feature flags (``/proc/cpuinfo``'s ``flags``; empty where there is no
    such file, e.g. macOS).

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (read from the machine when None).
    """
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.is_file() else ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return flags


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """Return whether the CPU has native bf16 instructions (``BF16_CPU_FLAGS``).

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (read from the machine when None).
    """
    return bool(cpu_flags(cpuinfo) & set(BF16_CPU_FLAGS))


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """Return the Lightning precision to train with: ``precision`` itself, or for ``"auto"``
    ``"bf16-mixed"`` / ``"16-mixed"`` on a GPU (bf16 where supported) and on a CPU
    ``"bf16-mixed"`` with native bf16 instructions, ``"32-true"`` without."""
    if precision != "auto":
        return precision
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_fast_bf16() else "32-true"
