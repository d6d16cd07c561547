"""``cnnzoo train``: a registered model on a dataset, with Lightning, into a run directory.

The loop, the checkpoints, the run directory and DDP are shared by every task; what differs
(data module, model fitting, LightningModule, metric to monitor, plots) comes from the model's
task family (:func:`cnnzoo.families.family_for`): its :meth:`~cnnzoo.families.base.Family.job`
and :meth:`~cnnzoo.families.base.Family.write_plots`.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from cnnzoo.data.datamodule import ClassificationData
from cnnzoo.documents import read_text
from cnnzoo.errors import CnnzooError, NonFiniteLossError
from cnnzoo.families import family_for
from cnnzoo.families.assemble import flush_denormals
from cnnzoo.families.base import Job, TrainConfig, TrainResult
from cnnzoo.families.registry import check_options
from cnnzoo.files import atomic_write_text
from cnnzoo.models.base import count_params
from cnnzoo.registry import model_info
from cnnzoo.rundir import RunDir
from cnnzoo.tasks.budget import TimeBudget
from cnnzoo.tasks.checkpointing import (
    AtomicCheckpointIO,
    PeriodicCheckpoint,
    ResumeState,
    elastic_start,
    parse_every,
)
from cnnzoo.tasks.classification import ClassificationTask
from cnnzoo.tasks.precision import resolve_precision
from cnnzoo.workflows.environment import ENVIRONMENT_FILE, collect_environment, deterministic_mode

EPOCH_COLUMNS = ("epoch", "step", "seconds", "lr")
log = logging.getLogger("cnnzoo")


class EpochTable(Callback):
    """Write ``metrics.csv``: one row per epoch, rewritten atomically after each epoch.

    ``seconds`` gives the training seconds of a row (default: since ``start``; a resumed run
    passes :meth:`ResumeState.seconds`, which counts on from the earlier run's time).
    """

    def __init__(
        self,
        path: Path,
        start: float,
        metrics: tuple[str, ...] = ("loss", "accuracy"),
        train_metrics: tuple[str, ...] | None = None,
        seconds: Callable[[], float] | None = None,
    ) -> None:
        self.path = path
        self.start = start
        self.seconds = seconds or (lambda: time.perf_counter() - self.start)
        train = metrics if train_metrics is None else train_metrics
        self.columns = (
            EPOCH_COLUMNS + tuple(f"train/{m}" for m in train) + tuple(f"val/{m}" for m in metrics)
        )
        self.rows: list[dict[str, Any]] = []
        if path.is_file():  # resumed run: keep the epochs already done
            text = read_text(path, "the run's epoch table")
            try:
                self.rows = [r for r in csv.DictReader(io.StringIO(text)) if _epoch(r) > 0]
            except csv.Error as err:
                raise CnnzooError(f"the run's epoch table {path} is damaged: {err}") from None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        row: dict[str, Any] = {
            "epoch": trainer.current_epoch + 1,
            "step": trainer.global_step,
            "seconds": round(self.seconds(), 2),
            "lr": trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else "",
        }
        for key in self.columns[len(EPOCH_COLUMNS) :]:
            value = m.get(f"{key}_epoch", m.get(key))
            row[key] = round(float(value), 6) if value is not None else ""
        self.rows = [r for r in self.rows if int(r["epoch"]) != row["epoch"]] + [row]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


def _epoch(row: dict[str, Any]) -> int:
    """The epoch number of a ``metrics.csv`` row; 0 for a row that has none (hand-edited)."""
    try:
        return int(row.get("epoch") or 0)
    except ValueError:
        return 0


def weight_average(decay: float) -> Callback:
    """An EMA of the weights (and BatchNorm statistics) on Lightning's weight averaging,
    updated every step with a decay that ramps up (:class:`cnnzoo.tasks.ema.EMA`); validation,
    test and the saved weights use the average.

    Raises:
        CnnzooError: for a decay outside (0, 1).
    """
    if not 0.0 < decay < 1.0:
        raise CnnzooError(f"--ema-decay {decay} is out of range: expected 0 < decay < 1 (0: off)")
    from cnnzoo.tasks.ema import EMA

    return EMA(decay)


SCHEDULE_OPTIONS = ("epochs", "time_minutes", "batch_size", "scheduler", "subset")
"""The options a learning-rate schedule and the data position are built from: a resumed run
must keep them (with a constant lr, ``--scheduler none``, it may go on for more epochs)."""


def same_schedule(cfg: TrainConfig, previous: dict[str, Any], run: Path) -> None:
    """Refuse to resume a run with other :data:`SCHEDULE_OPTIONS` than it was started with
    (``previous``: its ``config.yaml``); nothing recorded (an older run) passes.

    Raises:
        CnnzooError: naming the first option that differs, the two values and what to do.
    """
    constant = cfg.scheduler == "none" == previous.get("scheduler")
    for key in SCHEDULE_OPTIONS:
        if constant and key in ("epochs", "time_minutes"):
            continue
        if key in previous and previous[key] != getattr(cfg, key):
            flag = "--time" if key == "time_minutes" else "--" + key.replace("_", "-")
            raise CnnzooError(
                f"--resume: {run} was started with {flag} {previous[key]}, not "
                f"{getattr(cfg, key)}; its schedule and data position depend on it: resume "
                f"with {flag} {previous[key]}, or start a new run from it with --weights {run}"
            )


def _memory_format(
    cfg: TrainConfig, job: Job, *, auto: bool, previous: dict[str, Any]
) -> TrainConfig:
    """Return ``cfg`` with ``channels_last`` decided (it was left unset) and ``job``'s model
    and module switched to it: with ``--precision auto`` the faster format of a few timed
    steps (:func:`cnnzoo.tasks.memory_format.choose_channels_last`, recorded in the config's
    ``resolved.memory_format``), otherwise contiguous; a resumed run keeps its format."""
    module = job.module
    kept = isinstance(previous.get("channels_last"), bool)
    if not (auto or kept) or "channels_last" not in module.hparams:  # or a task without it
        return replace(cfg, channels_last=False)
    from cnnzoo.tasks.memory_format import MAX_BATCH, choose_channels_last

    size = job.resize_to or job.spec.image_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    device = torch.device("cuda" if _uses_gpu(cfg) else "cpu")
    batch = min(cfg.batch_size or 1, MAX_BATCH)
    example = torch.randn(batch, job.spec.in_channels, h, w, device=device)
    processes = cfg.num_nodes * (cfg.devices if isinstance(cfg.devices, int) else 1)
    processes = max(processes, int(os.environ.get("WORLD_SIZE", "1")))
    why_not = (
        "resumed: the format the run started with" if kept
        else "--deterministic" if cfg.deterministic
        else f"{processes} processes would each measure their own" if processes > 1
        else ""
    )  # fmt: skip
    choice = choose_channels_last(job.model, example, cfg.precision, measure=not why_not,
                                  why_not=why_not)  # fmt: skip
    on = previous["channels_last"] if kept else choice.channels_last
    if on:
        module.model = module.model.to(memory_format=torch.channels_last)
    module.hparams.channels_last = on
    job.notes["memory_format"] = {**choice.to_dict(), "channels_last": on}
    log.info("channels-last: %s (%s)", "on" if on else "off", choice.reason)
    return replace(cfg, channels_last=on)


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def _strategy(cfg: TrainConfig) -> str:
    multi = cfg.num_nodes > 1 or (isinstance(cfg.devices, int) and cfg.devices > 1)
    return "ddp" if multi else "auto"


def _uses_gpu(cfg: TrainConfig) -> bool:
    if cfg.accelerator in ("gpu", "cuda"):
        return True
    return cfg.accelerator == "auto" and torch.cuda.is_available()


def build_trainer(
    cfg: TrainConfig, run: RunDir, callbacks: list[Callback], monitor: str | None
) -> L.Trainer:
    """Return the Lightning Trainer for ``cfg`` writing into ``run``.

    ``monitor`` is the validation metric (higher is better) that picks ``best.ckpt``; None
    when there is no validation split. Besides the epoch-end checkpoints, ``last.ckpt`` is
    written every ``cfg.checkpoint_every`` (:class:`PeriodicCheckpoint`); every checkpoint
    is written atomically (:class:`AtomicCheckpointIO`).

    Raises:
        CnnzooError: for a ``cfg.checkpoint_every`` that is not understood.
    """
    every = parse_every(cfg.checkpoint_every)
    periodic = [PeriodicCheckpoint(run.last_checkpoint, every)] if every is not None else []
    ckpt = ModelCheckpoint(
        dirpath=run.checkpoints,
        filename="best",
        monitor=monitor,
        mode="max",
        save_last=True,
        enable_version_counter=False,
    )
    max_time = {"minutes": cfg.max_time_minutes} if cfg.max_time_minutes is not None else None
    return L.Trainer(
        default_root_dir=run.path,
        max_epochs=cfg.epochs,
        max_time=max_time,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=_strategy(cfg),
        # PyTorch's SyncBatchNorm is GPU-only: on CPU, DDP keeps per-process BN statistics.
        sync_batchnorm=_strategy(cfg) == "ddp" and _uses_gpu(cfg),
        precision=cfg.precision,
        deterministic=True if cfg.deterministic else None,  # None: leave torch's flags alone
        callbacks=[ckpt, *periodic, *callbacks],
        plugins=[AtomicCheckpointIO()],
        logger=[
            CSVLogger(run.logs, name="csv", version=""),
            TensorBoardLogger(run.logs, name="tensorboard", version=""),
        ],
        enable_progress_bar=cfg.progress,
        enable_model_summary=False,
        use_distributed_sampler=False,  # GlobalBatchSampler shards the batches itself
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if monitor else 0,
        log_every_n_steps=10,
    )


def train(cfg: TrainConfig, adapt: Callable[[Job], Job] | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` and fill the run directory ``cfg.out``.

    Options left unset (None) take the defaults of the model's task (:data:`TASK_DEFAULTS`).
    ``adapt`` may change the assembled job before training (``cnnzoo compress`` swaps in a
    pruned model or a distillation task this way).

    With ``cfg.seeds`` > 1, one run per seed goes into ``RUN/seed-S`` and the result is
    their mean (:func:`cnnzoo.workflows.seeds.train_seeds`); ``cfg.deterministic`` trains
    with deterministic algorithms (:func:`cnnzoo.workflows.environment.deterministic_mode`).
    Every run records its environment in ``RUN/environment.json``.

    Returns:
        The final metrics (``test/accuracy``, ``test/miou`` or ``test/map_50`` …), training
        seconds and the run directory.

    Raises:
        CnnzooError: for bad options or data, an existing run directory (without
            ``overwrite``/``resume``), a loss that became NaN (the message names the step
            and the last good checkpoint), or, with ``deterministic``, an operation PyTorch
            has no deterministic implementation of (named).
    """
    if cfg.seeds != 1:
        from cnnzoo.workflows.seeds import train_seeds

        return train_seeds(cfg, lambda one: train(one, adapt))
    with deterministic_mode(cfg.deterministic):
        return _train_once(cfg, adapt)


def _train_once(cfg: TrainConfig, adapt: Callable[[Job], Job] | None) -> TrainResult:
    """One training run of one seed (:func:`train` without ``seeds``)."""
    task = model_info(cfg.model).task
    family = family_for(task)
    cfg = family.apply_recipe(cfg).resolved(family.defaults_for(task))
    auto = cfg.precision == "auto"  # channels-last, left unset, is then chosen too
    cfg = replace(cfg, precision=resolve_precision(cfg.precision, cfg.accelerator))
    check_options(cfg, task)
    parse_every(cfg.checkpoint_every)  # a bad value stops here, before the run directory
    resume, overwrite = elastic_start(  # torchrun restarted the group: continue
        Path(cfg.out), RunDir(cfg.out).last_checkpoint, cfg.resume, cfg.overwrite
    )
    cfg = replace(cfg, resume=resume, overwrite=overwrite)
    budget = TimeBudget(cfg.time_minutes) if cfg.time_minutes is not None else None
    averaging = weight_average(cfg.ema_decay) if cfg.ema_decay else None
    if _rank() == 0:
        run = RunDir.create(cfg.out, overwrite=cfg.overwrite, resume=cfg.resume)
    else:
        run = RunDir(cfg.out)
        if cfg.resume:  # every rank refuses a damaged or unsafe last.ckpt in one line
            run.check_resume_checkpoint()
    previous = run.read_config() if cfg.resume else {}
    same_schedule(cfg, previous, run.path)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    flush_denormals()
    if cfg.accelerator == "cpu" and isinstance(cfg.devices, int) and cfg.devices > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.devices))

    try:
        job = family.job(cfg)
        if adapt is not None:
            job = adapt(job)
    except CnnzooError:
        if _rank() == 0 and not cfg.resume:
            run.discard_if_empty()  # bad data or options: leave no empty run behind
        raise
    if cfg.channels_last is None:
        cfg = _memory_format(cfg, job, auto=auto, previous=previous)
    has_val = job.data.has_split("val") and bool(job.monitor)
    start = time.perf_counter()
    state = ResumeState()  # seconds trained (on from an earlier run's), generators' state
    table = EpochTable(run.path / "metrics.csv", start, job.columns, job.train_columns,
                       seconds=state.seconds)  # fmt: skip
    extra = [c for c in (budget, averaging, state) if c is not None]
    trainer = build_trainer(
        cfg, run, [table, *job.callbacks, *extra],
        monitor=job.monitor if has_val else None,
    )  # fmt: skip
    if trainer.is_global_zero and job.trainable is not None:
        run.write_json("trainable.json", job.trainable.to_dict())
    if trainer.is_global_zero:
        resolved = {"model_kwargs": job.model_args, "resize_to": job.resize_to,
                    "data": job.spec.to_dict(), **job.notes}  # fmt: skip
        run.write_config({**asdict(cfg), "resolved": resolved})
        device = type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()
        run.write_json(ENVIRONMENT_FILE, collect_environment(cfg, trainer.world_size, device))
    # Lightning keeps each module's train/eval mode as it finds it; a model loaded from a
    # run (compress, fine-tune) comes in eval mode and would train with frozen BatchNorm
    # statistics and no dropout. Callbacks that freeze layers re-apply eval at each epoch.
    job.module.train()
    try:
        trainer.fit(
            job.module,
            datamodule=job.data,
            ckpt_path=str(run.last_checkpoint) if cfg.resume else None,
            weights_only=True if cfg.resume else None,
        )
    except NonFiniteLossError as err:
        last = run.last_checkpoint
        kept = f"last good checkpoint: {last}" if last.is_file() else "no checkpoint was saved yet"
        raise CnnzooError(f"training stopped: {err}; {kept}") from None
    seconds = state.seconds()
    if budget is not None and trainer.is_global_zero:
        run.write_json("budget.json", budget.summary(trainer))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if job.test and job.data.has_split("test"):
        test = trainer.test(job.module, datamodule=job.data, verbose=False)[0]
        metrics.update({k: float(v) for k, v in test.items()})
    result = TrainResult(
        run_dir=run.path,
        metrics=metrics,
        seconds=seconds,
        epochs=trainer.current_epoch,
        params=count_params(job.model),
        confusion=getattr(job.module, "last_confusion", None),
        class_names=job.spec.class_names,
        class_iou=getattr(job.module, "last_iou", None),
        steps=trainer.global_step,
    )
    if trainer.is_global_zero:
        write_outputs(run, cfg, result, job, table.rows)
    return result


