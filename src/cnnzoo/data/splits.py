"""The loaders every cnnzoo data module shares: named splits served in global batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from cnnzoo.data.sampler import GlobalBatchSampler, ResumableLoader
from cnnzoo.errors import CnnzooError


class SplitDataModule(L.LightningDataModule):
    """A LightningDataModule over ``self.splits`` ("train", "val", "test" -> dataset).

    Subclasses fill ``splits`` and set ``data``, ``batch_size``, ``seed``, ``num_workers``;
    ``collate_fn`` batches their samples. Batches come from a :class:`GlobalBatchSampler`,
    so 1 or N DDP processes see the same global batches; the training loader is a
    :class:`ResumableLoader` (``--resume`` continues mid-epoch); ``eval_split`` is what
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
        loader = ResumableLoader if train else DataLoader  # training resumes mid-epoch
        return loader(
            dataset,
            batch_sampler=sampler,
            collate_fn=type(self).collate_fn,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader("train", train=True)
        assert isinstance(loader, ResumableLoader)
        resume = getattr(self, "_resume_train", None)
        if resume is not None:
            loader.load_state_dict(resume)
            self._resume_train = None
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict[str, Any]:
        """Return where the training loader is in its epoch (Lightning keeps it in every
        checkpoint): ``{"train_loader": {"epoch": ..., "batches": ...}}``, or ``{}`` before
        training."""
        loader = getattr(self, "_train_loader", None)
        return {"train_loader": loader.state_dict()} if loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Make the training loader continue where the checkpoint's stopped (a run resumed
        part-way through an epoch takes the next batch it would have taken).

        Lightning calls this before it asks for the loader. (It also restores a stateful
        loader itself, but not when ``configure_optimizers`` has asked for
        ``estimated_stepping_batches`` first, as cnnzoo's schedules do: Lightning issue
        #20550.)
        """
        self._resume_train = state_dict.get("train_loader")
        loader = getattr(self, "_train_loader", None)
        if loader is not None and self._resume_train is not None:  # loader made already
            loader.load_state_dict(self._resume_train)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        if self.eval_split not in self.splits:
            raise CnnzooError(f"dataset {self.data!r} has no {self.eval_split!r} split")
        return self._loader(self.eval_split, train=False)
