"""Test images for checking an exported graph, for families whose data modules yield
``(images, targets)`` batches normalised in ``on_after_batch_transfer`` (segmentation,
detection)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cnnzoo.errors import CnnzooError


def run_test_images(
    data_class: Any, run: Any, spec: dict[str, Any], n: int, **extra: Any
) -> tuple[Tensor, str] | None:
    """Return up to ``n`` test images of a run's own data, prepared as in training by
    ``data_class`` (:class:`~cnnzoo.data.seg_datamodule.SegmentationData`,
    :class:`~cnnzoo.data.det_datamodule.DetectionData`), and what they are; None when the
    data is not on this machine. ``extra`` goes to ``data_class``."""
    config, data = run.read_config(), spec["data"]
    x = first_test_images(
        lambda: data_class(
            data["name"], data_dir=config.get("data_dir"), batch_size=max(n, 1),
            input_size=spec.get("resize_to"), augment=False,
            val_fraction=config.get("val_fraction", 0.1), seed=config.get("seed", 0),
            channels=data["in_channels"], **extra,
        ),
        n,
    )  # fmt: skip
    return None if x is None else (x, f"the first {len(x)} test images of {data['name']}")


def first_test_images(make_data: Any, n: int) -> Tensor | None:
    """Return the first ``n`` test images of the data module ``make_data()`` builds, as the
    model sees them (normalised), or None when the data is not on this machine.

    Args:
        make_data: a callable returning a :class:`~cnnzoo.data.splits.SplitDataModule`.
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
