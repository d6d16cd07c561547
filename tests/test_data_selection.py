"""Class and labelled-subset selection (transfer learning's source/target splits)."""

from __future__ import annotations

import pytest
import torch

from cnnzoo import CnnzooError
from cnnzoo.data.datamodule import ClassificationData, select_classes

LABELS = torch.tensor([0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 9, 8, 7, 6, 5])
IMAGES = torch.arange(len(LABELS)).view(-1, 1, 1, 1)


def test_classes_are_kept_and_relabelled_in_the_given_order():
    images, labels = select_classes(IMAGES, LABELS, classes=[9, 5])
    assert labels.tolist() == [1, 1, 0, 0, 1]  # 5 -> 1, 9 -> 0
    assert images.flatten().tolist() == [5, 6, 10, 11, 15]  # original positions, in order


def test_per_class_draws_a_seeded_balanced_subset():
    a = select_classes(IMAGES, LABELS, classes=[5, 9], per_class=2, seed=1)
    b = select_classes(IMAGES, LABELS, classes=[5, 9], per_class=2, seed=1)
    assert torch.equal(a[0], b[0])
    assert a[1].bincount().tolist() == [2, 2]


def test_missing_class_and_too_few_samples_are_clear_errors():
    with pytest.raises(CnnzooError, match=r"classes \[11\] are not in the data"):
        select_classes(IMAGES, LABELS, classes=[11])
    with pytest.raises(CnnzooError, match="fewer than 3"):
        select_classes(IMAGES, LABELS, classes=[0], per_class=3)


def test_datamodule_builds_a_five_class_target_task():
    dm = ClassificationData(
        "fashion-mnist-mini", classes=[5, 6, 7, 8, 9], per_class=10, val_fraction=0
    )
    assert dm.spec.class_names == ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert dm.spec.sizes == {"train": 50, "test": 500}
    assert dm.splits["train"].labels.bincount().tolist() == [10] * 5
    assert dm.splits["test"].labels.max().item() == 4
