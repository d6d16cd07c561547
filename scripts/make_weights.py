"""Make the weight sets that ship with cnnzoo: train each from its recipe, measure it, package it.

Run from the repository root with the full Fashion-MNIST installed::

    .venv/bin/python scripts/make_weights.py train resnet20.fmnist      # -> runs/weights/NAME
    .venv/bin/python scripts/make_weights.py package resnet20.fmnist    # -> the shipped file
    .venv/bin/python scripts/make_weights.py list                       # recipes and state

``train`` runs ``cnnzoo train``'s own code path (``cnnzoo.workflows.train.train``) with the
recipe below on the CPU (``--accelerator gpu`` for a GPU; an epoch gives the same accuracy
wherever it runs), seed 0, into ``runs/weights/NAME`` (an existing run is kept unless
``--overwrite``). ``package`` stores the run's weights in the recipe's storage type (fp16 or
int8, see :mod:`cnnzoo.weights.storage`), measures the *stored* weights on the test split
with ``cnnzoo eval``'s code path and records file, sha256, metrics and recipe in
``src/cnnzoo/weights/shipped/index.json``, which the registry reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RUNS = REPO / "runs" / "weights"

_CLS = {
    "data": "fashion-mnist", "batch_size": 256, "optimizer": "sgd", "lr": 0.1, "nesterov": True,
    "weight_decay": 5e-4, "scheduler": "onecycle", "label_smoothing": 0.1, "val_fraction": 0.0,
    "precision": "bf16-mixed", "channels_last": True,
}  # fmt: skip
"""The demo's classification recipe (docs/benchmarks.md): SGD + Nesterov, one-cycle lr 0.1,
label smoothing 0.1, crop + flip, bf16 autocast with channels-last, all 60,000 images."""
_SCENES = {
    "data": "scenes", "batch_size": 16, "optimizer": "adamw", "scheduler": "onecycle",
    "precision": "bf16-mixed", "channels_last": True, "val_fraction": 0.05, "snapshots": 0,
}  # fmt: skip
"""The scenes benchmarks' recipe (docs/segmentation.md, docs/detection.md)."""
_GEN = {"data": "fashion-mnist", "val_fraction": 0.0}

RECIPES: dict[str, dict[str, Any]] = {
    "convnet.fmnist": {**_CLS, "epochs": 15, "model_kwargs": {"widths": [32, 64, 128]},
                       "storage": "int8"},
    "convnet.fmnist_w16": {**_CLS, "epochs": 10, "model_kwargs": {"widths": [16, 32, 64]},
                           "precision": "32-true", "channels_last": False, "storage": "int8"},
    "resnet20.fmnist": {**_CLS, "epochs": 20, "storage": "int8"},
    "mobilenet_v2.fmnist": {**_CLS, "epochs": 12, "model_kwargs": {"width": 0.5},
                            "storage": "int8"},
    "shufflenet_v2_x1_0.fmnist": {**_CLS, "epochs": 12, "storage": "int8"},
    "googlenet.fmnist": {**_CLS, "epochs": 8, "storage": "int8",
                         "ship_kwargs": {"aux_logits": False}},
    "unet.scenes": {**_SCENES, "epochs": 80, "lr": 1e-2, "storage": "int8",
                    "model_kwargs": {"width": 16, "depth": 4}},
    "fcn8s.scenes": {**_SCENES, "epochs": 50, "lr": 8e-3, "backbone": "convnet", "storage": "int8",
                     "model_kwargs": {"widths": [32, 64, 128, 256]}},
    "yolov3.scenes": {**_SCENES, "epochs": 30, "lr": 1e-3, "backbone_weights": "convnet.fmnist"},
    "ssd.scenes": {**_SCENES, "epochs": 30, "lr": 1e-3, "backbone_weights": "convnet.fmnist",
                   "storage": "int8"},
    "fast_rcnn.scenes": {**_SCENES, "epochs": 16, "lr": 1e-3, "storage": "int8",
                         "backbone_weights": "convnet.fmnist",
                         "model_kwargs": {"head_channels": 512}},
    "conv_ae.fmnist": {**_GEN, "epochs": 12, "latent": 32, "scheduler": "none"},
    "vae.fmnist": {**_GEN, "epochs": 16, "latent": 16, "beta": 1.0, "scheduler": "none"},
    "dcgan.fmnist": {**_GEN, "epochs": 20, "latent": 100,
                     "model_kwargs": {"ngf": 32, "ndf": 32}},
    "pix2pix.fmnist_edges": {"data": "fmnist-edges", "val_fraction": 0.0, "epochs": 4,
                             "batch_size": 64, "storage": "int8",
                             "model_kwargs": {"ngf": 32, "ndf": 32, "depth": 4}},
    "resnet20.fmnist_int8": {"compress": "resnet20.fmnist", "quantize": "int8",
                             "calibration": 512, "storage": "onnx"},
}  # fmt: skip
"""Per weight set (``MODEL.TAG``): the ``cnnzoo train`` options (``compress``: the
``cnnzoo compress`` options applied to that shipped weight set instead). ``backbone_weights`` names
another weight set of this table, trained first. ``storage`` (default fp16) and
``ship_kwargs`` (builder options of the shipped model, e.g. without GoogLeNet's auxiliary
heads) say how it is packaged."""
_PACKAGING = ("storage", "ship_kwargs")


