"""Channels-last chosen for the hardware: with ``--precision auto`` and no ``--channels-last``
/ ``--no-channels-last``, a run times a few training steps of its own model in both memory
formats and keeps the faster one.

Channels-last (NHWC) activations speed convolutions up where the kernels are written for
them (oneDNN's bf16/AMX kernels, tensor cores), and can slow them down elsewhere: on the
2-core AVX2 AMD EPYC this project is developed on, the demo's ConvNet in fp32 takes about as
long per step either way. A rule of thumb would be wrong on some machine, so the run
measures. The choice and both timings are written to the run's ``config.yaml``
(``channels_last`` and ``resolved.memory_format``).

Where measuring would make the run depend on timing noise it is not done, and a fixed rule
decides (channels-last with mixed precision on a GPU and with bf16 on a CPU, contiguous
otherwise): several processes (each would measure its own and they could disagree),
``--deterministic``, and a resumed run (which keeps the format it started with).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

WARMUP_STEPS = 1
TIMED_ROUNDS = 3
MAX_BATCH = 32
"""The measurement's batch: the run's batch size, at most this many images."""
MARGIN = 0.97
"""Channels-last is chosen when its step takes less than this fraction of the NCHW step's."""


@dataclass(frozen=True)
class MemoryFormatChoice:
    """What ``--precision auto`` chose for the activations' memory format, and why."""

    channels_last: bool
    reason: str
    seconds: dict[str, float] | None = None  # per training step, each format (measured)

    def to_dict(self) -> dict[str, Any]:
        """Return the choice as ``config.yaml``'s ``resolved.memory_format``."""
        out: dict[str, Any] = {"channels_last": self.channels_last, "chosen_by": self.reason}
        if self.seconds is not None:
            out["seconds_per_step"] = {k: round(v, 5) for k, v in self.seconds.items()}
        return out


def _tensors(out: Any) -> Iterable[Tensor]:
    """The floating-point tensors anywhere in a model's output (tensors, tuples, lists,
    dicts, dataclass-like outputs)."""
    if isinstance(out, Tensor):
        if out.is_floating_point():
            yield out
    elif isinstance(out, dict):
        for v in out.values():
            yield from _tensors(v)
    elif isinstance(out, (list, tuple)):
        for v in out:
            yield from _tensors(v)
    elif hasattr(out, "__dict__"):
        for v in vars(out).values():
            yield from _tensors(v)


def _step(trial: nn.Module, x: Tensor, autocast_dtype: torch.dtype | None) -> float:
    """One timed forward-backward pass, in seconds."""
    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(x.device)
    start = time.perf_counter()
    with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = sum(t.float().mean() for t in _tensors(trial(x)))
    if isinstance(loss, Tensor) and loss.requires_grad:
        loss.backward()
    trial.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize(x.device)
    return time.perf_counter() - start


def format_seconds(
    model: nn.Module,
    example: Tensor,
    *,
    autocast_dtype: torch.dtype | None = None,
    rounds: int = TIMED_ROUNDS,
) -> dict[str, float]:
    """Return the seconds of one forward-backward pass of ``model`` on ``example`` in each
    memory format, ``{"contiguous": s, "channels_last": s}``: the fastest of ``rounds``
    passes, the two formats taking turns (so a machine that gets busier or quieter meanwhile
    slows both alike), after :data:`WARMUP_STEPS` untimed passes each. Copies of the model
    are timed; the model itself is left as it was (its BatchNorm statistics included).

    Args:
        model: the model to time (copied; the copies train on the example's device).
        example: a batch of inputs, NCHW.
        autocast_dtype: autocast to this dtype (bf16, fp16) as mixed precision does; None for
            full precision.
        rounds: timed passes per format.

    Raises:
        RuntimeError, TypeError, ValueError: whatever the model raises on the example.
    """
    device = example.device
    trials = {
        "contiguous": (copy.deepcopy(model).to(device).train(), example.contiguous()),
        "channels_last": (
            copy.deepcopy(model).to(device).train().to(memory_format=torch.channels_last),
            example.contiguous(memory_format=torch.channels_last),
        ),
    }
    best = dict.fromkeys(trials, float("inf"))
    for i in range(WARMUP_STEPS + rounds):
        for name, (trial, x) in trials.items():
            seconds = _step(trial, x, autocast_dtype)
            if i >= WARMUP_STEPS:
                best[name] = min(best[name], seconds)
    return best


def _autocast_dtype(precision: str) -> torch.dtype | None:
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return None


def rule_of_thumb(precision: str) -> bool:
    """Return the format chosen without measuring: channels-last with mixed precision (bf16
    on a CPU, bf16/fp16 on a GPU), contiguous in full precision."""
    return _autocast_dtype(precision) is not None


def choose_channels_last(
    model: nn.Module,
    example: Tensor,
    precision: str,
    *,
    measure: bool = True,
    why_not: str = "",
) -> MemoryFormatChoice:
    """Return whether to train ``model`` with channels-last activations: the faster format
    of a few timed training steps (:func:`format_seconds`) on ``example`` under ``precision``
    (Lightning's name: ``32-true``, ``bf16-mixed``, ``16-mixed``); channels-last must be at
    least 3 % faster to be chosen. Without ``measure`` (or when the model cannot be run on a
    random example), :func:`rule_of_thumb` decides and the reason says why.

    Args:
        model: the model the run trains.
        example: a random batch of the run's input shape, on the device it trains on.
        precision: the run's resolved precision.
        measure: time the two formats (False: the rule decides, ``why_not`` says why).
        why_not: the reason not to measure, for the record.
    """
    if not measure:
        return MemoryFormatChoice(rule_of_thumb(precision), f"rule ({why_not})")
    dtype = _autocast_dtype(precision)
    try:
        seconds = format_seconds(model, example, autocast_dtype=dtype)
    except (RuntimeError, TypeError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        why = f"rule (could not time the model on a random batch: {first[:120]})"
        return MemoryFormatChoice(rule_of_thumb(precision), why)
    faster = seconds["channels_last"] < MARGIN * seconds["contiguous"]
    shape = "x".join(str(s) for s in example.shape)
    return MemoryFormatChoice(faster, f"measured ({shape} batch, {precision})", seconds)
