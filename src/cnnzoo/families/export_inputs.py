"""Test images for checking an exported graph, for families whose data modules yield
``(images, targets)`` batches normalised in ``on_after_batch_transfer`` (segmentation,
detection)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cnnzoo.errors import CnnzooError


def first_test_images(make_data: Any, name: str, n: int) -> Tensor | None:
    """Return the first ``n`` test images of the data module ``make_data()`` builds, as the
    model sees them (normalised), or None when the data is not on this machine.

    Args:
        make_data: a callable returning a :class:`~cnnzoo.data.splits.SplitDataModule`.
        name: the data's name, for messages.
        n: images wanted (fewer when the split is smaller).
    """
    try:
        dm = make_data()
        dm.setup("test")
        split = "test" if dm.has_split("test") else "val"
        loader = dm.test_dataloader() if split == "test" else dm.val_dataloader()
    except CnnzooError:
        return None
    chunks, count = [], 0
    for batch in loader:
        x = dm.on_after_batch_transfer(batch, 0)[0]
        chunks.append(x[: n - count])
        count += len(chunks[-1])
        if count >= n:
            break
    return torch.cat(chunks) if chunks else None
