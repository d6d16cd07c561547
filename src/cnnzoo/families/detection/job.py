"""Detection runs: the :class:`~cnnzoo.families.base.Job` of ``cnnzoo train`` for
detection models, and the run's pictures (boxes drawn on validation and test images,
AP per class)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.callbacks import Callback

from cnnzoo.data.det_augment import MosaicAugment
from cnnzoo.data.det_datamodule import DetectionData, DetView, training_box_sizes
from cnnzoo.data.det_sources import parse_det_data
from cnnzoo.data.detection import detection_collate
from cnnzoo.data.transforms import normalize_batch
from cnnzoo.errors import CnnzooError
from cnnzoo.families.backbones import backbone_model_args, load_backbone_weights
from cnnzoo.families.base import Job, TrainConfig, TrainResult
from cnnzoo.families.detection.recipe import check_det_augment
from cnnzoo.families.snapshots import ValidationSnapshots
from cnnzoo.registry import create_model, model_info
from cnnzoo.tasks.detection import DetectionTask

if TYPE_CHECKING:
    from cnnzoo.rundir import RunDir

logger = logging.getLogger("cnnzoo")


@torch.no_grad()
def save_detections(
    module: DetectionTask,
    data: DetectionData,
    view: DetView,
    count: int,
    path: Path,
    class_names: list[str],
    title: str,
    min_score: float = 0.3,
) -> Path:
    """Detect on the first ``count`` items of ``view``; save truth | prediction rows.

    Only detections scoring at least ``min_score`` are drawn.

    Returns:
        The PNG written.
    """
    from cnnzoo.viz.detection import plot_detections

    samples = [view[i] for i in range(min(count, len(view)))]
    images, targets = detection_collate(samples)
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    x = normalize_batch(images, data.spec.mean, data.spec.std).to(device)
    preds = module.predict(x)
    module.train(was_training)
    kept = []
    for p in preds:
        keep = p["scores"] >= min_score
        kept.append({k: v[keep].cpu() for k, v in p.items()})
    crops = [tuple(image.shape[-2:]) for image, _ in samples]
    return plot_detections(
        [images[i, :, :h, :w] for i, (h, w) in enumerate(crops)],
        targets,
        kept,
        class_names,
        path,
        title,
    )


def detection_job(cfg: TrainConfig) -> Job:
    """Data, model and LightningModule of a detection run.

    Raises:
        CnnzooError: for bad data or options.
    """
    if cfg.images is not None and parse_det_data(cfg.data)[0] != "coco":
        raise CnnzooError(f"--images is for coco:ANN.json data; {cfg.data!r} says where its are")
    det_augment = cfg.det_augment or "flip"
    check_det_augment(det_augment)
    strong = det_augment == "mosaic" and cfg.augment
    data = DetectionData(
        cfg.data,
        data_dir=cfg.data_dir,
        batch_size=cfg.batch_size,  # type: ignore[arg-type]
        input_size=cfg.input_size,
        augment=cfg.augment,
        val_fraction=cfg.val_fraction,
        subset=cfg.subset,
        seed=cfg.seed,
        num_workers=cfg.num_workers,
        images_dir=cfg.images,
        batch_augment=MosaicAugment() if strong else None,
    )
    spec = data.spec
    info = model_info(cfg.model)
    if min(spec.image_size) < info.min_input_size:
        raise CnnzooError(
            f"{cfg.model} needs inputs of at least {info.min_input_size}x{info.min_input_size}; "
            f"the data is {spec.image_size[0]}x{spec.image_size[1]}: pass --input-size"
        )
    model_args = backbone_model_args(cfg, spec.in_channels, spec.num_classes)
    model = create_model(cfg.model, **model_args)
    notes: dict[str, Any] = {}
    if cfg.autoanchor and hasattr(model, "fit_priors"):
        model, notes["autoanchor"] = _autoanchor(cfg, data, model, model_args)
    report = getattr(data.splits["train"].base, "report", None)
    if report is not None and (report.clipped or report.dropped):
        notes["train_boxes"] = str(report)
        logger.warning("training annotations: %s", report)
    if cfg.backbone_weights is not None:
        notes["backbone_weights"] = load_backbone_weights(model, cfg.backbone_weights, cfg.backbone)
        logger.info("backbone weights: %s", notes["backbone_weights"])
    module = DetectionTask(
        model,
        num_classes=spec.num_classes,
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

        folder = RunDir(cfg.out).plots / "detections"
        callbacks.append(
            ValidationSnapshots(folder, cfg.snapshots, spec.class_names, cfg.model, save_detections)
        )
    return Job(
        "detection", data, model, module, spec, model_args, data.input_size,
        monitor="val/map", columns=("loss", "map", "map_50"), callbacks=callbacks, notes=notes,
        train_columns=("loss",),
    )  # fmt: skip


def _autoanchor(
    cfg: TrainConfig, data: DetectionData, model: torch.nn.Module, model_args: dict[str, Any]
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Fit the model's priors to the training boxes (AutoAnchor) unless ``--model-arg``
    already sets them; rebuild the model when they change (``model_args`` is updated, so the
    run's ``model.json`` records them).

    Returns:
        The model to train and the record for the run's config.
    """
    fit = model.fit_priors(training_box_sizes(data), tuple(data.spec.image_size))  # type: ignore[operator]
    given = sorted(set(fit.options) & set(cfg.model_kwargs))
    if given:
        logger.info("autoanchor: priors given with --model-arg %s, not fitted", ", ".join(given))
        record = fit.to_dict()  # the priors given are those measured "before"
        record.update(fitted=False, kwargs={}, given=given, bpr=record["before_bpr"],
                      mean_iou=record["before_mean_iou"])  # fmt: skip
        return model, record
    if fit.fitted:
        model_args.update(fit.kwargs)
        model = create_model(cfg.model, **model_args)
        logger.info("autoanchor: priors fitted to the training boxes (BPR %.3f -> %.3f, "
                    "mean IoU %.3f -> %.3f): %s", fit.before_bpr, fit.bpr, fit.before_mean_iou,
                    fit.mean_iou, fit.kwargs)  # fmt: skip
    else:
        logger.info("autoanchor: priors kept (BPR %.3f, mean IoU %.3f)", fit.bpr, fit.mean_iou)
    return model, fit.to_dict()


def write_detection_plots(run: RunDir, cfg: TrainConfig, result: TrainResult, job: Job) -> None:
    """Write ``plots/class_ap.png`` and ``plots/test_detections.png`` of a finished run."""
    from cnnzoo.viz.bars import plot_class_bars

    module = job.module
    assert isinstance(module, DetectionTask)
    if module.last_class_ap is not None:
        plot_class_bars(module.last_class_ap, result.class_names, run.plots / "class_ap.png",
                        title=f"{cfg.model}: test AP@[.5:.95] per class", xlabel="AP")  # fmt: skip
    data = job.data
    if isinstance(data, DetectionData) and data.has_split("test") and cfg.snapshots > 0:
        save_detections(module, data, data.splits["test"], cfg.snapshots,
                        run.plots / "test_detections.png", result.class_names,
                        f"{cfg.model} on {cfg.data} (test)")  # fmt: skip
