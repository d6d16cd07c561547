"""Images for exported graphs, for families whose data modules yield ``(images, targets)``
batches normalised in ``on_after_batch_transfer`` (segmentation, detection): test images to
check an export against PyTorch, training images to calibrate an int8 model on."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cnnzoo.errors import CnnzooError


def _run_data(data_class: Any, run: Any, spec: dict[str, Any], n: int, **extra: Any) -> Any:
    """The run's own data module, as in training but without augmentation."""
    config, data = run.read_config(), spec["data"]
    return data_class(
        data["name"], data_dir=config.get("data_dir"), batch_size=max(n, 1),
        input_size=spec.get("resize_to"), augment=False,
        val_fraction=config.get("val_fraction", 0.1), seed=config.get("seed", 0),
        channels=data["in_channels"], **extra,
    )  # fmt: skip


def run_test_images(
    data_class: Any, run: Any, spec: dict[str, Any], n: int, **extra: Any
) -> tuple[Tensor, str] | None:
    """Return up to ``n`` test images of a run's own data, prepared as in training by
    ``data_class`` (:class:`~cnnzoo.data.seg_datamodule.SegmentationData`,
    :class:`~cnnzoo.data.det_datamodule.DetectionData`), and what they are; None when the
    data is not on this machine. ``extra`` goes to ``data_class``."""
    x = first_test_images(lambda: _run_data(data_class, run, spec, n, **extra), n)
    name = spec["data"]["name"]
    return None if x is None else (x, f"the first {len(x)} test images of {name}")


def run_train_images(
    data_class: Any, run: Any, spec: dict[str, Any], n: int, **extra: Any
) -> Tensor:
    """Return ``n`` training images of a run's own data spread evenly over the split (all of
    them when it is smaller), prepared as the model sees them without augmentation: int8
    calibration.

    Raises:
        CnnzooError: when the run's training data is not on this machine (its message), or
            ``n`` < 1.
    """
    from torch.utils.data import DataLoader, Subset

    if n < 1:
        raise CnnzooError(f"--calibration must be at least 1 image, got {n}")
    dm = _run_data(data_class, run, spec, min(n, 64), **extra)
    dm.setup("fit")
    train = dm.splits["train"]
    picked = torch.linspace(0, len(train) - 1, min(n, len(train))).round().long().tolist()
    loader = DataLoader(Subset(train, picked), batch_size=dm.batch_size,
                        collate_fn=type(dm).collate_fn)  # fmt: skip
    return torch.cat([dm.on_after_batch_transfer(batch, 0)[0] for batch in loader])


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
