"""Segmentation runs: the :class:`~cnnzoo.families.base.Job` of ``cnnzoo train`` for
segmentation models, and the run's pictures."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.callbacks import Callback

from cnnzoo.data.seg_datamodule import PairView, SegmentationData, pad_collate
from cnnzoo.data.transforms import normalize_batch
from cnnzoo.errors import CnnzooError
from cnnzoo.families.backbones import backbone_model_args, load_backbone_weights
from cnnzoo.families.base import Job, TrainConfig, TrainResult
from cnnzoo.families.snapshots import ValidationSnapshots
from cnnzoo.registry import create_model, model_info
from cnnzoo.tasks.segmentation import SegmentationTask

if TYPE_CHECKING:
    from cnnzoo.rundir import RunDir

logger = logging.getLogger("cnnzoo")


@torch.no_grad()
def save_overlays(
    module: torch.nn.Module,
    data: SegmentationData,
    view: PairView,
    count: int,
    path: Path,
    class_names: list[str],
    title: str,
) -> Path:
    """Predict the first ``count`` items of ``view`` and save image | truth | prediction rows.

    Returns:
        The PNG written.
    """
    from cnnzoo.viz.segmentation import plot_overlays

    samples = [view[i] for i in range(min(count, len(view)))]
    images, masks = pad_collate(samples)
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    x = normalize_batch(images, data.spec.mean, data.spec.std).to(device)
    preds = module(x).argmax(1).cpu()
    module.train(was_training)
    crop = [tuple(image.shape[-2:]) for image, _ in samples]
    return plot_overlays(
        [images[i, :, :h, :w] for i, (h, w) in enumerate(crop)],
        [masks[i, :h, :w] for i, (h, w) in enumerate(crop)],
        [preds[i, :h, :w] for i, (h, w) in enumerate(crop)],
        class_names,
        path,
        title,
    )


def segmentation_job(cfg: TrainConfig) -> Job:
    """Data, model and LightningModule of a segmentation run.

    Raises:
        CnnzooError: for bad data or options.
    """
    data = SegmentationData(
        cfg.data,
        data_dir=cfg.data_dir,
        batch_size=cfg.batch_size,
        input_size=cfg.input_size,
        augment=cfg.augment,
        val_fraction=cfg.val_fraction,
        subset=cfg.subset,
        seed=cfg.seed,
        num_workers=cfg.num_workers,
    )
    spec = data.spec
    info = model_info(cfg.model)
    if min(spec.image_size) < info.min_input_size:
        raise CnnzooError(
            f"{cfg.model} needs inputs of at least {info.min_input_size}x{info.min_input_size}; "
            f"the data is {spec.image_size[0]}x{spec.image_size[1]}: pass --input-size"
        )
    if cfg.class_weights is not None and len(cfg.class_weights) != spec.num_classes:
        raise CnnzooError(
            f"--class-weights has {len(cfg.class_weights)} values for {spec.num_classes} "
            f"classes ({', '.join(spec.class_names)})"
        )
    model_args = backbone_model_args(cfg, spec.in_channels, spec.num_classes)
    model = create_model(cfg.model, **model_args)
    notes: dict[str, Any] = {}
    if cfg.backbone_weights is not None:
        notes["backbone_weights"] = load_backbone_weights(model, cfg.backbone_weights, cfg.backbone)
        logger.info("encoder weights: %s", notes["backbone_weights"])
    module = SegmentationTask(
        model,
        num_classes=spec.num_classes,
        class_weights=cfg.class_weights,
        dice_weight=cfg.dice_weight,
        aux_weight=cfg.aux_weight,  # type: ignore[arg-type]
        optimizer=cfg.optimizer,  # type: ignore[arg-type]
        lr=cfg.lr,  # type: ignore[arg-type]
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,  # type: ignore[arg-type]
        scheduler=cfg.scheduler,
        channels_last=cfg.channels_last,
    )
    callbacks: list[Callback] = []
    if cfg.snapshots > 0:
        from cnnzoo.rundir import RunDir

        folder = RunDir(cfg.out).plots / "overlays"
        callbacks.append(
            ValidationSnapshots(folder, cfg.snapshots, spec.class_names, cfg.model, save_overlays)
        )
    return Job(
        "segmentation", data, model, module, spec, model_args, data.input_size,
        monitor="val/miou", columns=("loss", "miou", "pixel_accuracy"), callbacks=callbacks,
        train_columns=("loss",),
        notes=notes,
    )  # fmt: skip


def write_segmentation_plots(run: RunDir, cfg: TrainConfig, result: TrainResult, job: Job) -> None:
    """Write ``plots/class_iou.png`` and ``plots/test_overlays.png`` of a finished run."""
    from cnnzoo.viz.bars import plot_class_bars

    if result.class_iou is not None:
        iou = torch.nan_to_num(result.class_iou, nan=0.0)
        plot_class_bars(iou, result.class_names, run.plots / "class_iou.png",
                       title=f"{cfg.model}: test IoU per class")  # fmt: skip
    data = job.data
    if isinstance(data, SegmentationData) and data.has_split("test") and cfg.snapshots > 0:
        save_overlays(job.model, data, data.splits["test"], cfg.snapshots,
                      run.plots / "test_overlays.png", result.class_names,
                      f"{cfg.model} on {cfg.data} (test)")  # fmt: skip
