"""``cnnzoo train``: a registered model on a dataset, with Lightning, into a run directory.

The loop, the checkpoints, the run directory and DDP are shared by every task; what differs
(data module, model fitting, LightningModule, metric to monitor, plots) is a :class:`Job`
built by the task's builder: :func:`classification_job` here,
:func:`cnnzoo.workflows.segmentation.segmentation_job` for segmentation and
:func:`cnnzoo.workflows.detection.detection_job` for detection.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from cnnzoo.data.datamodule import ClassificationData
from cnnzoo.errors import CnnzooError
from cnnzoo.files import atomic_write_text
from cnnzoo.models.base import count_params
from cnnzoo.registry import create_model, model_info
from cnnzoo.rundir import RunDir
from cnnzoo.tasks.classification import ClassificationTask, NonFiniteLossError
from cnnzoo.tasks.finetune import FineTunePlan, FineTuning, apply_plan
from cnnzoo.workflows.assemble import fit_model_to_data, flush_denormals

EPOCH_COLUMNS = ("epoch", "step", "seconds", "lr")
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "classification": {
        "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4, "aux_weight": 0.3,
    },
    "segmentation": {
        "batch_size": 16, "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4, "aux_weight": 0.4,
    },
    "detection": {
        "batch_size": 16, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 5e-4, "aux_weight": 0.0,
    },
    "reconstruction": {
        "batch_size": 128, "optimizer": "adam", "weight_decay": 0.0, "aux_weight": 0.0,
    },
    "generation": {"batch_size": 64, "optimizer": "adam", "weight_decay": 0.0, "aux_weight": 0.0},
    "translation": {"batch_size": 4, "optimizer": "adam", "weight_decay": 0.0, "aux_weight": 0.0},
}  # fmt: skip
"""Values of the options left unset (None), per task. The generative tasks' learning rate
is the model's: 1e-3 for autoencoders and VAEs, 2e-4 for GANs."""


@dataclass
class TrainConfig:
    """Everything ``cnnzoo train`` can be told; saved as the run's ``config.yaml``."""

    model: str
    data: str = "fashion-mnist"
    out: str = "runs/run"
    data_dir: str | None = None
    epochs: int = 10
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float | None = None
    scheduler: str = "onecycle"
    loss: str = "cross_entropy"
    label_smoothing: float = 0.0
    aux_weight: float | None = None
    augment: bool = True
    val_fraction: float = 0.1
    subset: int | None = None
    image_size: int | None = None
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    precision: str = "32-true"
    channels_last: bool = False
    max_time_minutes: float | None = None
    num_workers: int = 0
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    classes: list[int] | None = None
    per_class: int | None = None
    weights: str | None = None
    strategy: str | None = None
    unfreeze: int = 1
    backbone_lr_scale: float = 1.0
    unfreeze_every: int = 1
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    backbone: str | None = None
    backbone_weights: str | None = None
    input_size: list[int] | None = None
    dice_weight: float = 0.0
    class_weights: list[float] | None = None
    snapshots: int = 4
    images: str | None = None
    latent: int | None = None
    beta: float | None = None
    denoise: str | None = None
    decay_start: float = 1.0
    fid_samples: int = 2000

    def resolved(self, task: str) -> TrainConfig:
        """Return a copy with the options left unset filled with ``task``'s defaults."""
        defaults = TASK_DEFAULTS.get(task, TASK_DEFAULTS["classification"])
        unset = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return replace(self, **unset)


@dataclass
class Job:
    """What a task contributes to a training run."""

    task_name: str
    data: L.LightningDataModule
    model: torch.nn.Module
    module: L.LightningModule
    spec: Any  # DatasetSpec
    model_args: dict[str, Any]
    resize_to: Any
    monitor: str
    columns: tuple[str, ...]
    callbacks: list[Callback] = field(default_factory=list)
    train_columns: tuple[str, ...] | None = None  # metrics logged in training (None: columns)
    test: bool = True  # run the test loop after training
    trainable: Any = None
    notes: dict[str, Any] = field(default_factory=dict)
    spec_extra: dict[str, Any] = field(default_factory=dict)  # more of model.json (e.g. shapes)


@dataclass
class TrainResult:
    """What a finished training run reports (also in ``metrics.json``)."""

    run_dir: Path
    metrics: dict[str, float]
    seconds: float
    epochs: int
    params: int
    confusion: torch.Tensor | None = None
    class_names: list[str] = field(default_factory=list)
    class_iou: torch.Tensor | None = None
    steps: int = 0


