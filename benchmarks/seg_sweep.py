"""Which segmentation recipe does most with the issue's 20-CPU-minute budget? A sweep.

    python benchmarks/seg_sweep.py --accelerator gpu --parallel 10          # every recipe
    python benchmarks/seg_sweep.py D-c4pre-8e3 --accelerator cpu            # one, on the CPU

Each recipe trains for the epochs a 2-core CPU fits in 20 minutes (from the measured training
speed of ``benchmarks/segmentation.py``: about 88 images/s for fcn8s on the 3-stage convnet,
80 on the 4-stage one, 86 for unet width 16; pre-training the encoder, 200 s, counts in the
budget), so a fast GPU can try many recipes in the time one CPU run takes; the accuracy of an
epoch does not depend on where it ran. Recipes ending in ``-8k`` train on 8,000 instead of
2,000 scenes for the same number of images seen; ``-full`` ones on scenes whose items come
from the full Fashion-MNIST train set (60,000 images, ``--fashion-mnist``) instead of the
bundled 500 per class. Every recipe is tested on the same 400 test scenes (those of
``--data scenes``). ``-24ep`` and wider recipes go beyond the CPU budget, to see where the
ceiling lies.

Results (markdown and JSON, with each run's validation mIoU per epoch) go to --runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

C3, C4 = [32, 64, 128], [32, 64, 128, 256]
MINI, FULL = "fashion-mnist-mini", "fashion-mnist"
UNET16 = {"width": 16, "depth": 4}
RECIPES: dict[str, dict[str, Any]] = {
    "A-c3pre-2e3": {"model": "fcn8s", "pre": "c3", "lr": 2e-3, "epochs": 44},
    "B-c3pre-6e3": {"model": "fcn8s", "pre": "c3", "lr": 6e-3, "epochs": 44},
    "C-c4pre-3e3": {"model": "fcn8s", "pre": "c4", "lr": 3e-3, "epochs": 40},
    "D-c4pre-8e3": {"model": "fcn8s", "pre": "c4", "lr": 8e-3, "epochs": 40},
    "E-c4pre-8e3-dice": {"model": "fcn8s", "pre": "c4", "lr": 8e-3, "epochs": 40,
                         "dice_weight": 0.5},
    "F-c4pre-8e3-8k": {"model": "fcn8s", "pre": "c4", "lr": 8e-3, "epochs": 10, "n_train": 8000},
    "G-psp-c4pre-6e3": {"model": "pspnet", "pre": "c4", "lr": 6e-3, "epochs": 35,
                        "model_kwargs": {"head_channels": 128, "aux_channels": 64}},
    "H-unet16-1e2": {"model": "unet", "lr": 1e-2, "epochs": 52, "model_kwargs": UNET16},
    "I-c4scratch-8e3": {"model": "fcn8s", "backbone": "convnet", "lr": 8e-3, "epochs": 46,
                        "model_kwargs": {"widths": C4}},
    "J-unet16-1e2-8k": {"model": "unet", "lr": 1e-2, "epochs": 13, "n_train": 8000,
                        "model_kwargs": UNET16},
    "K-unet16-1e2-8k-24ep": {"model": "unet", "lr": 1e-2, "epochs": 24, "n_train": 8000,
                             "model_kwargs": UNET16},
    "L-c4pre-8e3-8k-24ep": {"model": "fcn8s", "pre": "c4", "lr": 8e-3, "epochs": 24,
                            "n_train": 8000},
    "M-unet32-5e3-8k-12ep": {"model": "unet", "lr": 5e-3, "epochs": 12, "n_train": 8000,
                             "model_kwargs": {"width": 32, "depth": 4}},
    "N-unet16-1e2-8k-full": {"model": "unet", "lr": 1e-2, "epochs": 13, "n_train": 8000,
                             "source": FULL, "model_kwargs": UNET16},
    "O-unet16-1e2-8k-full-24ep": {"model": "unet", "lr": 1e-2, "epochs": 24, "n_train": 8000,
                                  "source": FULL, "model_kwargs": UNET16},
    "P-unet32-5e3-8k-full-30ep": {"model": "unet", "lr": 5e-3, "epochs": 30, "n_train": 8000,
                                  "source": FULL, "model_kwargs": {"width": 32, "depth": 4}},
    "Q-unet32-5e3-8k-30ep": {"model": "unet", "lr": 5e-3, "epochs": 30, "n_train": 8000,
                             "model_kwargs": {"width": 32, "depth": 4}},
}  # fmt: skip
"""``pre``: the encoder is the Fashion-MNIST ``convnet`` of :mod:`pretrain` with 3 stages
(c3, strides 2-4-8) or 4 (c4, 2-4-8-16); the other keys are ``cnnzoo train`` options."""


def _data_dir(root: Path, n_train: int, source: str) -> Path:
    return root / f"scenes-{n_train}-{source}"


def _pretrain(runs: Path, stages: str, accelerator: str) -> Path:
    from pretrain import PRETRAIN, pretrained_backbone

    widths = C3 if stages == "c3" else C4
    out = runs / f"pretrain-{stages}"
    PRETRAIN["model_kwargs"] = {"widths": widths}
    PRETRAIN["accelerator"] = accelerator
    return pretrained_backbone(runs, existing=str(out))[0]


def _run(name: str, args: argparse.Namespace) -> None:
    from cnnzoo.families.assemble import flush_denormals
    from cnnzoo.workflows.train import TrainConfig, train

    recipe = dict(RECIPES[name])
    recipe["epochs"] = args.epochs or recipe["epochs"]
    n_train = recipe.pop("n_train", 2000)
    data = _data_dir(args.runs, args.n_train or n_train, recipe.pop("source", MINI))
    if recipe.get("pre"):
        recipe["backbone_weights"] = str(_pretrain(args.runs, recipe.pop("pre"), args.accelerator))
    flush_denormals()
    cfg = TrainConfig(data=f"scenes:{data}", out=str(args.runs / name), batch_size=16,
                      precision="bf16-mixed", channels_last=True, accelerator=args.accelerator,
                      val_fraction=0.05, snapshots=0, progress=False, num_workers=1,
                      max_time_minutes=args.max_minutes, **recipe)  # fmt: skip
    result = train(cfg)
    print(f"{name}: {result.epochs} epochs, {result.seconds:.0f} s, "
          f"test mIoU {result.metrics['test/miou']:.4f}", flush=True)  # fmt: skip


def _collect(runs: Path, names: list[str]) -> None:
    rows = []
    for name in names:
        path = runs / name / "metrics.json"
        if not path.is_file():
            continue
        done = json.loads(path.read_text())
        with open(runs / name / "metrics.csv") as f:
            curve = [round(float(r["val/miou"]), 4) for r in csv.DictReader(f) if r["val/miou"]]
        rows.append({"recipe": name, "options": RECIPES[name], "epochs": done["epochs"],
                     "seconds": done["seconds"], "test mIoU": done["metrics"]["test/miou"],
                     "pixel acc": done["metrics"]["test/pixel_accuracy"],
                     "class_iou": done.get("class_iou"), "val_miou_per_epoch": curve})  # fmt: skip
    lines = [
        "| recipe | epochs | s | test mIoU | pixel acc | worst class IoU |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        worst = min(r["class_iou"].items(), key=lambda kv: kv[1])
        lines.append(f"| {r['recipe']} | {r['epochs']} | {r['seconds']:.0f} | {r['test mIoU']:.4f}"
                     f" | {r['pixel acc']:.4f} | {worst[0]} {worst[1]:.3f} |")  # fmt: skip
    print("\n".join(lines))
    (runs / "results.md").write_text("\n".join(lines) + "\n")
    (runs / "results.json").write_text(json.dumps(rows, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", default=list(RECIPES), help="names in RECIPES")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--parallel", type=int, default=1, help="recipes trained at once")
    parser.add_argument("--max-minutes", type=float, default=None, help="cap per recipe")
    parser.add_argument("--epochs", type=int, default=None, help="override (quick checks)")
    parser.add_argument("--n-train", type=int, default=None, help="override (quick checks)")
    parser.add_argument("--runs", type=Path, default=Path("runs/seg-sweep"))
    parser.add_argument(
        "--fashion-mnist",
        default=None,
        help="folder of the full Fashion-MNIST (recipes ending in -full)",
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = sorted(set(args.recipes) - set(RECIPES))
    if unknown:
        parser.error(f"unknown recipes {unknown}; expected names from {list(RECIPES)}")
    if args.one:  # a child process: one recipe
        _run(args.recipes[0], args)
        return
    args.runs.mkdir(parents=True, exist_ok=True)
    sets = sorted({(args.n_train or RECIPES[n].get("n_train", 2000),
                    RECIPES[n].get("source", MINI)) for n in args.recipes})  # fmt: skip
    from cnnzoo.data.seg_datamodule import default_scenes
    from scenes_bench import train_scenes

    standard = default_scenes(args.runs)  # once, before the pool reads it
    with multiprocessing.Pool(len(sets)) as pool:  # generated before the children read them
        jobs = [(_data_dir(args.runs, n, s), n, s, args.fashion_mnist, standard) for n, s in sets]
        pool.starmap(train_scenes, jobs)
    for stages in sorted({RECIPES[n]["pre"] for n in args.recipes if "pre" in RECIPES[n]}):
        _pretrain(args.runs, stages, args.accelerator)
    start, pending, running = time.time(), list(args.recipes), []
    base = [sys.executable, __file__, "--one", "--accelerator", args.accelerator,
            "--runs", str(args.runs)]  # fmt: skip
    for option in ("max_minutes", "epochs", "n_train"):
        if getattr(args, option):
            base += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    while pending or running:
        while pending and len(running) < args.parallel:
            name = pending.pop(0)
            log = open(args.runs / f"{name}.log", "w")  # noqa: SIM115 (closed when done)
            running.append((subprocess.Popen([*base, name], stdout=log, stderr=log), log))
        time.sleep(2)
        for proc, log in [r for r in running if r[0].poll() is not None]:
            log.close()
            running.remove((proc, log))
    print(f"trained in {time.time() - start:.0f} s")
    _collect(args.runs, args.recipes)


if __name__ == "__main__":
    main()
