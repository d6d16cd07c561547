"""The shipped weight sets, measured: each one's metric on its real test data (again, from the
stored file) and the wall time of using it from a fresh process, as a user would right after
installing (``cnnzoo predict NAME image.png``; ``sample`` for generators, ``translate`` for
translation models, ``eval`` for autoencoders is left out: it is a test-set pass).

    python benchmarks/weights.py                    # every shipped set
    python benchmarks/weights.py convnet.fmnist --repeats 5
    python benchmarks/weights.py --docs             # also write docs/weights-results.json

The target (issue 18): ``cnnzoo predict NAME image.png`` under 3 s wall on 2 CPU cores. The
median of ``--repeats`` runs is reported; the first run of each set is a warm-up (the OS file
cache), not counted. The table (markdown) names the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from classification import machine

DOCS = Path(__file__).resolve().parent.parent / "docs" / "weights-results.json"


def sample_input(task: str, data: str | None, folder: Path) -> Path | None:
    """One test image of the weight set's data, written to ``folder``, or None when the
    command takes none."""
    import numpy as np
    from PIL import Image

    if task == "classification" or (task == "translation" and data == "fmnist-edges"):
        from cnnzoo.data.fashion_mnist import load_fashion_mnist

        images = load_fashion_mnist("test")[0][:1]
        if task == "translation":
            from cnnzoo.data.translation import sobel_edges  # the built-in task's A domain

            images = sobel_edges(images)
        array = np.asarray(images[0][0])
        path = folder / "input.png"
        Image.fromarray(array).save(path)
        return path
    if task in ("segmentation", "detection"):
        from cnnzoo.data.seg_datamodule import default_scenes

        return sorted((default_scenes() / "images" / "test").iterdir())[0]
    return None


def command(name: str, task: str, image: Path | None, out: Path) -> list[str] | None:
    """The ``cnnzoo`` command that uses the weight set, or None."""
    base = [sys.executable, "-m", "cnnzoo.cli"]
    if task in ("classification", "segmentation", "detection") and image is not None:
        return [*base, "predict", name, str(image), "--out", str(out), "--overwrite"]
    if task == "generation":
        return [*base, "sample", name, "-n", "16", "--out", str(out / "grid.png"), "--overwrite"]
    if task == "translation" and image is not None:
        return [*base, "translate", name, str(image), "--out", str(out / "t.png"), "--overwrite"]
    return None


def wall_seconds(cmd: list[str], repeats: int) -> float:
    """Median wall time of ``cmd`` over ``repeats`` runs after one warm-up run."""
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
        if i:
            times.append(elapsed)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="shipped weight sets (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-metrics", action="store_true", help="time the commands only")
    parser.add_argument("--docs", action="store_true", help=f"write {DOCS}")
    args = parser.parse_args()

    import make_weights

    import cnnzoo

    shipped = [ws for ws in cnnzoo.weights.list_weights() if ws.shipped]
    chosen = [ws for ws in shipped if not args.names or ws.name in args.names]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ws in chosen:
            row = {"name": ws.name, "task": ws.task, "storage": ws.storage,
                   "size_mb": round(ws.size / 2**20, 2), "listed": ws.metrics}  # fmt: skip
            if not args.no_metrics:
                row["measured"] = (make_weights.measure_onnx(ws.name) if ws.storage == "onnx"
                                   else make_weights.evaluate_named(ws.name, ws.task))  # fmt: skip
            image = sample_input(ws.task, ws.dataset, Path(tmp))
            cmd = command(ws.name, ws.task, image, Path(tmp) / ws.name)
            if cmd is not None and ws.storage != "onnx":
                row["command"] = " ".join(["cnnzoo", *cmd[3:4], ws.name, "..."])
                row["wall_s"] = round(wall_seconds(cmd, args.repeats), 2)
            rows.append(row)
            print(row, flush=True)
    header = f"Shipped weight sets; {machine()}"
    columns = ["weight set", "storage", "MB", "metric (listed)", "measured", "use", "wall s"]
    lines = [header, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        key, listed = next(iter(r["listed"].items()))
        measured = r.get("measured", {}).get(key)
        shown = f"{measured:.4f}" if measured is not None else "-"
        lines.append(f"| {r['name']} | {r['storage']} | {r['size_mb']} | {key} {listed:.4f} | "
                     f"{shown} | {r.get('command', '-')} | {r.get('wall_s', '-')} |")  # fmt: skip
    print("\n".join(lines))
    if args.docs:
        DOCS.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
