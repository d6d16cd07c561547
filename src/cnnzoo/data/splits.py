"""The loaders every cnnzoo data module shares: named splits served in global batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from cnnzoo.data.sampler import GlobalBatchSampler
from cnnzoo.errors import CnnzooError


class SplitDataModule(L.LightningDataModule):
    """A LightningDataModule over ``self.splits`` ("train", "val", "test" -> dataset).

    Subclasses fill ``splits`` and set ``data``, ``batch_size``, ``seed``, ``num_workers``;
    ``collate_fn`` batches their samples. Batches come from a :class:`GlobalBatchSampler`,
    so 1 or N DDP processes see the same global batches; ``eval_split`` is what
    ``test_dataloader`` serves (``cnnzoo eval --split``).
    """

    collate_fn: Callable[[Any], Any]
    data: str
    batch_size: int
    seed: int
    num_workers: int
    splits: dict[str, Dataset]
    eval_split: str = "test"

    def has_split(self, split: str) -> bool:
        """Return whether the dataset has ``split`` ("train", "val" or "test")."""
        return split in self.splits

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.splits[split]
        trainer = getattr(self, "trainer", None)
        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        sampler = GlobalBatchSampler(
            len(dataset), self.batch_size, shuffle=train, seed=self.seed, rank=rank,
            world_size=world,
        )  # fmt: skip
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=type(self).collate_fn,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        if self.eval_split not in self.splits:
            raise CnnzooError(f"dataset {self.data!r} has no {self.eval_split!r} split")
        return self._loader(self.eval_split, train=False)
