"""The data both sides see: the splits cnnzoo makes of a ``--data`` spec, written out for
the peers (a YOLO layout via cnnzoo's own converter, lists of image/mask files), and the
test split's ground truth that both sides are scored against.

cnnzoo trains on ``--data SPEC --val-fraction F --seed S``; the peers get the very training,
validation and test images of those splits (:class:`~cnnzoo.data.det_datamodule.DetectionData`
and :class:`~cnnzoo.data.seg_datamodule.SegmentationData` make them here, as in training).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cnnzoo.data.detection import DetectionDataset, DetRecord
from cnnzoo.errors import CnnzooError

SCENES_SETTINGS: dict[str, Any] = {"n_train": 1500, "n_test": 300, "size": 96, "max_items": 6}
"""The peer benchmark's scenes: the issue's "1,500 training images, 96 px, 10 classes"."""
SCENES_SEED = 2121
"""Used nowhere else in cnnzoo (the shipped scenes use seed 0): nobody tuned for these."""
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
"""Where this machine keeps the full Fashion-MNIST (the scenes' items)."""


def benchmark_scenes(
    work: Path,
    n_train: int = SCENES_SETTINGS["n_train"],
    n_test: int = SCENES_SETTINGS["n_test"],
    seed: int = SCENES_SEED,
    fashion_mnist: str = FASHION_MNIST_DIR,
) -> str:
    """Generate (once) the benchmark's scenes under ``work`` and return their ``scenes:`` spec.

    Args:
        fashion_mnist: the folder of the full Fashion-MNIST, or ``"mini"`` for the subset
            bundled with cnnzoo (quick checks only).
    """
    from cnnzoo.data.scenes import generate_scenes

    mini = fashion_mnist == "mini"
    source = "fashion-mnist-mini" if mini else "fashion-mnist"
    size, items = SCENES_SETTINGS["size"], SCENES_SETTINGS["max_items"]
    folder = work / f"scenes-{n_train}-{n_test}-{size}px-seed{seed}-{source}"
    generate_scenes(
        folder, n_train=n_train, n_test=n_test, size=size, max_items=items, seed=seed,
        source=source, data_dir=None if mini else fashion_mnist,
    )  # fmt: skip
    return f"scenes:{folder.resolve()}"


class RecordList(DetectionDataset):
    """Detection records (already parsed) as a dataset, for cnnzoo's format writers."""

    def __init__(self, records: Sequence[DetRecord], class_names: Sequence[str]) -> None:
        super().__init__(3, class_names)
        self.records = list(records)


@dataclass
class DetSplits:
    """A detection data spec's train / val / test records and class names."""

    spec: str
    class_names: list[str]
    splits: dict[str, list[DetRecord]]


def detection_splits(spec: str, val_fraction: float, seed: int) -> DetSplits:
    """The records of each split as ``cnnzoo train --data SPEC`` makes them.

    Raises:
        CnnzooError: for a bad spec, or data without a validation split when
            ``val_fraction`` is 0 (ultralytics needs one).
    """
    from cnnzoo.data.det_datamodule import DetectionData

    data = DetectionData(spec, val_fraction=val_fraction, seed=seed, cache=False)
    if "val" not in data.splits:
        raise CnnzooError(f"--val-fraction {val_fraction}: {spec} has no validation split")
    splits = {
        name: [view.base.records[i] for i in view.indices]  # type: ignore[attr-defined]
        for name, view in data.splits.items()
    }
    return DetSplits(spec, list(data.spec.class_names), splits)


def yolo_layout(data: DetSplits, root: Path) -> Path:
    """Write the splits in ultralytics' layout with cnnzoo's converter; return ``data.yaml``.

    The yaml gets an absolute ``path`` so ultralytics does not look under its own datasets
    folder.
    """
    from cnnzoo.data.convert import write_yolo

    yaml_path = root / "data.yaml"
    for split, records in data.splits.items():
        yaml_path = write_yolo(RecordList(records, data.class_names), root, split)
    doc = yaml.safe_load(yaml_path.read_text())
    yaml_path.write_text(yaml.safe_dump({"path": str(root.resolve()), **doc}, sort_keys=False))
    return yaml_path


def detection_truth(records: Sequence[DetRecord]) -> list[dict[str, Any]]:
    """Ground truth of the test records in the scorer's form (original pixels)."""
    truth = []
    for r in records:
        item: dict[str, Any] = {"boxes": r.boxes, "labels": r.labels}
        if r.difficult is not None:
            item["difficult"] = r.difficult
        truth.append(item)
    return truth


@dataclass
class SegSplits:
    """A segmentation data spec's (image, mask) file pairs per split, the test masks as read
    by cnnzoo, and the class names."""

    spec: str
    class_names: list[str]
    splits: dict[str, list[tuple[str, str]]]
    test_masks: list[Any]


def segmentation_splits(spec: str, val_fraction: float, seed: int) -> SegSplits:
    """The file pairs of each split as ``cnnzoo train --data SPEC`` makes them.

    Raises:
        CnnzooError: for a bad spec, or a source that is not image and mask folders
            (``scenes``, ``scenes:PATH``, ``masks:PATH``).
    """
    from cnnzoo.data.seg_datamodule import SegmentationData

    data = SegmentationData(spec, val_fraction=val_fraction, seed=seed, cache=False)
    splits: dict[str, list[tuple[str, str]]] = {}
    for name, view in data.splits.items():
        pairs = getattr(view.base, "pairs", None)
        if pairs is None:
            raise CnnzooError(
                f"segmentation data {spec!r}: the peer benchmark reads image and mask folders "
                "only: use scenes, scenes:PATH or masks:PATH"
            )
        splits[name] = [(os.fspath(pairs[i][0]), os.fspath(pairs[i][1])) for i in view.indices]
    test = data.splits["test"]
    masks = [test.base[i][1] for i in test.indices]
    return SegSplits(spec, list(data.spec.class_names), splits, masks)