def write_outputs(
    run: RunDir, cfg: TrainConfig, result: TrainResult, job: Job, rows: list[dict[str, Any]]
) -> None:
    """Write weights, spec, ``metrics.json`` and the plots of a finished run."""
    from cnnzoo.viz.curves import plot_training_curves

    extra: dict[str, Any] = {}
    if result.class_iou is not None:
        extra["class_iou"] = {
            name: None if torch.isnan(v) else round(float(v), 6)
            for name, v in zip(result.class_names, result.class_iou, strict=True)
        }
    class_ap = getattr(job.module, "last_class_ap", None)
    if class_ap is not None:
        extra["class_ap"] = {
            name: None if v != v else round(float(v), 6)
            for name, v in zip(result.class_names, class_ap, strict=True)
        }
    run.save_model(
        job.model,
        {
            "model": cfg.model,
            "task": job.task_name,
            "kwargs": job.model_args,
            "resize_to": job.resize_to,
            "data": job.spec.to_dict(),
            **job.spec_extra,
        },
    )
    run.write_json(
        "metrics.json",
        {
            "model": cfg.model,
            "task": job.task_name,
            "dataset": cfg.data,
            "epochs": result.epochs,
            "seconds": round(result.seconds, 2),
            "params": result.params,
            "metrics": result.metrics,
            **extra,
        },
    )
    if rows:
        plot_training_curves(
            rows, run.plots / "curves.png", title=f"{cfg.model} on {cfg.data}",
            metric=job.columns[1], first=job.columns[0],
        )  # fmt: skip
    family_for(job.task_name).write_plots(run, cfg, result, job)


def fit_and_test(
    task: ClassificationTask,
    data: ClassificationData,
    max_steps: int,
    precision: str = "32-true",
    callbacks: list[Callback] | None = None,
    accelerator: str = "auto",
) -> dict[str, float]:
    """Train ``task`` for ``max_steps`` optimisation steps and return its test metrics.

    A lean loop for experiments that run many small trainings: no run directory, no
    checkpoints, no logger, no progress bar. Tiny datasets simply repeat over many epochs.

    Returns:
        The test metrics, e.g. ``{"test/accuracy": ..., "test/loss": ...}``.
    """
    flush_denormals()
    trainer = L.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        accelerator=accelerator,
        devices=1,
        precision=precision,
        callbacks=callbacks or [],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(task, datamodule=data)
    return {k: float(v) for k, v in trainer.test(task, datamodule=data, verbose=False)[0].items()}
