"""Shuffled mini-batches that mean the same thing on 1 process or N.

Each epoch draws one global permutation (seeded by seed + epoch); global batch k is the same
slice of it whatever the world size, and rank r takes every world-size-th sample of it. With
synchronised BN and averaged gradients, DDP over N processes then computes exactly the step
one process computes on the whole global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


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

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation of ``epoch`` (Lightning calls this each epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.global_batch_size)
        return full if self.drop_last or rest < self.world_size else full + 1

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=g)
        else:
            order = torch.arange(self.num_samples)
        for i in range(len(self)):
            batch = order[i * self.global_batch_size : (i + 1) * self.global_batch_size]
            usable = len(batch) - len(batch) % self.world_size
            yield batch[:usable][self.rank :: self.world_size].tolist()
