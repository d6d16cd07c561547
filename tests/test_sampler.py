"""Global batches: the same samples per step whatever the number of processes."""

from __future__ import annotations

from cnnzoo.data.sampler import GlobalBatchSampler


def test_ranks_partition_each_global_batch():
    single = list(GlobalBatchSampler(50, 8, shuffle=True, seed=3))
    ranks = [list(GlobalBatchSampler(50, 8, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single) == 7
    for step, batch in enumerate(single):
        union = sorted(ranks[0][step] + ranks[1][step])
        usable = batch[: len(batch) - len(batch) % 2]
        assert union == sorted(usable)


def test_epochs_reshuffle_and_cover_everything_once():
    sampler = GlobalBatchSampler(20, 6, seed=0)
    first = [i for b in sampler for i in b]
    sampler.set_epoch(1)
    second = [i for b in sampler for i in b]
    assert sorted(first) == sorted(second) == list(range(20))
    assert first != second


def test_no_shuffle_keeps_order():
    assert list(GlobalBatchSampler(5, 2, shuffle=False)) == [[0, 1], [2, 3], [4]]
