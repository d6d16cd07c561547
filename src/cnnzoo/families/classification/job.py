"""Classification runs: the :class:`~cnnzoo.families.base.Job` of ``cnnzoo train`` for a
classifier (data, model fitted to the data, optional fine-tuning plan, LightningModule)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback

from cnnzoo.data.datamodule import ClassificationData
from cnnzoo.errors import CnnzooError
from cnnzoo.families.assemble import fit_model_to_data
from cnnzoo.families.base import Job, TrainConfig
from cnnzoo.registry import create_model
from cnnzoo.tasks.classification import ClassificationTask
from cnnzoo.tasks.finetune import FineTunePlan, FineTuning, apply_plan
from cnnzoo.tasks.tta import check_shift


def tta_spec(cfg: TrainConfig) -> dict[str, Any]:
    """Return what a run's spec records of its test-time augmentation (nothing without it).

    Raises:
        CnnzooError: for ``--tta-shift`` out of range, or given without ``--tta``.
    """
    check_shift(cfg.tta_shift)
    if cfg.tta_shift and not cfg.tta:
        raise CnnzooError(
            f"--tta-shift {cfg.tta_shift} needs --tta: the shifted views are of the image "
            "and of its mirror image"
        )
    if not cfg.tta:
        return {}
    return {"tta": "hflip", **({"tta_shift": cfg.tta_shift} if cfg.tta_shift else {})}


def classification_job(cfg: TrainConfig) -> Job:
    """Data, model and LightningModule of a classification run.

    Raises:
        CnnzooError: for bad data or options that do not fit the model.
    """
    extra = tta_spec(cfg)
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
        crop_padding=cfg.crop_padding,
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
        tta=cfg.tta,
        tta_shift=cfg.tta_shift,
    )
    return Job(
        "classification", data, model, module, spec, model_args, resize_to,
        monitor="val/accuracy", columns=("loss", "accuracy"), callbacks=callbacks,
        trainable=trainable, spec_extra=extra,
    )  # fmt: skip