def run_dir(name: str) -> Path:
    return RUNS / name


def train_one(name: str, accelerator: str, overwrite: bool, resume: bool = False) -> None:
    from cnnzoo.families.assemble import flush_denormals
    from cnnzoo.weights import is_weight_name
    from cnnzoo.workflows.train import TrainConfig, train

    recipe = {k: v for k, v in RECIPES[name].items() if k not in _PACKAGING}
    out = run_dir(name)
    if (out / "metrics.json").is_file() and not overwrite:
        print(f"{name}: {out} exists (pass --overwrite to train again)")
        return
    if "compress" in recipe:
        from cnnzoo.workflows.compress import CompressConfig, compress

        cfg = CompressConfig(source=recipe.pop("compress"), out=str(out), seed=0,
                             accelerator=accelerator, overwrite=overwrite, progress=False,
                             **recipe)  # fmt: skip
        result = compress(cfg)
        print(f"{name}: {result.metrics}", flush=True)
        return
    backbone = recipe.get("backbone_weights")
    if backbone in RECIPES and not is_weight_name(backbone):  # not shipped yet: its run
        recipe["backbone_weights"] = str(run_dir(backbone))
    flush_denormals()
    resume = resume and (out / "checkpoints" / "last.ckpt").is_file()
    cfg = TrainConfig(model=name.split(".")[0], out=str(out), seed=0, progress=False,
                      accelerator=accelerator, overwrite=overwrite, resume=resume,
                      **recipe)  # fmt: skip
    result = train(cfg)
    print(f"{name}: {result.epochs} epochs, {result.seconds:.0f} s, {result.metrics}", flush=True)


SHIPPED = REPO / "src" / "cnnzoo" / "weights" / "shipped"
_PORTABLE = ("out", "data_dir", "resume", "overwrite", "progress", "accelerator", "devices",
             "num_nodes", "backbone_weights", "weights", "resolved")  # fmt: skip
"""config.yaml keys that name this machine's paths or hardware: not shipped."""
_TRAINED_ON = {
    "fashion-mnist": "Fashion-MNIST train (60,000 images, 28x28 gray)",
    "scenes": "the scenes (2,000 generated 96x96 scenes of bundled Fashion-MNIST items)",
    "fmnist-edges": "Fashion-MNIST edges -> items (paired, 28x28)",
}
_LICENSE = "MIT (cnnzoo); trained on Fashion-MNIST (MIT, Zalando SE)"


def as_command(name: str) -> str:
    """The recipe as the ``cnnzoo train`` command it amounts to (seed 0, CPU)."""
    recipe = {k: v for k, v in RECIPES[name].items() if k not in _PACKAGING}
    parts = [f"cnnzoo train {name.split('.')[0]}"]
    for key, value in recipe.items():
        if key == "model_kwargs":
            parts += [f"--model-arg {k}={json.dumps(v).replace(' ', '')}" for k, v in value.items()]
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif value is False:
            parts.append(f"--no-{key.replace('_', '-')}")
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts) + f"   (scripts/make_weights.py train {name})"


