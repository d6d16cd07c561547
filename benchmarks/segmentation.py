"""Train segmentation models on the scenes dataset for a time budget; print mIoU and speed.

Examples::

    python benchmarks/segmentation.py                        # fcn8s, segnet, pspnet, unet
    python benchmarks/segmentation.py unet --epochs 20       # one model, another length
    python benchmarks/segmentation.py --minutes 2            # a shorter budget per model
    python benchmarks/segmentation.py unet-20min --minutes 20 # the best recipe, whole budget

Each model follows its recipe in :data:`RECIPES` (sized for a 2-core CPU: about 5 minutes
each, 20 minutes for the four), trains into a fresh run directory under --runs with
``cnnzoo.workflows.train.train`` (the code path of ``cnnzoo train``), and is stopped at
--minutes if its epochs take longer. The table (markdown) is printed and written to
--runs/results.md and results.json with the machine it ran on.
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
from scenes_bench import resolve_recipe, shown_options, write_results

RECIPES: dict[str, dict[str, Any]] = {
    "fcn8s": {"backbone": "resnet18", "epochs": 11, "lr": 2e-3},
    "segnet": {
        "model_kwargs": {"widths": [16, 32, 64, 128, 128], "depths": [2, 2, 3, 3, 3]},
        "epochs": 13,
        "lr": 3e-3,
    },
    "pspnet": {
        "backbone": "resnet18",
        "model_kwargs": {"dilated": True, "head_channels": 256, "aux_channels": 128},
        "epochs": 3,
        "lr": 2e-3,
    },
    "unet": {"model_kwargs": {"width": 16, "depth": 4}, "epochs": 12, "lr": 3e-3},
    "unet-20min": {
        "model": "unet",
        "model_kwargs": {"width": 16, "depth": 4},
        "epochs": 52,
        "lr": 1e-2,
    },
    "fcn8s-pretrained": {"model": "fcn8s", "pretrained": True, "epochs": 12, "lr": 2e-3},
}
"""Per recipe: ``cnnzoo train`` options (every model: scenes, batch 16, AdamW, one-cycle,
bf16 autocast, channels-last). ``pretrained``: the encoder starts from the shipped
Fashion-MNIST classifier ``convnet.fmnist`` (``--backbone-weights convnet.fmnist``; with
``--pretrain``: the classifier of :mod:`pretrain`, trained once per --runs folder, its seconds
in the table)."""


def inference_speed(run_dir: Path, data: Any, batch_size: int, precision: str) -> float:
    """Return test images per second of the saved model (eval mode, after a warm-up).

    Returns:
        The median over 3 passes of the first 128 test images.
    """
    import torch

    from cnnzoo.data.seg_datamodule import pad_collate
    from cnnzoo.data.transforms import normalize_batch
    from cnnzoo.rundir import RunDir

    model, _ = RunDir.open(run_dir).load_model()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device, memory_format=torch.channels_last)
    view = data.splits["test"]
    images, _ = pad_collate([view[i] for i in range(min(128, len(view)))])
    x = normalize_batch(images, data.spec.mean, data.spec.std).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if precision.startswith("bf16") else None

    def one_pass() -> float:
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, dtype, enabled=bool(dtype)):
            for i in range(0, len(x), batch_size):
                model(x[i : i + batch_size])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    one_pass()  # warm-up
    return len(x) / statistics.median(one_pass() for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models", nargs="*", default=["fcn8s", "segnet", "pspnet", "unet"],
        help="registered models or recipe names (see RECIPES)",
    )  # fmt: skip
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per model")
    parser.add_argument(
        "--time-boxed", action="store_true",
        help="fit epochs and lr schedule into --minutes (cnnzoo train --time) instead of the "
        "recipes' epochs cut at --minutes",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes'")
    parser.add_argument("--lr", type=float, default=None, help="override the recipes'")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--data-dir", default=None, help="where the scenes are generated")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--runs", default="runs/bench-seg")
    parser.add_argument(
        "--pretrained-run", default=None,
        help="an existing run of benchmarks/pretrain.py's recipe to start from (not retrained)",
    )  # fmt: skip
    parser.add_argument(
        "--pretrain", action="store_true",
        help="train the backbone with benchmarks/pretrain.py's recipe inside the budget instead "
        "of starting from the shipped convnet.fmnist",
    )  # fmt: skip
    args = parser.parse_args()

    from cnnzoo.data.seg_datamodule import SegmentationData
    from cnnzoo.families.assemble import flush_denormals
    from cnnzoo.workflows.demo import free_run_dir
    from cnnzoo.workflows.train import TrainConfig, train

    flush_denormals()
    runs = Path(free_run_dir(args.runs))
    rows = []
    for name in args.models:
        model, epochs, lr, recipe, pretrain_s = resolve_recipe(name, RECIPES, args, runs)
        cfg = TrainConfig(
            model=model, data="scenes", data_dir=args.data_dir, out=str(runs / name),
            epochs=epochs, lr=lr, batch_size=args.batch_size, precision=args.precision,
            channels_last=True, accelerator=args.accelerator,
            max_time_minutes=None if args.time_boxed else args.minutes,
            time_minutes=args.minutes if args.time_boxed else None,
            val_fraction=0.05, snapshots=4, progress=False, num_workers=args.num_workers,
            **recipe,
        )  # fmt: skip
        result = train(cfg)
        data = SegmentationData("scenes", data_dir=args.data_dir, val_fraction=0.05)
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
                "test mIoU": round(result.metrics["test/miou"], 4),
                "pixel acc": round(result.metrics["test/pixel_accuracy"], 4),
                "infer img/s": round(speed, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    columns = ["model", "options", "params (M)", "epochs", "pretrain s", "train s",
               "train img/s", "test mIoU", "pixel acc", "infer img/s"]  # fmt: skip
    header = (
        f"scenes (2000 train incl. 5 % val, 400 test, 96x96, 11 classes); "
        f"{args.precision}, channels-last, batch {args.batch_size}, AdamW + one-cycle, "
        f"<= {args.minutes} min per model"
    )
    write_results(runs, header, columns, rows)


if __name__ == "__main__":
    main()
