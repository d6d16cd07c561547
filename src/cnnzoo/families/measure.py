"""What every family's evaluation shares: serving a split exactly as the model was trained,
and running a LightningModule's test loop once, quietly."""

from __future__ import annotations

from typing import Any

import lightning as L

from cnnzoo.errors import CnnzooError


def match_training_data(dm: Any, data: str, split: str, trained_on: dict[str, Any]) -> list[str]:
    """Make a data module evaluate ``split`` exactly as the model was trained.

    Sets the split to serve and the training's normalisation (whatever the source).

    Returns:
        The class names.

    Raises:
        CnnzooError: for a split the dataset does not have, or another number of classes.
    """
    if not dm.has_split(split):
        raise CnnzooError(f"dataset {data!r} has no {split!r} split")
    names = dm.spec.class_names
    if len(names) != len(trained_on["class_names"]):
        raise CnnzooError(
            f"{data!r} has {len(names)} classes but the model was trained on "
            f"{len(trained_on['class_names'])} ({trained_on['name']})"
        )
    dm.spec.mean, dm.spec.std = tuple(trained_on["mean"]), tuple(trained_on["std"])
    dm.eval_split = split
    return names


def run_test(task: L.LightningModule, dm: L.LightningDataModule, accelerator: str) -> Any:
    """Run ``task``'s test loop once on one device, quietly.

    Returns:
        The logged metrics (``test/...``).
    """
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.test(task, datamodule=dm, verbose=False)
    return trainer.callback_metrics