def evaluate_named(name: str, task: str) -> dict[str, float]:
    """Measure a registered weight set on its test split with ``cnnzoo eval``'s code path.

    Returns:
        Metrics keyed ``test/<name>``.
    """
    if task == "classification":
        from cnnzoo.families.classification.evaluate import evaluate

        r = evaluate(name, plot=False)
        return {"test/accuracy": round(r.accuracy, 6)}
    if task == "segmentation":
        from cnnzoo.families.segmentation.evaluate import evaluate_segmentation

        r = evaluate_segmentation(name, plot=False)
        return {"test/miou": round(r.miou, 6), "test/pixel_accuracy": round(r.pixel_accuracy, 6)}
    if task == "detection":
        from cnnzoo.families.detection.evaluate import evaluate_detection

        r = evaluate_detection(name, plot=False)
        return {"test/map_50": round(r.map_50, 6), "test/map": round(r.map, 6)}
    from cnnzoo.families.generative.evaluate import evaluate_reconstruction, evaluate_translation

    measure = evaluate_translation if task == "translation" else evaluate_reconstruction
    values = {f"test/{k}": round(v, 6) for k, v in measure(name).items()
              if k not in ("fid_samples", "loss")}  # fmt: skip
    first = [k for k in _MAIN_METRICS if k in values]  # the one `weights list` shows first
    return {k: values[k] for k in first + [k for k in values if k not in first]}


_MAIN_METRICS = ("test/elbo", "test/fid", "test/psnr", "test/l1", "test/fid_ab")


def package_one(name: str, storage: str | None = None) -> None:
    """Store a trained run's weights in the recipe's storage, measure the stored file and
    record it in the shipped index."""
    if "compress" in RECIPES[name]:
        package_onnx(name)
        return
    from safetensors.torch import save

    import cnnzoo
    from cnnzoo.files import atomic_write_bytes, sha256_file
    from cnnzoo.rundir import RunDir
    from cnnzoo.weights.entry import WeightSet
    from cnnzoo.weights.storage import encode

    recipe = RECIPES[name]
    run = RunDir.open(run_dir(name))
    spec = run.read_spec()
    spec.pop("sha256", None)  # the run's file hash; the weight set records its own
    ship = recipe.get("ship_kwargs", {})
    spec["kwargs"] = {**spec["kwargs"], **ship}
    model = cnnzoo.create_model(spec["model"], **spec["kwargs"])
    cnnzoo.load_weights(model, run.path)  # modules left out by ship_kwargs are dropped
    storage = storage or recipe.get("storage", "fp16")
    tensors, header = encode(model.state_dict(), storage)
    file = SHIPPED / f"{name}.safetensors"
    atomic_write_bytes(file, save(tensors, metadata=header))
    run_metrics = run.read_metrics()
    config = {k: v for k, v in run.read_config().items() if k not in _PORTABLE}
    data = config.get("data", "")
    entry = WeightSet(
        name=name, spec=spec, file=file.name, sha256=sha256_file(file),
        size=file.stat().st_size, storage=storage, trained_on=_TRAINED_ON.get(data, data),
        dataset=data, license=_LICENSE, config=config,
        recipe=as_command(name),
    )  # fmt: skip
    cnnzoo.weights.register(entry, replace=True)
    measured = evaluate_named(name, entry.task)
    fp32 = {k: run_metrics.get("metrics", {}).get(k) for k in measured}
    notes = (f"{run_metrics.get('epochs')} epochs, {run_metrics.get('seconds', 0) / 60:.1f} "
             f"training minutes on {recipe_machine()}; fp32 run: "
             + ", ".join(f"{k} {v:.4f}" for k, v in fp32.items() if v is not None))  # fmt: skip
    _write_row(entry, measured, notes)
    print(f"{name}: {storage}, {entry.size / 2**20:.2f} MB, stored {measured}; fp32 {fp32}")


