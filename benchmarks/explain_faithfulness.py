"""Deletion/insertion faithfulness of every attribution method, against a random order.

Examples::

    python benchmarks/explain_faithfulness.py                       # resnet20.fmnist, 100 images
    python benchmarks/explain_faithfulness.py convnet.fmnist --images 50
    python benchmarks/explain_faithfulness.py fcn8s.scenes yolov3.scenes --images 20

For each weight set (or run directory) and method, the top prediction of each test image
(classification: top class; segmentation: largest non-background region; detection: best
box) is explained and scored by :func:`cnnzoo.explain.faithfulness.deletion_insertion`.
The table gives mean ± std over images: deletion area (lower is better), insertion area
(higher is better), the same for a random pixel order, the share of images where the map
beats the random order on both, and seconds per map.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np


def images_for(spec: dict, n: int, scenes_dir: Path) -> list:
    """Return ``n`` test images as uint8 ``(C, H, W)`` tensors for the run's data."""
    import torch

    from cnnzoo.data.fashion_mnist import read_idx

    if spec.get("task", "classification") == "classification":
        bundled = Path(__file__).parents[1] / "src/cnnzoo/data/bundled"
        images = read_idx(bundled / "fashion-mnist-mini-t10k-images-idx3-ubyte.gz")[:n]
        return [img[None] for img in images]
    from cnnzoo.data.folder import load_image
    from cnnzoo.data.scenes import generate_scenes

    root = generate_scenes(scenes_dir, n_train=8, n_test=max(n, 100))  # reusable by -n
    files = sorted((root / "images" / "test").glob("*.png"))[:n]
    return [load_image(f, spec["data"]["in_channels"]).to(torch.uint8) for f in files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=["resnet20.fmnist"])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--methods", default="gradcam,gradcam++,layercam,scorecam,occlusion")
    parser.add_argument("--scenes", default="runs/bench-scenes", help="scenes are made here")
    args = parser.parse_args()

    import torch

    from cnnzoo.data.transforms import normalize_batch
    from cnnzoo.explain.cam import explain
    from cnnzoo.explain.faithfulness import deletion_insertion
    from cnnzoo.explain.targets import explainable
    from cnnzoo.rundir import RunDir

    header = (
        "| model | method | deletion ↓ | insertion ↑ | random del | random ins "
        "| beats random | s/map |"
    )
    lines = [header, "|" + "---|" * 8]
    for name in args.runs:
        run = RunDir.open(name)
        model, spec = run.load_model()
        task, data = spec.get("task", "classification"), spec["data"]
        names = data["class_names"]
        pictures = images_for(spec, args.images, Path(args.scenes))
        net = explainable(model, task)
        inputs = []
        for image in pictures:
            x = normalize_batch(image[None], tuple(data["mean"]), tuple(data["std"]))
            size = spec.get("resize_to")
            if size is not None:
                pair = (size, size) if isinstance(size, int) else tuple(size)
                x = torch.nn.functional.interpolate(x, size=pair, mode="bilinear")
            inputs.append(x)
        for method in args.methods.split(","):
            explain(model, inputs[0], task, names, method, topk=1)  # warm-up: not timed
            rows, seconds = [], 0.0
            for x in inputs:
                start = time.perf_counter()
                found = explain(model, x, task, names, method, topk=1)
                seconds += time.perf_counter() - start
                if not found:
                    continue
                f = deletion_insertion(net, x, found[0].subject, found[0].heatmap)
                rows.append([f.deletion, f.insertion, f.random_deletion, f.random_insertion])
            if not rows:
                continue
            a = np.asarray(rows)
            wins = np.mean((a[:, 0] < a[:, 2]) & (a[:, 1] > a[:, 3]))

            def ms(col: int, a: np.ndarray = a) -> str:
                return f"{a[:, col].mean():.3f} ± {a[:, col].std():.3f}"

            lines.append(
                f"| {run.label} | {method} | {ms(0)} | {ms(1)} | {ms(2)} | {ms(3)} | "
                f"{wins:.0%} | {seconds / len(pictures):.2f} |"
            )
            print(lines[-1], flush=True)
    print(
        f"\n{args.images} test images per model; mean ± std over images; "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}.\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
