"""Checkpoints a run can be resumed from exactly: when they are taken, how they are written,
and what they carry besides Lightning's own state.

* :func:`parse_every` reads ``--checkpoint-every`` (``10m``, the default, ``30s``, ``2h``,
  ``500steps``, ``off``); :class:`PeriodicCheckpoint` writes ``checkpoints/last.ckpt`` that
  often during an epoch (the epoch-end checkpoints stay as they are), so a long epoch is not
  lost.
* :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file in the same folder
  and renames it (:func:`cnnzoo.files.atomic_writer`): a process killed while writing leaves
  the previous ``last.ckpt`` whole. (Lightning's own writer goes through the system's
  temporary folder; where that is another file system the final move is a copy, and a kill
  during the copy leaves half a file.)
* :class:`ResumeState` adds to each checkpoint every process's random number generators
  (torch, CUDA, NumPy, Python: augmentation and dropout continue with the draws they would
  have made), the seconds trained so far (``metrics.csv``/``metrics.json`` count on from
  the earlier run's time) and, part-way through an epoch, the epoch's running sums (its
  ``train/*`` averages). The data position is the training loader's own state
  (:class:`cnnzoo.data.sampler.ResumableLoader`, kept by the data module); the time budget
  keeps its own (:class:`cnnzoo.tasks.budget.TimeBudget`).
* :func:`elastic_start` makes a worker that ``torchrun --max-restarts N`` restarted continue
  from ``last.ckpt`` without being told ``--resume``.

Together with Lightning's loop, optimizer and scheduler state, a run killed at any point and
resumed with ``--resume`` on the same number of processes ends with the weights and metrics
an uninterrupted run ends with, bit for bit (tested with a SIGKILL part-way through an
epoch):

* with ``--ema-decay``: the average (and its update count) is in every checkpoint, the
  mid-epoch ones too (Lightning's ``WeightAveraging`` state; :class:`PeriodicCheckpoint`
  runs after it), and the resume continues it;
* with ``--num-workers N``: the workers seed each sample's draws from (seed, epoch, sample
  index) (:class:`cnnzoo.data.sampler.SeededSamples`), so fresh workers started part-way
  through an epoch draw what the killed run's would have; the number of workers does not
  change them either (with ``--num-workers 0`` the dataset draws from the training
  process's generators instead, so 0 and N workers give different runs).

On another number of processes (killed with 2, resumed with 1, say), the run continues at
the same global sample position: no sample of the epoch twice, none skipped, with the
weights, optimizer, schedule, weight average, time budget and seconds restored. Each
process's generators (dropout, batch augmentation) and its share of the epoch's running sums
have no process to go to: those draws start from ``--seed`` afresh and the interrupted
epoch's ``train/*`` averages cover the batches after the resume only; a warning says so in
one line (:func:`world_size_changed`). The workers' per-sample draws continue unchanged.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import Callback, Checkpoint
from torchmetrics import Metric

from cnnzoo.errors import CnnzooError
from cnnzoo.files import atomic_writer

_EVERY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h|steps?)", re.IGNORECASE)
_SECONDS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
FORMS = "a time (30s, 10m, 2h), a number of steps (500steps) or off"
_KEY = "cnnzoo"  # the checkpoint entry ResumeState writes
log = logging.getLogger("cnnzoo")
CLOCK_EVERY = 8
"""With several processes, a time-based :class:`PeriodicCheckpoint` looks at rank 0's clock
at every this many batches (each look is a broadcast to all processes)."""


@dataclass(frozen=True)
class Every:
    """How often :class:`PeriodicCheckpoint` writes: ``seconds`` of training or ``steps``
    optimisation steps (exactly one of the two is set)."""

    seconds: float | None = None
    steps: int | None = None

    def __str__(self) -> str:
        return f"{self.steps}steps" if self.steps is not None else f"{self.seconds:g}s"


def parse_every(text: str | None) -> Every | None:
    """Read a ``--checkpoint-every`` value.

    Args:
        text: ``30s``, ``10m``, ``2h`` (also ``sec``, ``min``), ``500steps`` (``1step``), or
            ``off``/``none``/``0``/None for no checkpoints during an epoch.

    Returns:
        The :class:`Every`, or None for no mid-epoch checkpoints.

    Raises:
        CnnzooError: for anything else (one line naming the value and the accepted forms).
    """
    if text is None or text.strip().lower() in ("off", "none", "0", "no"):
        return None
    match = _EVERY.fullmatch(text.strip())
    if match is not None:
        number, unit = float(match.group(1)), match.group(2).lower()
        if unit.startswith("step"):
            if number >= 1 and number.is_integer():
                return Every(steps=int(number))
        elif number > 0:
            return Every(seconds=number * _SECONDS[unit])
    raise CnnzooError(f"--checkpoint-every {text!r} is not understood: expected {FORMS}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoints, written atomically: to a temporary file next to
    the target, flushed to the disk, then renamed over it (:func:`cnnzoo.files.atomic_writer`);
    a full disk is one :class:`~cnnzoo.errors.CnnzooError` and leaves the previous file. The
    temporary files of a writer that was killed are removed by the next save. Remote paths
    (``s3://`` …) go through Lightning's writer unchanged."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically.

        Raises:
            TypeError: for ``storage_options`` (as Lightning's writer).
            CnnzooError: if the disk is full.
            OSError: any other failure to write.
        """
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        with atomic_writer(path) as f:
            torch.save(checkpoint, f)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed writer
            stale.unlink(missing_ok=True)


