"""Shuffled mini-batches that mean the same thing on 1 process or N.

Each epoch draws one global permutation (seeded by seed + epoch); global batch k is the same
slice of it whatever the world size, and rank r takes every world-size-th sample of it. With
synchronised BN and averaged gradients, DDP over N processes then computes exactly the step
one process computes on the whole global batch.

:class:`ResumableLoader` serves them and remembers where it is in the epoch, so a run that was
stopped part-way through an epoch continues with the next batch it would have taken (its
``state_dict`` goes into every checkpoint).

In worker processes (``--num-workers N``), the random draws of the dataset's own transforms
(segmentation's rescale, crop and flip, ...) are seeded sample by sample from (seed, epoch,
sample index) (:class:`SeededSamples`): a sample's draws then do not depend on which worker
reads it, on what that worker read before, or on the number of processes, so a run resumed
part-way through an epoch, with fresh workers, draws what the uninterrupted run drew.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

_MASK = 2**64 - 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Return the seed of sample ``index``'s random draws in ``epoch`` of a run seeded ``seed``:
    a SplitMix64 hash of the three, in [0, 2**63) (nearby inputs give unrelated seeds)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xD1B54A32D192ED03 + index) & _MASK
    for shift, mul in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x = ((x ^ (x >> shift)) * mul) & _MASK
    return (x ^ (x >> 31)) >> 1


class SeededBatch(list[int]):
    """One rank's share of a global batch (a list of sample indices), with the sampler's
    ``seed`` and ``epoch``: what a worker process needs to seed each sample's draws."""

    seed: int
    epoch: int

    def __init__(self, indices: Sequence[int], seed: int, epoch: int) -> None:
        super().__init__(indices)
        self.seed = seed
        self.epoch = epoch


class SeededSamples(Dataset):
    """A dataset as a :class:`ResumableLoader` serves it: in a worker process, the process's
    torch, NumPy and Python generators are seeded with :func:`sample_seed` before each sample
    of a :class:`SeededBatch` is read; in the main process (``--num-workers 0``) samples are
    read as they are (the generators ``ResumeState`` keeps go on). Other attributes are the
    wrapped dataset's."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """Return the samples ``indices`` (the loader's fetcher asks for a batch at once)."""
        if get_worker_info() is None or not isinstance(indices, SeededBatch):
            many = getattr(self.dataset, "__getitems__", None)
            return many(indices) if many else [self.dataset[i] for i in indices]
        samples = []
        for i in indices:
            s = sample_seed(indices.seed, indices.epoch, i)
            torch.manual_seed(s)
            np.random.seed(s % 2**32)
            random.seed(s)
            samples.append(self.dataset[i])
        return samples

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "dataset":  # unpickling, copying
            raise AttributeError(name)
        return getattr(self.dataset, name)


class GlobalBatchSampler(Sampler[list[int]]):
    """Yield this rank's share of each global mini-batch.

    Args:
        num_samples: size of the dataset.
        global_batch_size: samples per optimisation step over all ranks.
        shuffle: draw a new permutation every epoch (call :meth:`set_epoch`).
        drop_last: drop the last incomplete global batch (keeps shards equal in size).
        seed: base seed of the permutations.
        rank, world_size: this process and the number of processes.
    """

    def __init__(
        self,
        num_samples: int,
        global_batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if global_batch_size % world_size:
            raise ValueError(
                f"batch size {global_batch_size} is not divisible by {world_size} processes"
            )
        self.num_samples = num_samples
        self.global_batch_size = global_batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    @property
    def sampler(self) -> GlobalBatchSampler:
        """The sampler itself: Lightning calls ``batch_sampler.sampler.set_epoch(epoch)`` at
        the start of every epoch, and this is how it finds :meth:`set_epoch`."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation of ``epoch`` (Lightning calls this each epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.global_batch_size)
        return full if self.drop_last or rest < self.world_size else full + 1

    def __iter__(self) -> Iterator[list[int]]:
        """Yield this rank's share of each global batch of the epoch (a :class:`SeededBatch`),
        from global batch ``start`` on (``start`` then returns to 0: only one pass skips)."""
        start, self.start = self.start, 0
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=g)
        else:
            order = torch.arange(self.num_samples)
        for i in range(start, len(self)):
            batch = order[i * self.global_batch_size : (i + 1) * self.global_batch_size]
            usable = len(batch) - len(batch) % self.world_size
            share = batch[:usable][self.rank :: self.world_size].tolist()
            yield SeededBatch(share, self.seed, self.epoch)


class ResumableLoader(DataLoader):
    """A :class:`~torch.utils.data.DataLoader` over a :class:`GlobalBatchSampler` that knows
    its place in the epoch: ``state_dict`` is the epoch and the batches served in it, and
    after ``load_state_dict`` the next pass starts where that one stopped.

    Checkpoints keep this state (:meth:`cnnzoo.data.splits.SplitDataModule.state_dict`), and
    a run resumed part-way through an epoch continues with the next batch; a checkpoint taken
    at the end of an epoch resumes at the start of the next. The count is of batches handed
    to the training loop (not of indices the worker processes have prefetched).

    Starting a pass draws nothing from the global random generator (a plain loader draws its
    worker seed there): the loader has its own generator, seeded by the sampler's seed and
    epoch, so a resumed run's augmentation and dropout draws stay in step with an
    uninterrupted run's. The dataset is served through :class:`SeededSamples` (its
    ``dataset`` attribute is that wrapper), so worker processes seed each sample's draws.
    """

    batch_sampler: GlobalBatchSampler

    def __init__(self, dataset: Dataset, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("generator", torch.Generator())
        if not isinstance(dataset, SeededSamples):
            dataset = SeededSamples(dataset)
        super().__init__(dataset, *args, **kwargs)
        if not isinstance(self.batch_sampler, GlobalBatchSampler):
            raise TypeError("ResumableLoader needs a GlobalBatchSampler as its batch_sampler")
        self.served = 0
        self._resume_at = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        """Start a pass (the base iterator is created now, as a plain loader's is) and count
        the batches it hands out."""
        sampler = self.batch_sampler
        sampler.start = self._resume_at
        self.served, self._resume_at = self._resume_at, 0
        if self.generator is not None:  # the workers' seeds: of this epoch, not of the clock
            self.generator.manual_seed((sampler.seed * 1_000_003 + sampler.epoch) % 2**63)
        return self._count(super().__iter__())

    def _count(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            self.served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Return ``{"epoch": the sampler's epoch, "batches": batches served in it}``."""
        return {"epoch": self.batch_sampler.epoch, "batches": self.served}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Continue from ``state_dict`` (see :meth:`state_dict`): the next pass skips the
        batches already served in that epoch; a finished epoch continues with the next one.
        """
        epoch, done = int(state_dict["epoch"]), int(state_dict["batches"])
        if done >= len(self.batch_sampler):
            epoch, done = epoch + 1, 0
        self.batch_sampler.set_epoch(epoch)
        self._resume_at = done
