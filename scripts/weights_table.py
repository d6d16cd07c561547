"""The shipped weight sets as a markdown table, beside the project's earlier best measurement
for the same model on the same data (issue 18's target: each set at least matches it).

    python scripts/weights_table.py            # print the table
    python scripts/weights_table.py --write    # replace the table in docs/weights.md

The table is made from the shipped index (``src/cnnzoo/weights/shipped/index.json``), so the
docs cannot drift from what ships: ``tests/test_weights_shipped.py`` renders it again and
compares it with the docs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
INDEX = REPO / "src" / "cnnzoo" / "weights" / "shipped" / "index.json"
DOCS = REPO / "docs" / "weights.md"
BEGIN, END = "<!-- shipped-table -->", "<!-- /shipped-table -->"

BASELINES: dict[str, tuple[str, float, str]] = {
    "convnet.fmnist": ("test/accuracy", 0.9283, "demo recipe, benchmarks.md"),
    "resnet20.fmnist": ("test/accuracy", 0.93, "issue 18's figure"),
    "resnet20.fmnist_int8": ("test/accuracy", 0.93, "issue 18's figure"),
    "mobilenet_v2.fmnist": ("test/accuracy", 0.9066, "x0.5 QAT int8, embedded.md"),
    "googlenet.fmnist": ("test/accuracy", 0.869, "aux-loss experiment"),
    "unet.scenes": ("test/miou", 0.6254, "run H, segmentation.md"),
    "fcn8s.scenes": ("test/miou", 0.6240, "run D, segmentation.md"),
    "fast_rcnn.scenes": ("test/map_50", 0.6943, "detection.md"),
    "yolov3.scenes": ("test/map_50", 0.5747, "detection.md"),
    "ssd.scenes": ("test/map_50", 0.5269, "detection.md"),
    "conv_ae.fmnist": ("test/psnr", 21.03, "autoencoders.md"),
    "vae.fmnist": ("test/elbo", -242.2, "generative.md"),
    "dcgan.fmnist": ("test/fid", 15.5, "generative.md"),
}
"""Weight set -> (metric, the project's best earlier value, where it was measured). A set
without an entry had no earlier measurement (shufflenet on Fashion-MNIST; translation metrics
are new with issue 18)."""

_LOWER_IS_BETTER = ("test/fid", "test/l1", "test/mse", "test/fid_ab")
_FORMAT = {
    "test/accuracy": "accuracy {:.4f}", "test/miou": "mIoU {:.4f}",
    "test/pixel_accuracy": "pixel acc. {:.4f}", "test/map_50": "mAP@0.5 {:.4f}",
    "test/map": "mAP {:.4f}", "test/elbo": "ELBO {:.1f}", "test/fid": "FID {:.1f}",
    "test/psnr": "PSNR {:.2f} dB", "test/ssim": "SSIM {:.3f}", "test/l1": "L1 {:.4f}",
}  # fmt: skip


def _model(entry: dict[str, Any]) -> str:
    kwargs = {k: v for k, v in entry["spec"]["kwargs"].items()
              if k not in ("num_classes", "in_channels", "image_size")}  # fmt: skip
    options = ", ".join(f"{k}={v}" for k, v in kwargs.items()).replace(" ", "")
    return entry["spec"]["model"] + (f" ({options.replace(',', ', ')})" if options else "")


def _baseline(entry: dict[str, Any]) -> str:
    if entry["name"] not in BASELINES:
        return "none earlier"
    key, value, where = BASELINES[entry["name"]]
    got = entry["metrics"][key]
    met = got <= value if key in _LOWER_IS_BETTER else got >= value
    return f"{_FORMAT[key].format(value)} ({where}) {'met' if met else '**not met**'}"


def render(index: Path = INDEX) -> str:
    """Return the markdown table of the shipped sets in ``index``."""
    rows = [
        "| weight set | model (options) | test metrics | stored | earlier best |",
        "|---|---|---|---|---|",
    ]
    entries = json.loads(index.read_text())
    for entry in entries:
        metrics = ", ".join(_FORMAT[k].format(v) for k, v in entry["metrics"].items()
                            if k in _FORMAT)  # fmt: skip
        stored = f"{entry['storage']}, {entry['size'] / 2**20:.2f} MB"
        rows.append(f"| `{entry['name']}` | {_model(entry)} | {metrics} | {stored} | "
                    f"{_baseline(entry)} |")  # fmt: skip
    total = sum(e["size"] for e in entries) / 2**20
    rows.append(f"\n{len(rows) - 2} sets, {total:.1f} MB in all.")
    return "\n".join(rows)


def in_docs(text: str) -> str:
    """Return the table that ``text`` (docs/weights.md) holds between its markers.

    Raises:
        ValueError: the markers are missing.
    """
    if BEGIN not in text or END not in text:
        raise ValueError(f"docs/weights.md has no {BEGIN} ... {END} block")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the table in the docs")
    table = render()
    if not parser.parse_args().write:
        print(table)
        return
    text = DOCS.read_text()
    try:
        old = in_docs(text)
    except ValueError as err:
        sys.exit(str(err))
    DOCS.write_text(text.replace(old, table, 1))


if __name__ == "__main__":
    main()