def package_onnx(name: str) -> None:
    """Ship a compressed run's int8 ONNX model; its accuracy is measured in ONNX Runtime by
    ``cnnzoo bench``'s code path on the stored file."""
    import shutil

    import cnnzoo.weights
    from cnnzoo.files import sha256_file
    from cnnzoo.rundir import INT8_FILE, RunDir
    from cnnzoo.weights.entry import WeightSet

    recipe = RECIPES[name]
    run = RunDir.open(run_dir(name))
    source = cnnzoo.weights.get(recipe["compress"])
    file = SHIPPED / f"{name}.onnx"
    spec = {**source.spec, "source": source.name, "int8_onnx": file.name}
    shutil.copyfile(run.path / INT8_FILE, file)
    compression = run.read_metrics().get("compression", {})
    entry = WeightSet(
        name=name, spec=spec, file=file.name, sha256=sha256_file(file),
        size=file.stat().st_size, storage="onnx", trained_on=source.trained_on,
        dataset=source.dataset, license=source.license, config=source.config,
        recipe=f"cnnzoo compress {source.name} --quantize int8 --calibration "
               f"{recipe['calibration']}   (scripts/make_weights.py train {name})",
    )  # fmt: skip
    cnnzoo.weights.register(entry, replace=True)
    measured = measure_onnx(name)
    notes = (
        f"int8 ONNX Runtime model (QDQ, {compression.get('calibration_images', '?')} calibration "
        f"images) of {source.name} (test accuracy {source.metrics['test/accuracy']:.4f})"
    )
    _write_row(entry, measured, notes)
    print(f"{name}: onnx, {entry.size / 2**20:.2f} MB, stored {measured}")


def measure_onnx(name: str) -> dict[str, float]:
    """Test accuracy of an int8 ONNX weight set in ONNX Runtime (``cnnzoo bench``'s code).

    Returns:
        ``{"test/accuracy": ...}``.
    """
    from cnnzoo.workflows.bench import bench_run

    rows = bench_run(name, threads=1, repeats=1, onnx=False)
    return {"test/accuracy": round(rows[0].score, 6)}


def _write_row(entry: Any, measured: dict[str, float], notes: str) -> None:
    """Record ``entry`` with its measured metrics in the shipped index (sorted by name)."""
    from dataclasses import asdict

    from cnnzoo.files import atomic_write_text
    from cnnzoo.weights.catalog import SHIPPED_INDEX, _catalog

    row = {k: v for k, v in asdict(entry).items() if k not in ("url", "num_params")}
    row.update(metrics=measured, notes=notes)
    rows = json.loads(SHIPPED_INDEX.read_text()) if SHIPPED_INDEX.is_file() else []
    rows = sorted([r for r in rows if r["name"] != entry.name] + [row], key=lambda r: r["name"])
    atomic_write_text(SHIPPED_INDEX, json.dumps(rows, indent=1) + "\n")
    _catalog.cache_clear()


def recipe_machine() -> str:
    """The CPU (and GPU) this script runs on, in words."""
    import os

    import torch

    from cnnzoo.workflows.bench import cpu_name

    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()}-core {cpu_name()}{gpu}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["train", "package", "list"])
    parser.add_argument("names", nargs="*", help="weight sets (default: all)")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its last checkpoint"
    )
    parser.add_argument("--storage", choices=["fp32", "fp16", "int8"], default=None,
                        help="package: override the recipe's storage")  # fmt: skip
    args = parser.parse_args()
    names = args.names or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        sys.exit(f"unknown weight set(s) {unknown}; choose from {list(RECIPES)}")
    for name in names:
        if args.action == "train":
            train_one(name, args.accelerator, args.overwrite, args.resume)
        elif args.action == "package":
            package_one(name, args.storage)
        elif args.action == "list":
            state = "trained" if (run_dir(name) / "metrics.json").is_file() else "-"
            print(f"{name:28s} {state}")


if __name__ == "__main__":
    main()