class PeriodicCheckpoint(Checkpoint):
    """Write ``path`` (the run's ``last.ckpt``) every ``every`` seconds or steps of training,
    in the middle of epochs too.

    Steps are optimisation steps (``trainer.global_step``); time is measured by rank 0 and
    broadcast (with several processes, at every :data:`CLOCK_EVERY`-th batch), so all
    processes save together. The last batch of an epoch is left to the
    epoch-end checkpoint (``ModelCheckpoint(save_last=True)``). It runs after the other
    callbacks of a batch (Lightning orders checkpoint callbacks last), so the checkpoint holds
    the batch's updates (weight averages included).
    """

    def __init__(
        self, path: Path, every: Every, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = Path(path)
        self.every = every
        self.clock = clock
        self._last_time = 0.0
        self._last_step = 0

    @property
    def state_key(self) -> str:
        """Return the key of this callback's entry in a checkpoint (names the interval)."""
        return f"PeriodicCheckpoint{{every={self.every}}}"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_time = self.clock()
        self._last_step = trainer.global_step

    def _due(self, trainer: L.Trainer, batch_idx: int) -> bool:
        if self.every.steps is not None:
            n = self.every.steps
            return trainer.global_step // n > self._last_step // n
        assert self.every.seconds is not None
        if trainer.world_size > 1 and batch_idx % CLOCK_EVERY:
            return False  # the broadcast is a collective: not at every batch
        due = self.clock() - self._last_time >= self.every.seconds
        return bool(trainer.strategy.broadcast(due, src=0))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        if trainer.sanity_checking or trainer.fast_dev_run or not self._due(trainer, batch_idx):
            return
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            trainer.save_checkpoint(self.path, weights_only=False)  # a full checkpoint
        # else the epoch's own checkpoint follows (resuming from one taken here would skip
        # the epoch's validation and end-of-epoch work)
        self._last_time = self.clock()
        self._last_step = trainer.global_step


def _rng_state() -> dict[str, Any]:
    """This process's generators, as plain values and tensors (``torch.load(weights_only=True)``
    reads them back)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    words = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [str(kind), words, int(pos), int(has_gauss), float(gauss)],
        "python": [int(version), list(py_state), py_gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def all_processes(trainer: L.Trainer, obj: Any) -> list[Any]:
    """Return every process's ``obj``, in rank order (``[obj]`` for one process).

    A collective: every process must call it, as they all do while Lightning dumps a
    checkpoint (``on_save_checkpoint`` hooks)."""
    dist = torch.distributed
    if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def _mid_epoch(trainer: L.Trainer) -> bool:
    """Whether the training loader stands part-way through an epoch."""
    loader = trainer.train_dataloader
    served = getattr(loader, "served", None)
    return served is not None and 0 < served < len(loader)  # type: ignore[arg-type]


def _epoch_sums(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any] | None:
    """This process's running sums of the epoch so far: the values logged ``on_epoch``
    (``train/loss``) and the states of the module's metrics (``train/accuracy``); None where
    Lightning keeps them elsewhere than 2.x does (they are a nicety: the weights do not
    depend on them)."""
    results = getattr(trainer.fit_loop.epoch_loop, "_results", None)
    if not isinstance(results, dict):
        return None
    logged = {}
    for key, result in results.items():
        if result.is_tensor and result.meta.on_epoch:
            count = getattr(result, "cumulated_batch_size", None)
            logged[key] = [result.value.detach().cpu(), None if count is None else count.cpu()]
    metrics = {}
    for name, metric in pl_module.named_modules():
        if isinstance(metric, Metric) and metric.update_count:
            state = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else [t.cpu() for t in v]
                     for k, v in metric.metric_state.items()}  # fmt: skip
            metrics[name] = {"state": state, "count": metric.update_count}
    return {"logged": logged, "metrics": metrics}


def _restore_metrics(pl_module: L.LightningModule, metrics: dict[str, Any]) -> None:
    modules = dict(pl_module.named_modules())
    for name, saved in metrics.items():
        metric = modules.get(name)
        if not isinstance(metric, Metric):
            continue
        device = metric.device
        for key, value in saved["state"].items():
            moved = (
                value.to(device)
                if isinstance(value, torch.Tensor)
                else [t.to(device) for t in value]
            )
            setattr(metric, key, moved)
        metric._update_count = int(saved["count"])
        metric._computed = None


def _add_logged(trainer: L.Trainer, logged: dict[str, Any]) -> None:
    results = trainer.fit_loop.epoch_loop._results
    for key, (value, count) in logged.items():
        result = results.get(key)
        if result is None or not result.is_tensor:
            continue
        value = value.to(result.value.device)
        if result.meta.is_max_reduction or result.meta.is_min_reduction:
            result.value = result.meta.reduce_fx(result.value, value)
        else:  # mean (a sum, and a count) or sum
            result.value = result.value + value
            if count is not None and result.meta.is_mean_reduction:
                result.cumulated_batch_size = result.cumulated_batch_size + count.to(value.device)


def world_size_changed(saved: int, trainer: L.Trainer, checkpoint: dict[str, Any]) -> str:
    """Return the one line a resume logs (a warning of the ``cnnzoo`` logger, rank 0) when
    the checkpoint was written by ``saved`` processes and ``trainer`` has another number:
    what continues, what is new.

    The data position is in global batches (:class:`~cnnzoo.data.sampler.GlobalBatchSampler`),
    the same on any number of processes: the resumed run reads the rest of the epoch's
    permutation, no sample twice and none skipped. The weights, optimizer, schedule, weight
    average and time budget are the same on every process, and are restored. Each process's
    random generators (dropout, batch augmentation in the training process) and its share of
    the epoch's running sums belong to one process, which the new run does not have: those
    draws come from ``--seed`` afresh and the interrupted epoch's ``train/*`` averages cover
    the batches after the resume only. (Worker processes' draws are per sample, and go on.)
    """
    data = getattr(trainer, "datamodule", None)
    state = checkpoint.get(type(data).__qualname__) if data is not None else None
    loader = state.get("train_loader") if isinstance(state, dict) else None
    where = ""
    if isinstance(loader, dict) and "epoch" in loader and "batches" in loader:
        size = getattr(data, "batch_size", None)
        done = loader["batches"]
        samples = f" = {done * size} samples" if isinstance(size, int) else ""
        where = f" (epoch {loader['epoch'] + 1}, after {done} global batches{samples})"
    return (
        f"resuming a checkpoint written by {saved} processes with {trainer.world_size}: "
        f"training continues at the same global sample position{where} with the weights, "
        "optimizer, schedule and weight average restored; per-process random generators "
        "cannot be mapped to another number of processes, so dropout and batch augmentation "
        "draw afresh from --seed, and this epoch's train/* averages cover only the batches "
        "after the resume"
    )


class ResumeState(Callback):
    """Carry through a checkpoint what an exact resume needs besides Lightning's own state:
    every process's random number generators, the seconds trained so far, and, for a
    checkpoint taken part-way through an epoch, the epoch's running sums (the ``train/*``
    averages of ``metrics.csv`` then cover the whole epoch, as without the interruption).

    Attributes:
        previous: seconds trained before this process started (from the checkpoint).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.previous = 0.0
        self._start = clock()
        self._rng: dict[str, Any] | None = None
        self._sums: dict[str, Any] | None = None

    def seconds(self) -> float:
        """Return the seconds trained: the earlier runs' and this one's."""
        return self.previous + self.clock() - self._start

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # every process saves (Lightning dumps the checkpoint on all, rank 0 writes it)
        sums = _epoch_sums(trainer, pl_module) if _mid_epoch(trainer) else None
        states = all_processes(trainer, (_rng_state(), sums))
        checkpoint[_KEY] = {
            "seconds": round(self.seconds(), 3),
            "rng": [rng for rng, _ in states],
            "epoch_sums": [sums for _, sums in states],
        }

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        saved = checkpoint.get(_KEY)
        if not saved:  # a checkpoint written before cnnzoo kept this
            return
        self.previous = float(saved.get("seconds", 0.0))
        states = saved.get("rng") or []
        if len(states) == trainer.world_size:
            self._rng = states[trainer.global_rank]
            self._sums = (saved.get("epoch_sums") or [None] * len(states))[trainer.global_rank]
        elif trainer.global_rank == 0:
            log.warning(world_size_changed(len(states), trainer, checkpoint))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # here, after the loaders are set up and before the first batch is drawn: where the
        # uninterrupted run's generators were when the checkpoint was taken
        if self._rng is not None:
            _set_rng_state(self._rng)
            self._rng = None
        if self._sums is not None:
            _restore_metrics(pl_module, self._sums["metrics"])

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        # the first batch after a mid-epoch resume has made the epoch's logged entries: add
        # what the batches before the interruption had summed
        if self._sums is not None:
            _add_logged(trainer, self._sums["logged"])
            self._sums = None


RESTART_COUNT = "TORCHELASTIC_RESTART_COUNT"
SHARED_STORE = (
    "torchrun restarts with the rendezvous store shared with the workers (PyTorch's default) "
    "can fail: a restarted worker may read the killed workers' addresses and never connect "
    "(pytorch/pytorch#135712); launch with --rdzv-backend c10d and "
    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"
)
"""cnnzoo's warning for a ``torchrun --max-restarts N`` launch that shares its store."""


def elastic_restart() -> int:
    """Return how many times ``torchrun`` has restarted this worker group (0: first start, or
    not under ``torchrun``)."""
    try:
        return int(os.environ.get(RESTART_COUNT, "0"))
    except ValueError:
        return 0


def _nothing_trained(run: Path) -> bool:
    trained = ("*.ckpt", "model.safetensors", "metrics.json")
    return run.is_dir() and not any(next(run.rglob(p), None) for p in trained)


def elastic_start(
    run: Path, last_checkpoint: Path, resume: bool, overwrite: bool
) -> tuple[bool, bool]:
    """Decide how a run under ``torchrun --max-restarts N`` starts.

    A group that ``torchrun`` restarted (``TORCHELASTIC_RESTART_COUNT`` > 0) continues from
    ``last_checkpoint`` when the killed group left one (as ``--resume`` would), and starts
    the run directory ``run`` again when it holds nothing trained yet (no checkpoint, no
    weights, no final metrics). Every worker decides alike: nothing writes a checkpoint
    before training starts. On the first start, rank 0 warns (:data:`SHARED_STORE`) when
    restarts are allowed and the workers share ``torchrun``'s store.

    Returns:
        The ``(resume, overwrite)`` to train with (the ones given, outside a restart).
    """
    restart = elastic_restart()
    rank0 = os.environ.get("RANK", "0") == "0"
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    restarts = os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")
    if rank0 and restart == 0 and shared and restarts.isdigit() and int(restarts) > 0:
        log.warning(SHARED_STORE)
    if resume or restart == 0:
        return resume, overwrite
    if last_checkpoint.is_file():
        if rank0:
            log.info(f"torchrun restart {restart}: resuming from {last_checkpoint}")
        return True, overwrite
    if _nothing_trained(run):
        if rank0:
            log.info(f"torchrun restart {restart}: nothing was saved yet, starting {run} again")
        return False, True
    return resume, overwrite
