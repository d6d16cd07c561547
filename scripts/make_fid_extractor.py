"""Make the FID feature extractor that ships with cnnzoo: a small ``convnet`` trained on the
full Fashion-MNIST, written as fp16 safetensors to
``src/cnnzoo/data/bundled/fid-fmnist-convnet.safetensors`` (see :mod:`cnnzoo.tasks.fid`).

Run from the repository root with the full dataset installed (``cnnzoo`` finds it with
:func:`cnnzoo.data.fashion_mnist.find_fashion_mnist`)::

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python scripts/make_fid_extractor.py

It trains through ``cnnzoo train``'s own code path (all 60,000 training images, no
validation split, seed 0), prints the test accuracy on the official 10,000 test images and
stores it in the file's metadata with the seed, the architecture and the date. An existing
file is only replaced with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = REPO / "src" / "cnnzoo" / "data" / "bundled" / "fid-fmnist-convnet.safetensors"
ARCH = {"widths": [16, 32, 64], "hidden": 128, "head_size": 3, "dropout": 0.3}
"""convnet kwargs: three conv stages (28 -> 14 -> 7 -> 3), a 3x3 average pool and a
128-unit penultimate layer (the FID features); 147k parameters."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--out", type=Path, default=TARGET)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args()

    import torch
    from safetensors.torch import load_file, save

    from cnnzoo.data.fashion_mnist import find_fashion_mnist
    from cnnzoo.files import atomic_write_bytes
    from cnnzoo.tasks.fid import FID_FORMAT, FMNIST_MEAN, FMNIST_STD
    from cnnzoo.workflows.train import TrainConfig, train

    if args.out.exists() and not args.overwrite:
        sys.exit(f"{args.out} exists; pass --overwrite to replace it")
    folder = find_fashion_mnist(args.data_dir)
    if folder is None:
        sys.exit("the full Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    print(f"Fashion-MNIST: {folder}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            model="convnet", data="fashion-mnist", data_dir=str(folder), out=f"{tmp}/run",
            epochs=args.epochs, val_fraction=0.0, seed=args.seed, progress=False,
            accelerator="cpu", model_kwargs=dict(ARCH),
        )  # fmt: skip
        result = train(cfg)
        state = load_file(str(result.run_dir / "model.safetensors"))
    accuracy = result.metrics["test/accuracy"]
    print(f"test accuracy (10,000 official test images): {accuracy:.4f}  "
          f"({result.epochs} epochs, {result.seconds:.0f} s)", flush=True)  # fmt: skip
    # fp16 halves the file; BN counters (int64) stay as they are
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    metadata = {
        "format": FID_FORMAT,
        "model": "convnet",
        "kwargs": json.dumps(ARCH),
        "num_classes": "10",
        "dataset": "fashion-mnist (60,000 train images)",
        "test_accuracy": f"{accuracy:.4f}",
        "seed": str(args.seed),
        "epochs": str(result.epochs),
        "mean": str(FMNIST_MEAN),
        "std": str(FMNIST_STD),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "made_by": "scripts/make_fid_extractor.py",
    }
    data = save(half, metadata=metadata)
    atomic_write_bytes(args.out, data)
    print(f"wrote {args.out} ({len(data) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
