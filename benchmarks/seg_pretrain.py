"""Segmentation from an encoder pre-trained on classification vs from scratch, at equal total
budget: the pre-training minutes are paid out of the segmentation budget.

Examples::

    python benchmarks/seg_pretrain.py                          # fcn8s unet pspnet segnet
    python benchmarks/seg_pretrain.py unet --minutes 6 --pretrain-minutes 1.5
    python benchmarks/seg_pretrain.py --lanes 2                # two 1-thread runs at a time

Every model is built on the same VGG-style encoder (``convnet``, widths 32-64-128-256,
strides 2-16: a 4-stage encoder sees a whole 48 px item). Two arms per model, the same
architecture, learning rate and data (``--data scenes``):

* **scratch**: the encoder starts from random weights; ``cnnzoo train --time MINUTES``.
* **pretrained**: first ``cnnzoo train convnet --data fashion-mnist --recipe fast --time
  PRETRAIN`` (once, shared by every model), then the segmenter with ``--backbone-weights`` on
  that run and ``--time`` = MINUTES minus the pre-training's measured training minutes.

With ``--lanes 1`` (default) the runs go one after the other on every core; with
``--lanes 2`` two runs go side by side, each pinned to its own core with one thread (the
pre-training too), so both arms pay for the same kind of minutes. Prints the table (markdown)
and writes ``--runs/results.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

ENCODER = [32, 64, 128, 256]
"""The encoder's stage widths (``convnet``'s ``widths``), shared by every model and arm."""

MODELS: dict[str, dict[str, Any]] = {
    "fcn8s": {"lr": 8e-3, "args": ["--backbone", "convnet"]},
    "unet": {"lr": 1e-2, "args": ["--backbone", "convnet"]},
    "pspnet": {
        "lr": 6e-3,
        "args": ["--backbone", "convnet", "--model-arg", "head_channels=128",
                 "--model-arg", "aux_channels=64"],
    },
    "segnet": {
        "lr": 3e-3,
        "args": ["--model-arg", f"widths={ENCODER}", "--model-arg", "depths=[2,2,2,2]"],
    },
}  # fmt: skip
"""Per model: the learning rate (the best of ``benchmarks/seg_sweep.py`` for that model, used
by both arms) and its ``cnnzoo train`` options. fcn8s, unet and pspnet take the encoder as
``--backbone convnet`` (its widths follow); segnet's encoder is its own VGG-style stages, of
the same widths, which load a ``convnet``'s weights."""

COMMON = ["--channels-last", "--no-progress", "--snapshots", "0", "--val-fraction", "0.05",
          "--accelerator", "cpu"]  # fmt: skip


def pretrain_command(out: Path, minutes: float, seed: int, extra: list[str]) -> list[str]:
    """``cnnzoo train convnet`` on Fashion-MNIST with ``--recipe fast`` for ``minutes``."""
    return [
        sys.executable, "-m", "cnnzoo.cli", "train", "convnet", "--data", "fashion-mnist",
        "--recipe", "fast", "--time", f"{minutes:g}", "--val-fraction", "0", "--seed", str(seed),
        "--model-arg", f"widths={ENCODER}", "--out", str(out), "--no-progress",
        "--accelerator", "cpu", *extra,
    ]  # fmt: skip


def seg_command(
    model: str, out: Path, minutes: float, seed: int, weights: Path | None, extra: list[str]
) -> list[str]:
    """``cnnzoo train MODEL --data scenes`` for ``minutes``, from ``weights`` if given."""
    recipe = MODELS[model]
    command = [
        sys.executable, "-m", "cnnzoo.cli", "train", model, "--data", "scenes",
        "--out", str(out), "--time", f"{minutes:g}", "--seed", str(seed),
        "--lr", f"{recipe['lr']:g}", *recipe["args"], *COMMON, *extra,
    ]  # fmt: skip
    if model != "segnet":
        command += ["--model-arg", f"widths={ENCODER}"]
    if weights is not None:
        command += ["--backbone-weights", str(weights)]
    return command


