"""He et al. 2016 Fig. 6 at a longer budget: plain vs ResNet, 20 vs 56 layers, trained longer.

    python benchmarks/vanishing_long.py --steps 12800 --device cuda --out runs/vanishing-long

``cnnzoo experiment vanishing-gradients`` trains its nets for 800 steps (what 2 CPU cores do
in about 11 minutes). There the degradation problem shows (plain-56 trains worse than
plain-20) but the paper's other half -- ResNet-56 *better* than ResNet-20 -- does not: 800
steps are too few for the deeper net. This script trains the same four ReLU + BN nets with
the experiment's own loop and settings (SGD Nesterov lr 0.05, cosine decay, batch 32, no
augmentation, one seed), only for more steps, one process per net in parallel, on any device.
It writes ``results.md``, ``results.json`` (curves, errors, seconds, device) and
``error-curves.png`` into --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

NETS = ("plain20", "plain56", "resnet20", "resnet56")


def _one(net: str, args: argparse.Namespace) -> None:
    import torch

    from cnnzoo.experiments import fashion_mnist_name
    from cnnzoo.experiments.vanishing_gradients import (
        VanishingSettings,
        load_data,
        parse_net,
        train_net,
    )

    settings = replace(VanishingSettings(), steps=args.steps, eval_points=args.eval_points,
                       test_images=10_000)  # fmt: skip
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    data = tuple(t.to(device) for t in load_data(fashion_mnist_name()))
    torch.manual_seed(settings.seed)
    spec = parse_net(net)
    model = spec.build().to(device)
    start = time.perf_counter()
    curve = train_net(model, data, settings)
    curve["seconds"] = time.perf_counter() - start
    curve["label"] = spec.label
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    out = {"net": net, "device": name, "settings": asdict(settings), **curve}
    (args.out / f"{net}.json").write_text(json.dumps(out, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12_800)
    parser.add_argument("--eval-points", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--nets", nargs="+", default=list(NETS))
    parser.add_argument("--out", type=Path, default=Path("runs/vanishing-long"))
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _one(args.one, args)
        return
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} already exists; choose another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, __file__, "--steps", str(args.steps), "--eval-points",
            str(args.eval_points), "--device", args.device, "--out", str(args.out)]  # fmt: skip
    procs = [subprocess.Popen([*base, "--one", net]) for net in args.nets]
    codes = [p.wait() for p in procs]
    results = {}
    for net in args.nets:
        path = args.out / f"{net}.json"
        if path.is_file():
            results[net] = json.loads(path.read_text())
    lines = [
        f"{args.steps} steps of 32 images, final errors (test: all 10,000 test images)",
        "",
        "| net | train error (last interval) | test error | seconds | device |",
        "|---|---|---|---|---|",
    ]
    for r in results.values():
        lines.append(f"| {r['label']} | {r['train_error'][-1]:.4f} | {r['test_error'][-1]:.4f} "
                     f"| {r['seconds']:.0f} | {r['device']} |")  # fmt: skip
    print("\n".join(lines))
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    if results:
        from cnnzoo.experiments.vanishing_gradients import plot_curves

        plot_curves({r["label"]: r for r in results.values()}, args.out / "error-curves.png")
    if any(codes):
        sys.exit(f"a net failed (exit codes {codes})")


if __name__ == "__main__":
    main()
