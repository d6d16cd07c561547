"""The modern detection recipe's ablation ladder: each ingredient's effect at an equal budget.

Examples::

    python benchmarks/det_recipe.py --time 3 --seeds 0            # yolov3, a quick look
    python benchmarks/det_recipe.py yolov3 ssd fast_rcnn --time 15 --seeds 0 1 2 3 4

As airbench reports its tricks, every rung adds one ingredient to the rung above it, from
``--recipe paper`` (today's training) to ``--recipe modern``:

1. ``paper``: the paper's assignment and box loss, random flip, no EMA;
2. ``+ multi-positive``: ``--model-arg assigner=multi`` (models that have it: yolov3);
3. ``+ CIoU loss``: ``--model-arg box_loss=ciou`` (yolov3, ssd);
4. ``+ mosaic/scale/colour``: ``--det-augment mosaic``;
5. ``+ EMA = modern``: ``--recipe modern`` itself (the four ingredients and the EMA).

A rung that changes nothing for a model (fast_rcnn has neither option of rungs 2-3) is
skipped. Both recipes use the same warm-up + cosine schedule (``onecycle``), so it is no rung.
Every row is ``cnnzoo train MODEL --data scenes --time MIN`` in its own process with
``OMP_NUM_THREADS`` = ``--threads`` (the time-boxed schedule fits the epochs and the lr to
the budget), from the shipped Fashion-MNIST ``convnet.fmnist`` backbone, batch 16, AdamW lr
0.001, bf16 autocast and channels-last (the settings of ``benchmarks/detection.py``); scored
on the scenes' test split (400 images) by the run's own test pass: mAP@[.5:.95] and
mAP@0.5, mean ± std over ``--seeds``. The table (markdown) is printed and written with every
run's numbers to ``--runs``/results.md and results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from classification import machine

LADDER: list[tuple[str, list[str]]] = [
    ("paper", ["--recipe", "paper"]),
    ("+ multi-positive", ["--model-arg", "assigner=multi"]),
    ("+ CIoU loss", ["--model-arg", "box_loss=ciou"]),
    ("+ mosaic/scale/colour", ["--det-augment", "mosaic"]),
    ("+ EMA = modern", ["--recipe", "modern"]),
]
"""Rungs: a name and the ``cnnzoo train`` options that add its ingredient to the rungs above
(the last one replaces them all by the recipe itself)."""

COMMON = ["--data", "scenes", "--backbone-weights", "convnet.fmnist", "--batch-size", "16",
          "--optimizer", "adamw", "--lr", "0.001", "--precision", "bf16-mixed",
          "--channels-last", "--accelerator", "cpu", "--snapshots", "0",
          "--no-progress"]  # fmt: skip


def model_options(model: str) -> set[str]:
    """Return the builder options of ``model`` (to skip rungs it has no use for)."""
    import inspect

    from cnnzoo.registry import model_info

    return set(inspect.signature(model_info(model).builder).parameters)


def rungs_for(model: str) -> list[tuple[str, list[str]]]:
    """Return ``model``'s rungs, each with its whole option list: the ingredients so far,
    leaving out model options it does not have; a rung left with nothing to add is skipped."""
    params = model_options(model)
    kept: list[tuple[str, list[str]]] = []
    so_far: list[str] = []
    for name, options in LADDER:
        if options[0] == "--model-arg" and options[1].split("=")[0] not in params:
            continue
        so_far = list(options) if options[0] == "--recipe" else [*so_far, *options]
        kept.append((name, so_far))
    return kept


def run_rung(model: str, options: list[str], seed: int, minutes: float, threads: int,
             out: Path) -> dict[str, Any]:  # fmt: skip
    """Train one rung in its own process and return its test metrics and seconds.

    Raises:
        RuntimeError: if the training command fails.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "cnnzoo.cli", "train", model, *COMMON, *options,
               "--time", str(minutes), "--seed", str(seed), "--out", str(out),
               "--overwrite"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    metrics = json.loads((out / "metrics.json").read_text())
    budget = json.loads((out / "budget.json").read_text())
    return {
        "map": metrics["metrics"]["test/map"],
        "map_50": metrics["metrics"]["test/map_50"],
        "seconds": metrics["seconds"],
        "epochs": metrics["epochs"],
        "steps": budget["steps"],
    }


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (sample std; just the value for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["yolov3"])
    parser.add_argument("--time", type=float, default=3.0, help="training minutes per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", default="runs/det_recipe")
    args = parser.parse_args()
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for model in args.models:
        for name, options in rungs_for(model):
            results = []
            for seed in args.seeds:
                slug = name.replace(" ", "").replace("+", "").replace("/", "-").replace("=", "-")
                out = runs / f"{model}-{slug}-s{seed}"
                results.append(run_rung(model, options, seed, args.time, args.threads, out))
                print(f"{model} {name} seed {seed}: {results[-1]}", flush=True)
            rows.append({"model": model, "rung": name, "options": " ".join(options),
                         "runs": results})  # fmt: skip
            (runs / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        f"{machine()}; {args.threads} thread(s); --time {args.time:g} per run; seeds "
        f"{' '.join(map(str, args.seeds))}; scenes test split",
        "",
        "| model | rung | options | steps | test mAP@[.5:.95] | test mAP@0.5 |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = row["runs"]
        steps = "/".join(str(x["steps"]) for x in r)
        maps = mean_std([x["map"] for x in r]), mean_std([x["map_50"] for x in r])
        lines.append(f"| {row['model']} | {row['rung']} | `{row['options']}` | {steps} | "
                     f"{maps[0]} | {maps[1]} |")  # fmt: skip
    table = "\n".join(lines)
    print(table)
    (runs / "results.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