class EpochTable(Callback):
    """Write ``metrics.csv``: one row per epoch, rewritten atomically after each epoch."""

    def __init__(
        self,
        path: Path,
        start: float,
        metrics: tuple[str, ...] = ("loss", "accuracy"),
        train_metrics: tuple[str, ...] | None = None,
    ) -> None:
        self.path = path
        self.start = start
        train = metrics if train_metrics is None else train_metrics
        self.columns = (
            EPOCH_COLUMNS + tuple(f"train/{m}" for m in train) + tuple(f"val/{m}" for m in metrics)
        )
        self.rows: list[dict[str, Any]] = []
        if path.is_file():  # resumed run: keep the epochs already done
            self.rows = list(csv.DictReader(path.open()))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        row: dict[str, Any] = {
            "epoch": trainer.current_epoch + 1,
            "step": trainer.global_step,
            "seconds": round(time.perf_counter() - self.start, 2),
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
    when there is no validation split.
    """
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
        callbacks=[ckpt, *callbacks],
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


def classification_job(cfg: TrainConfig) -> Job:
    """Data, model and LightningModule of a classification run.

    Raises:
        CnnzooError: for bad data, options that do not fit the model, or segmentation-only
            options.
    """
    for option in ("backbone", "backbone_weights", "input_size", "class_weights", "images"):
        if getattr(cfg, option) is not None:
            flag = "--" + option.replace("_", "-")
            raise CnnzooError(
                f"{flag} is a segmentation/detection option; {cfg.model} is a classifier"
            )
    data = ClassificationData(
        cfg.data,
        data_dir=cfg.data_dir,
        batch_size=cfg.batch_size,
        val_fraction=cfg.val_fraction,
        augment=cfg.augment,
        image_size=cfg.image_size,
        subset=cfg.subset,
        seed=cfg.seed,
        num_workers=cfg.num_workers,
        classes=cfg.classes,
        per_class=cfg.per_class,
    )
    spec = data.spec
    model_args, resize_to = fit_model_to_data(
        cfg.model,
        spec.in_channels,
        spec.num_classes,
        spec.image_size[0],
        cfg.model_kwargs,
        pretrained=cfg.weights is not None,
    )
    data.resize_to = resize_to
    model = create_model(cfg.model, weights=cfg.weights, **model_args)
    callbacks: list[Callback] = []
    trainable = None
    if cfg.strategy is not None:
        plan = FineTunePlan(cfg.strategy, cfg.unfreeze, cfg.backbone_lr_scale, cfg.unfreeze_every)
        trainable = apply_plan(model, plan)
        callbacks.append(FineTuning(plan, model))
    module = ClassificationTask(
        model,
        num_classes=spec.num_classes,
        loss=cfg.loss,
        label_smoothing=cfg.label_smoothing,
        aux_weight=cfg.aux_weight,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        scheduler=cfg.scheduler,
        channels_last=cfg.channels_last,
        backbone_lr_scale=cfg.backbone_lr_scale,
    )
    return Job(
        "classification", data, model, module, spec, model_args, resize_to,
        monitor="val/accuracy", columns=("loss", "accuracy"), callbacks=callbacks,
        trainable=trainable,
    )  # fmt: skip


def build_job(cfg: TrainConfig) -> Job:
    """Return the :class:`Job` of ``cfg.model``'s task (``cfg`` with its defaults resolved).

    Raises:
        CnnzooError: for an unknown model, a task ``cnnzoo train`` does not train yet, or
            bad data and options for the task.
    """
    task = model_info(cfg.model).task
    if task == "classification":
        return classification_job(cfg)
    if task == "segmentation":
        from cnnzoo.workflows.segmentation import segmentation_job

        return segmentation_job(cfg)
    if task == "detection":
        from cnnzoo.workflows.detection import detection_job

        return detection_job(cfg)
    from cnnzoo.workflows.generative import GENERATIVE_TASKS, generative_job

    if task in GENERATIVE_TASKS:
        return generative_job(cfg)
    raise CnnzooError(f"{cfg.model!r} is a {task} model; `cnnzoo train` cannot train those yet")


def train(cfg: TrainConfig, adapt: Callable[[Job], Job] | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` and fill the run directory ``cfg.out``.

    Options left unset (None) take the defaults of the model's task (:data:`TASK_DEFAULTS`).
    ``adapt`` may change the assembled job before training (``cnnzoo compress`` swaps in a
    pruned model or a distillation task this way).

    Returns:
        The final metrics (``test/accuracy``, ``test/miou`` or ``test/map_50`` …), training
        seconds and the run directory.

    Raises:
        CnnzooError: for bad options or data, an existing run directory (without
            ``overwrite``/``resume``), or a loss that became NaN (the message names the step
            and the last good checkpoint).
    """
    cfg = cfg.resolved(model_info(cfg.model).task)
    if _rank() == 0:
        run = RunDir.create(cfg.out, overwrite=cfg.overwrite, resume=cfg.resume)
    else:
        run = RunDir(cfg.out)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    flush_denormals()
    if cfg.accelerator == "cpu" and isinstance(cfg.devices, int) and cfg.devices > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.devices))

    try:
        job = build_job(cfg)
        if adapt is not None:
            job = adapt(job)
    except CnnzooError:
        if _rank() == 0 and not cfg.resume:
            run.discard_if_empty()  # bad data or options: leave no empty run behind
        raise
    has_val = job.data.has_split("val") and bool(job.monitor)
    start = time.perf_counter()
    table = EpochTable(run.path / "metrics.csv", start, job.columns, job.train_columns)
    trainer = build_trainer(
        cfg, run, [table, *job.callbacks], monitor=job.monitor if has_val else None
    )
    if trainer.is_global_zero and job.trainable is not None:
        run.write_json("trainable.json", job.trainable.to_dict())
    if trainer.is_global_zero:
        resolved = {"model_kwargs": job.model_args, "resize_to": job.resize_to,
                    "data": job.spec.to_dict(), **job.notes}  # fmt: skip
        run.write_config({**asdict(cfg), "resolved": resolved})
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
    seconds = time.perf_counter() - start
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
    if job.task_name == "segmentation":
        from cnnzoo.workflows.segmentation import write_segmentation_plots

        write_segmentation_plots(run, cfg, result, job)
    elif job.task_name == "detection":
        from cnnzoo.workflows.detection import write_detection_plots

        write_detection_plots(run, cfg, result, job)
    elif job.task_name in ("reconstruction", "generation", "translation"):
        from cnnzoo.workflows.generative import write_generative_plots

        write_generative_plots(run, cfg, result, job)
    elif result.confusion is not None:
        from cnnzoo.viz.confusion import plot_confusion_matrix

        plot_confusion_matrix(
            result.confusion, result.class_names, run.plots / "confusion.png",
            title=f"{cfg.model}: test confusion matrix",
        )  # fmt: skip


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
