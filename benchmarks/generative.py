"""Train the autoencoder, the VAE and the DCGAN on Fashion-MNIST within a CPU time budget;
print reconstruction PSNR, VAE test ELBO and FID (cnnzoo Fashion-MNIST features).

Examples::

    python benchmarks/generative.py                          # ~15 minutes on 2 cores
    python benchmarks/generative.py --budget 30 --docs       # longer, pictures into docs/img/
    python benchmarks/generative.py vae dcgan --quick        # a one-minute smoke run

Each model trains with ``cnnzoo train``'s code path (:func:`cnnzoo.workflows.train.train`)
into a fresh run directory under ``--runs``, for at most its share of ``--budget`` (wall
minutes of training; conv_ae 3/14, vae 5/14, dcgan 6/14) or ``--epochs``, whichever ends
first. The test metrics are the run's ``metrics.json``: ``test/psnr`` (autoencoder),
``test/elbo`` in nats per image (VAE, higher is better), and ``test/fid`` — "FID (cnnzoo-fmnist
features)", *not* an Inception FID — between ``test/fid_samples`` test images and as many
samples (VAE, DCGAN; lower is better; compare FIDs only at the same sample count). The table
(markdown) is printed and written to ``--runs/results.md``, the rows to ``results.json``;
``--docs`` copies each run's ``plots/samples.png`` to ``docs/img/gen-<model>.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scenes_bench import write_results

RECIPES: dict[str, dict[str, Any]] = {
    "conv_ae": {"share": 3, "latent": 32, "scheduler": "none"},
    "vae": {"share": 5, "latent": 16, "beta": 1.0, "scheduler": "none"},
    "dcgan": {"share": 6, "latent": 100, "model_kwargs": {"ngf": 32, "ndf": 32}},
}
"""Options per model; ``share``: its part (of 14) of the training budget. A time cap cuts
training short, so the autoencoders keep Adam's learning rate constant (a one-cycle schedule
planned for ``--epochs`` would stop while still warming up); the GAN's is constant anyway.
The DCGAN's widths are halved from the paper's 64 so that it trains several epochs on a CPU."""
QUICK = {"budget": 1.0, "subset": 3000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(RECIPES), help="conv_ae vae dcgan")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--budget", type=float, default=14.0, help="training minutes in all")
    parser.add_argument("--epochs", type=int, default=30, help="at most, per model")
    parser.add_argument("--subset", type=int, default=None, help="first N training images")
    quick = f"smoke run: {QUICK['budget']:g} minute, {QUICK['subset']} training images"
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="runs/bench-generative")
    parser.add_argument("--docs", action="store_true", help="copy sample grids to docs/img/")
    args = parser.parse_args()
    unknown = [m for m in args.models if m not in RECIPES]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(RECIPES)}")
    budget = QUICK["budget"] if args.quick else args.budget
    subset = QUICK["subset"] if args.quick and args.subset is None else args.subset

    from cnnzoo.files import atomic_write_bytes
    from cnnzoo.tasks.fid import FID_NAME, extractor_metadata
    from cnnzoo.workflows.demo import free_run_dir
    from cnnzoo.workflows.train import TrainConfig, train

    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    shares = sum(RECIPES[m]["share"] for m in args.models)
    rows = []
    for name in args.models:
        recipe = {k: v for k, v in RECIPES[name].items() if k != "share"}
        minutes = budget * RECIPES[name]["share"] / shares
        cfg = TrainConfig(
            model=name, data=args.data, data_dir=args.data_dir,
            out=free_run_dir(str(runs / name)), epochs=args.epochs, subset=subset,
            val_fraction=0.0, seed=args.seed, progress=False, max_time_minutes=minutes,
            **recipe,
        )  # fmt: skip
        result = train(cfg)
        m = result.metrics
        options = {k: v for k, v in recipe.items() if k != "model_kwargs"}
        options.update(recipe.get("model_kwargs", {}))
        rows.append({
            "model": name,
            "options": options,
            "params": result.params,
            "epochs": result.epochs,
            "train_s": round(result.seconds, 1),
            "cap_min": round(minutes, 2),
            "psnr_db": round(m["test/psnr"], 2) if name == "conv_ae" else "-",
            "elbo_nats": round(m["test/elbo"], 2) if "test/elbo" in m else "-",
            "fid": round(m["test/fid"], 2) if "test/fid" in m else "-",
            "fid_samples": int(m["test/fid_samples"]) if "test/fid_samples" in m else "-",
            "run": str(result.run_dir),
        })  # fmt: skip
        print(rows[-1], flush=True)
        if args.docs:
            target = Path("docs/img") / f"gen-{name}.png"
            atomic_write_bytes(target, (result.run_dir / "plots" / "samples.png").read_bytes())
            print(f"copied {target}")
    meta = extractor_metadata()
    header = (
        f"Generative models on {args.data}{f' (first {subset} train images)' if subset else ''}"
        f", {budget:g} training minutes in all{' (--quick)' if args.quick else ''}; fid = "
        f"{FID_NAME} (convnet, test accuracy {meta['test_accuracy']}), not Inception FID"
    )
    columns = ["model", "options", "params", "epochs", "train_s", "cap_min", "psnr_db",
               "elbo_nats", "fid", "fid_samples"]  # fmt: skip
    write_results(runs, header, columns, rows)
    if args.docs:
        target = Path("docs") / "generative-results.json"
        atomic_write_bytes(target, (runs / "results.json").read_bytes())
        print(f"copied {target}")


if __name__ == "__main__":
    main()
