"""Train detectors on the scenes dataset for a time budget; print mAP@0.5, mAP and speed.

Examples::

    python benchmarks/detection.py                         # yolov3, ssd, fast_rcnn
    python benchmarks/detection.py yolov3 --minutes 30     # one model, the issue's budget
    python benchmarks/detection.py --minutes 2 --epochs 2  # a quick look
    python benchmarks/detection.py fast_rcnn --train-scenes 8000 --fashion-mnist DIR  # more items

Each model follows its recipe in :data:`RECIPES` (sized for a 2-core CPU), trains into a fresh
run directory under --runs with ``cnnzoo.workflows.train.train`` (the code path of
``cnnzoo train``), and is stopped at --minutes if its epochs take longer. Inference speed is
the eval-mode forward pass plus decoding (NMS) over the first 128 test images. The table
(markdown) is printed and written to --runs/results.md and results.json with the machine it
ran on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from scenes_bench import resolve_recipe, shown_options, train_scenes, write_results

RECIPES: dict[str, dict[str, Any]] = {
    "yolov3": {"pretrained": True, "epochs": 7},
    "ssd": {"pretrained": True, "epochs": 7},
    "fast_rcnn": {"pretrained": True, "epochs": 4},
    "yolov1": {"pretrained": True, "epochs": 7},
    "yolov3-resnet18": {"model": "yolov3", "backbone": "resnet18", "epochs": 7},
}
"""Per recipe: ``cnnzoo train`` options (every model: scenes, batch 16, AdamW lr 1e-3,
one-cycle, bf16 autocast, channels-last). ``pretrained``: the backbone starts from the
shipped Fashion-MNIST classifier ``convnet.fmnist`` (``--backbone-weights convnet.fmnist``;
with ``--pretrain``: the classifier of :mod:`pretrain`, trained once per --runs folder, its
seconds in the table)."""


def inference_speed(run_dir: Path, data: Any, batch_size: int, precision: str) -> float:
    """Return test images per second of the saved model, decoding included (after a
    warm-up).

    Returns:
        The median over 3 passes of the first 128 test images.
    """
    import torch

    from cnnzoo.data.detection import detection_collate
    from cnnzoo.data.transforms import normalize_batch
    from cnnzoo.rundir import RunDir

    model, _ = RunDir.open(run_dir).load_model()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device, memory_format=torch.channels_last)
    view = data.splits["test"]
    images, _ = detection_collate([view[i] for i in range(min(128, len(view)))])
    x = normalize_batch(images, data.spec.mean, data.spec.std).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if precision.startswith("bf16") else None
    size = tuple(x.shape[-2:])

    def one_pass() -> float:
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, dtype, enabled=bool(dtype)):
            for i in range(0, len(x), batch_size):
                model.decode(model(x[i : i + batch_size]), size, 0.01, 0.5, 100)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    one_pass()  # warm-up
    return len(x) / statistics.median(one_pass() for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models", nargs="*", default=["yolov3", "ssd", "fast_rcnn"],
        help="recipes (RECIPES) or registered detection models",
    )  # fmt: skip
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget per model")
    parser.add_argument(
        "--time-boxed", action="store_true",
        help="fit epochs and lr schedule into --minutes (cnnzoo train --time) instead of the "
        "recipes' epochs cut at --minutes",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes'")
    parser.add_argument("--lr", type=float, default=None, help="override the recipes'")
    parser.add_argument(
        "--pretrained-run", default=None,
        help="an existing run of benchmarks/pretrain.py's recipe to start from (not retrained)",
    )  # fmt: skip
    parser.add_argument(
        "--pretrain", action="store_true",
        help="train the backbone with benchmarks/pretrain.py's recipe inside the budget instead "
        "of starting from the shipped convnet.fmnist",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument(
        "--data", default="scenes", help="scenes, or scenes:PATH of `cnnzoo data scenes`"
    )
    parser.add_argument("--data-dir", default=None, help="where the scenes are generated")
    parser.add_argument(
        "--train-scenes", type=int, default=None,
        help="train on this many scenes (items from --fashion-mnist if given, else the bundled "
        "ones) instead, tested on the default test scenes",
    )  # fmt: skip
    parser.add_argument("--fashion-mnist", default=None, help="folder of the full Fashion-MNIST")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--runs", default="runs/bench-det")
    args = parser.parse_args()

    from cnnzoo.data.det_datamodule import DetectionData
    from cnnzoo.families.assemble import flush_denormals
    from cnnzoo.workflows.demo import free_run_dir
    from cnnzoo.workflows.train import TrainConfig, train

    flush_denormals()
    runs = Path(free_run_dir(args.runs))
    if args.train_scenes:
        from cnnzoo.data.seg_datamodule import default_scenes

        standard = default_scenes(args.data_dir)
        source = "fashion-mnist" if args.fashion_mnist else "fashion-mnist-mini"
        folder = runs / f"scenes-{args.train_scenes}-{source}"
        train_scenes(folder, args.train_scenes, source, args.fashion_mnist, standard)
        args.data = f"scenes:{folder}"
    rows = []
    for name in args.models:
        model, epochs, lr, recipe, pretrain_s = resolve_recipe(name, RECIPES, args, runs)
        cfg = TrainConfig(
            model=model, data=args.data, data_dir=args.data_dir, out=str(runs / name),
            epochs=epochs, lr=lr, batch_size=args.batch_size, precision=args.precision,
            channels_last=True, accelerator=args.accelerator,
            max_time_minutes=None if args.time_boxed else args.minutes,
            time_minutes=args.minutes if args.time_boxed else None,
            val_fraction=0.05, snapshots=4, progress=False, num_workers=args.num_workers,
            **recipe,
        )  # fmt: skip
        result = train(cfg)
        data = DetectionData(args.data, data_dir=args.data_dir, val_fraction=0.05)
        speed = inference_speed(result.run_dir, data, 32, args.precision)
        rows.append(
            {
                "model": name,
                "options": shown_options(recipe, pretrain_s),
                "params (M)": round(result.params / 1e6, 2),
                "epochs": result.epochs,
                "pretrain s": round(pretrain_s, 1),
                "train s": round(result.seconds, 1),
                "train img/s": round(result.steps * args.batch_size / result.seconds, 1),
                "test mAP@0.5": round(result.metrics["test/map_50"], 4),
                "test mAP": round(result.metrics["test/map"], 4),
                "infer img/s": round(speed, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    columns = ["model", "options", "params (M)", "epochs", "pretrain s", "train s",
               "train img/s", "test mAP@0.5", "test mAP", "infer img/s"]  # fmt: skip
    header = (
        f"{args.data} (default scenes: 2000 train incl. 5 % val, 400 test, 96x96, 10 classes); "
        f"{args.precision}, channels-last, batch {args.batch_size}, AdamW + one-cycle, "
        f"<= {args.minutes} min per model"
    )
    write_results(runs, header, columns, rows)


if __name__ == "__main__":
    main()
