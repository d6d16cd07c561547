"""Build the bundled mini Fashion-MNIST: a balanced, seeded, real subset of the official set.

For each split, ``per_class`` images of every class are drawn without replacement with
``numpy.random.default_rng(seed)`` (classes in label order, one draw per class), the chosen
indices are sorted so the subset keeps the official order, and the images and labels are
written as gzipped IDX (level 9, mtime 0, so the output is byte-for-byte reproducible).

Usage:
    python scripts/make_fashion_mnist_mini.py [--data-dir DIR] [--out DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cnnzoo.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    MINI_PREFIX,
    SPLIT_FILES,
    find_fashion_mnist,
    load_fashion_mnist,
    write_idx,
)

PER_CLASS = {"train": 500, "test": 100}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "cnnzoo" / "data" / "bundled"


def balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``per_class`` samples of each class, drawn without replacement."""
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
        for c in range(len(FASHION_MNIST_CLASSES))
    ]
    return np.sort(np.concatenate(chosen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="full Fashion-MNIST folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"source: {find_fashion_mnist(args.data_dir)}")
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, per_class in PER_CLASS.items():
        images, labels = load_fashion_mnist(split, args.data_dir, download=False)
        idx = balanced_indices(labels.numpy(), per_class, rng)
        images_stem, labels_stem = SPLIT_FILES[split]
        for stem, array in (
            (images_stem, images[idx, 0].numpy()),
            (labels_stem, labels[idx].numpy().astype(np.uint8)),
        ):
            path = write_idx(args.out / f"{MINI_PREFIX}{stem}.gz", array)
            print(f"{path}: {array.shape}, {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
