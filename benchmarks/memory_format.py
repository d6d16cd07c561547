"""Training-step time in each memory format (NCHW vs channels-last), per model and precision:
the measurement ``cnnzoo train --precision auto`` makes before it trains, over the lecture's
main models at their training shapes, with more rounds.

Examples::

    python benchmarks/memory_format.py                       # fp32 (+ bf16 where the CPU is fast)
    python benchmarks/memory_format.py --precision bf16-mixed --threads 1
    python benchmarks/memory_format.py --json docs/memory-format-results.json

Prints a Markdown table: seconds per forward-backward step in each format, their ratio, and
what ``--precision auto`` would choose (channels-last when at least 3 % faster).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from classification import machine
from cnnzoo.registry import create_model
from cnnzoo.tasks.memory_format import MARGIN, format_seconds
from cnnzoo.tasks.precision import cpu_has_fast_bf16

# model, builder options, input shape (N, C, H, W): the shapes `cnnzoo train` uses
CASES = [
    ("convnet", {"num_classes": 10, "in_channels": 1}, (256, 1, 28, 28)),
    ("resnet20", {"num_classes": 10, "in_channels": 1}, (128, 1, 28, 28)),
    ("unet", {"num_classes": 11, "in_channels": 3, "width": 16, "depth": 4}, (16, 3, 96, 96)),
    ("fcn8s", {"num_classes": 11, "in_channels": 3}, (16, 3, 96, 96)),
    ("yolov3", {"num_classes": 10, "in_channels": 3}, (16, 3, 96, 96)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", action="append", help="32-true, bf16-mixed (repeatable)")
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per format")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = args.precision or (["32-true"] + (["bf16-mixed"] if cpu_has_fast_bf16() else []))
    dtypes = {"32-true": None, "bf16-mixed": torch.bfloat16}
    rows = []
    print(f"{machine()}, {torch.get_num_threads()} threads, {args.rounds} rounds\n")
    print("| model | batch | precision | NCHW s/step | channels-last s/step | CL / NCHW | auto |")
    print("|---|---|---|---|---|---|---|")
    for name, kwargs, shape in CASES:
        model = create_model(name, **kwargs)
        x = torch.randn(*shape)
        for precision in precisions:
            seconds = format_seconds(model, x, autocast_dtype=dtypes[precision],
                                     rounds=args.rounds)  # fmt: skip
            ratio = seconds["channels_last"] / seconds["contiguous"]
            chosen = ratio < MARGIN
            rows.append({"model": name, "shape": list(shape), "precision": precision,
                         "seconds": seconds, "ratio": ratio, "channels_last": chosen})  # fmt: skip
            print(f"| {name} | {shape[0]}x{shape[2]}px | {precision} | "
                  f"{seconds['contiguous']:.3f} | {seconds['channels_last']:.3f} | "
                  f"{ratio:.2f} | {'channels-last' if chosen else 'NCHW'} |")  # fmt: skip
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": machine(), "threads": torch.get_num_threads(), "rows": rows}, indent=1
            )
        )


if __name__ == "__main__":
    main()
