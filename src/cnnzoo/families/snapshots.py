"""Pictures of a run in progress: the first validation images drawn after every validation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

SaveFn = Callable[[L.LightningModule, Any, Any, int, Path, list[str], str], Path]
"""``save(module, data, view, count, path, class_names, title) -> path`` draws ``count``
items of ``view`` with the module's predictions."""


class ValidationSnapshots(Callback):
    """After each validation, draw the first ``count`` validation images with ``save``:
    ``folder/epoch_NNN.png`` (segmentation overlays, detection boxes)."""

    def __init__(
        self, folder: Path, count: int, class_names: list[str], title: str, save: SaveFn
    ) -> None:
        self.folder = folder
        self.count = count
        self.class_names = class_names
        self.title = title
        self.save = save

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking or self.count <= 0:
            return
        data = trainer.datamodule  # type: ignore[attr-defined]
        if not hasattr(data, "splits") or not data.has_split("val"):
            return
        epoch = trainer.current_epoch + 1
        self.save(pl_module, data, data.splits["val"], self.count,
                  self.folder / f"epoch_{epoch:03d}.png", self.class_names,
                  f"{self.title}, epoch {epoch}")  # fmt: skip
