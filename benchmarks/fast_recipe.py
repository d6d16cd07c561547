"""The fast classifier recipe's ablation ladder on Fashion-MNIST (issue 21, item 5).

Each rung adds one ingredient to the rung above it (as airbench's ablations do); every rung
trains for the same time budget (``--time``: epochs and schedule fitted to the minutes) on
every seed, and the table gives test accuracy mean ± std, training seconds and epochs::

    python benchmarks/fast_recipe.py --seeds 5 --minutes 5            # the whole ladder
    python benchmarks/fast_recipe.py --rungs demo,fast --seeds 5      # two rungs
    python benchmarks/fast_recipe.py --threads 1 --minutes 9 --seeds 2 # one core

The rows are printed as they finish and appended to ``--runs/ladder.jsonl``; ``--save F``
writes the table as JSON (docs/fast-recipe-results.json is made this way).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import classification

# (name, what the rung adds, TrainConfig overrides on top of the demo recipe)
LADDER: list[tuple[str, str, dict[str, Any]]] = [
    ("demo", "the demo recipe: convnet, SGD + Nesterov, one-cycle, bf16 + channels-last", {}),
    ("+head BN", "BatchNorm in the convnet's hidden layer", {"model_kwargs": {"head_norm": True}}),
    ("fast", "+ PyTorch init, 2 px crops, 16-channel first stage, flip + shift TTA = "
     "`--recipe fast`", {"recipe": "fast"}),
    ("fast +EMA", "+ EMA of the weights, decay 0.99 per step (not kept)",
     {"recipe": "fast", "ema_decay": 0.99}),
]  # fmt: skip


def machine(threads: int) -> str:
    """One line: the shared machine description (:func:`classification.machine`: CPU
    model, bf16 or not, cores, torch version) and the threads each run used."""
    return f"{classification.machine()}; {threads} thread(s) per run"


def rung_configs(names: list[str] | None) -> list[tuple[str, str, dict[str, Any]]]:
    """Return the chosen rungs (all when ``names`` is None); exits for an unknown name."""
    known = [r[0] for r in LADDER]
    for name in names or []:
        if name not in known:
            sys.exit(f"unknown rung {name!r}; expected some of {', '.join(known)}")
    return [r for r in LADDER if names is None or r[0] in names]


VIEWS = {"one view": None, "flip": 0, "flip + shifts": 1}
"""Test-time views each run is also scored with (None: no TTA; else ``--tta-shift``)."""


def view_accuracies(run_dir: Path) -> dict[str, float]:
    """Return the test accuracy of a finished run's model under each of :data:`VIEWS`, in
    fp32 (the run's own figure is measured in its training precision)."""
    import torch

    from cnnzoo.families.classification.evaluate import batch_accuracy, run_data
    from cnnzoo.rundir import RunDir
    from cnnzoo.tasks.tta import flip_average

    run = RunDir.open(run_dir)
    model, spec = run.load_model()
    dm, _ = run_data(run, spec, split="test")
    out = {}
    with torch.no_grad():
        for name, shift in VIEWS.items():
            if shift is None:
                out[name] = batch_accuracy(lambda x: model(x).argmax(1), dm, "test")
            else:
                out[name] = batch_accuracy(
                    lambda x, s=shift: flip_average(model, x, s).argmax(1), dm, "test"
                )
    return {k: round(v, 4) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rungs", help="comma-separated rung names (default: all)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--runs", default="runs/fast-ladder")
    parser.add_argument("--save", help="write the table as JSON here")
    args = parser.parse_args()

    import torch

    from cnnzoo.workflows.demo import DEMO_RECIPE, free_run_dir
    from cnnzoo.workflows.train import train

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    rungs = rung_configs(args.rungs.split(",") if args.rungs else None)
    Path(args.runs).mkdir(parents=True, exist_ok=True)
    table = []
    for name, what, overrides in rungs:
        runs = []
        for seed in range(args.seeds):
            slug = name.strip("+").replace(" ", "")
            cfg = replace(
                DEMO_RECIPE, out=free_run_dir(f"{args.runs}/{slug}-s{seed}"),
                seed=seed, progress=False, time_minutes=args.minutes, **overrides,
            )  # fmt: skip
            result = train(cfg)
            runs.append({"seed": seed, "accuracy": result.metrics["test/accuracy"],
                         "seconds": result.seconds, "epochs": result.epochs,
                         "views": view_accuracies(result.run_dir)})  # fmt: skip
            print(json.dumps({"rung": name, **runs[-1]}), flush=True)
            with open(Path(args.runs) / "ladder.jsonl", "a") as f:
                f.write(json.dumps({"rung": name, **runs[-1]}) + "\n")
        acc_mean, acc_std = _mean_std([r["accuracy"] for r in runs])
        table.append({
            "rung": name, "adds": what, "seeds": len(runs),
            "accuracy_mean": acc_mean, "accuracy_std": acc_std,
            "seconds_mean": round(statistics.mean(r["seconds"] for r in runs), 1),
            "epochs_mean": round(statistics.mean(r["epochs"] for r in runs), 1),
            "views": {v: _mean_std([r["views"][v] for r in runs]) for v in VIEWS},
            "runs": runs,
        })  # fmt: skip
    lines = [
        f"Machine: {machine(threads)}; budget {args.minutes} min per run (`--time`)",
        "",
        "| rung | adds | test accuracy | train s | epochs | "
        + " | ".join(f"{v} (fp32)" for v in VIEWS)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(VIEWS),
    ]
    for row in table:
        acc = f"{row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f} ({row['seeds']} seeds)"
        views = " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in row["views"].values())
        lines.append(f"| {row['rung']} | {row['adds']} | {acc} | {row['seconds_mean']} | "
                     f"{row['epochs_mean']} | {views} |")  # fmt: skip
    print("\n".join(lines))
    if args.save:
        doc = {"machine": machine(threads), "minutes": args.minutes, "rows": table}
        Path(args.save).write_text(json.dumps(doc, indent=1) + "\n")


def _mean_std(values: list[float]) -> tuple[float, float]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return round(statistics.mean(values), 4), round(std, 4)


if __name__ == "__main__":
    main()
