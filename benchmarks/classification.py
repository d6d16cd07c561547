"""Train classifiers on Fashion-MNIST for an epoch or time budget; print accuracy vs wall time.

Examples::

    python benchmarks/classification.py --demo                       # the demo recipe
    python benchmarks/classification.py resnet20 --epochs 10 --precision bf16-mixed
    python benchmarks/classification.py plain20 resnet20 plain56 resnet56 --epochs 5

Each model trains into a fresh run directory under --runs; the table (markdown) is printed
and also written to --runs/results.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path


def machine() -> str:
    """Return a one-line description of this machine: CPU model, whether it has bf16
    instructions (what ``--precision auto`` trains in), cores, torch version."""
    import torch

    from cnnzoo.tasks.precision import cpu_has_fast_bf16
    from cnnzoo.workflows.bench import cpu_name

    isa = "bf16 instructions" if cpu_has_fast_bf16() else "no bf16 instructions"
    return f"{cpu_name()} ({isa}), {os.cpu_count()} cores, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="registered model names")
    parser.add_argument("--demo", action="store_true", help="benchmark the demo recipe")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--max-time", type=float, default=None, help="minutes per model")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--precision", default=None)
    parser.add_argument("--channels-last", action="store_true", default=None)
    parser.add_argument("--label-smoothing", type=float, default=None)
    parser.add_argument("--val-fraction", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="runs/bench")
    args = parser.parse_args()

    from cnnzoo.workflows.demo import DEMO_RECIPE, free_run_dir
    from cnnzoo.workflows.train import TrainConfig, train

    names = (["demo"] if args.demo else []) + list(args.models)
    if not names:
        parser.error("name at least one model, or --demo")
    rows = []
    for name in names:
        base = DEMO_RECIPE if name == "demo" else TrainConfig(model=name)
        overrides = {
            "data": args.data,
            "out": free_run_dir(f"{args.runs}/{name}"),
            "val_fraction": args.val_fraction,
            "seed": args.seed,
            "progress": False,
            "max_time_minutes": args.max_time,
        }
        for key in ("epochs", "batch_size", "lr", "precision", "channels_last", "label_smoothing"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        cfg = replace(base, **overrides)
        result = train(cfg)
        seen = result.epochs * (60000 if cfg.data == "fashion-mnist" else 5000)
        row = {
            "model": cfg.model + (" (demo recipe)" if name == "demo" else ""),
            "params": result.params,
            "epochs": result.epochs,
            "precision": cfg.precision + (", channels-last" if cfg.channels_last else ""),
            "train_seconds": round(result.seconds, 1),
            "images_per_second": round(seen * (1 - cfg.val_fraction) / result.seconds),
            "test_accuracy": round(result.metrics["test/accuracy"], 4),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    header = "| " + " | ".join(rows[0]) + " |"
    lines = [f"Machine: {machine()}", "", header, "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)
    Path(args.runs).mkdir(parents=True, exist_ok=True)
    with open(Path(args.runs) / "results.md", "a") as f:
        f.write(table + "\n\n")


if __name__ == "__main__":
    main()