def read_metrics(run: Path) -> dict[str, Any]:
    """The run's ``metrics.json`` (empty when the run failed)."""
    path = run / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def row(model: str, arm: str, run: Path, pretrain: dict[str, Any] | None) -> dict[str, Any]:
    """One table row from a finished run (and the pre-training it started from)."""
    done = read_metrics(run)
    metrics = done.get("metrics", {})
    pre_s = float(pretrain["seconds"]) if pretrain else 0.0
    seg_s = float(done.get("seconds", float("nan")))
    return {
        "model": model,
        "arm": arm,
        "pretrain s": round(pre_s, 1),
        "pretrain acc": round(pretrain["metrics"]["test/accuracy"], 4) if pretrain else None,
        "seg s": round(seg_s, 1),
        "total s": round(pre_s + seg_s, 1),
        "epochs": done.get("epochs"),
        "test mIoU": round(metrics["test/miou"], 4) if "test/miou" in metrics else None,
        "pixel acc": (
            round(metrics["test/pixel_accuracy"], 4) if "test/pixel_accuracy" in metrics else None
        ),
        "run": str(run),
    }


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the machine type."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODELS), help=f"of {list(MODELS)}")
    parser.add_argument("--minutes", type=float, default=10.0, help="total budget per arm")
    parser.add_argument(
        "--pretrain-minutes", type=float, default=2.0,
        help="the encoder's classification training (paid out of the pretrained arms' budget)",
    )  # fmt: skip
    parser.add_argument("--lanes", type=int, default=1, choices=(1, 2))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision", default="32",
        help="of every run, the pre-training's too: '32' (default) or 'bf16-mixed', which only "
        "CPUs with AVX512-BF16/AMX run fast (10x slower than fp32 without them)",
    )  # fmt: skip
    parser.add_argument(
        "--subset", type=int, default=None,
        help="train on this many images only (both steps; a smoke test, not a measurement)",
    )  # fmt: skip
    parser.add_argument("--runs", default="runs/bench-seg-pretrain")
    args = parser.parse_args()
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}: expected some of {list(MODELS)}")
    if not 0 < args.pretrain_minutes < args.minutes:
        parser.error(
            f"--pretrain-minutes {args.pretrain_minutes:g} must be above 0 and below --minutes "
            f"{args.minutes:g} (the pretrained arm needs minutes left to segment)"
        )
    from cnnzoo.data.seg_datamodule import default_scenes
    from cnnzoo.workflows.demo import free_run_dir
    from peers import Step, thread_env  # after the checks: it imports torch

    runs = Path(free_run_dir(args.runs))
    runs.mkdir(parents=True)
    default_scenes()  # generated once here, not by two runs at the same time
    threads = 1 if args.lanes == 2 else (os.cpu_count() or 1)
    env = thread_env(threads, peer=False)
    pretrain_run = runs / "pretrain"
    extra = ["--precision", args.precision]
    extra += [] if args.subset is None else ["--subset", str(args.subset)]

    def step(name: str, command: list[str], lane: int) -> None:
        core = lane if args.lanes == 2 else None
        Step(name, command, env, runs / f"{name}.log", core).run()

    def scratch_lane(models: list[str], lane: int) -> None:
        for model in models:
            out = runs / f"{model}-scratch"
            step(out.name, seg_command(model, out, args.minutes, args.seed, None, extra), lane)

    def pretrained_lane(models: list[str], lane: int) -> None:
        step(
            "pretrain",
            pretrain_command(pretrain_run, args.pretrain_minutes, args.seed, extra),
            lane,
        )
        paid = float(read_metrics(pretrain_run).get("seconds", 0.0)) / 60
        if paid <= 0 or paid >= args.minutes:
            print(f"pretraining took {paid:.2f} min of {args.minutes:g}: no pretrained arm")
            return
        for model in models:
            out = runs / f"{model}-pretrained"
            command = seg_command(model, out, args.minutes - paid, args.seed, pretrain_run, extra)
            step(out.name, command, lane)

    lanes: list[Callable[[], None]]
    if args.lanes == 2:
        lanes = [lambda: pretrained_lane(args.models, 0), lambda: scratch_lane(args.models, 1)]
    else:
        lanes = [lambda: (pretrained_lane(args.models, 0), scratch_lane(args.models, 0))]
    workers = [threading.Thread(target=lane) for lane in lanes]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    pretrain = read_metrics(pretrain_run) or None
    rows = []
    for model in args.models:
        scratch = row(model, "scratch", runs / f"{model}-scratch", None)
        pre = row(model, "pretrained", runs / f"{model}-pretrained", pretrain)
        if scratch["test mIoU"] is not None and pre["test mIoU"] is not None:
            pre["gain"] = round(pre["test mIoU"] - scratch["test mIoU"], 4)
        rows += [scratch, pre]
    header = (
        f"scenes (2000 train incl. 5 % val, 400 test, 96x96); encoder convnet {ENCODER}; "
        f"{args.minutes:g} min per arm (pre-training {args.pretrain_minutes:g} min of it); "
        f"{'2 lanes, 1 thread each, pinned' if args.lanes == 2 else f'{threads} threads'}; "
        f"precision {args.precision}; seed {args.seed}; {cpu_name()}"
    )
    columns = ["model", "arm", "pretrain s", "pretrain acc", "seg s", "total s", "epochs",
               "test mIoU", "gain", "pixel acc"]  # fmt: skip
    lines = [header, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    text = "\n".join(lines)
    print(text)
    (runs / "results.md").write_text(text + "\n")
    (runs / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
