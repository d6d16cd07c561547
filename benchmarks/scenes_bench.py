"""What the scenes benchmarks (segmentation, detection) share: turning a recipe into
``cnnzoo train`` options (with the optional pre-trained backbone), other training scenes
tested on the default test scenes, and writing the table."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from classification import machine
from pretrain import pretrained_backbone

SHIPPED_BACKBONE = "convnet.fmnist"
"""The VGG-style convnet (widths 32-64-128, strides 2-4-8) trained on Fashion-MNIST that
ships with cnnzoo (see docs/weights.md): the backbone the recipes start from."""


def resolve_recipe(
    name: str, recipes: dict[str, dict[str, Any]], args: argparse.Namespace, runs: Path
) -> tuple[str, int, float | None, dict[str, Any], float]:
    """Return ``(model, epochs, lr, other train options, pretrain seconds)`` of a recipe.

    ``--epochs`` and ``--lr`` override the recipe's; ``pretrained`` becomes
    ``backbone_weights``: the shipped weight set :data:`SHIPPED_BACKBONE` (no training time),
    or with ``--pretrain`` / ``--pretrained-run`` the Fashion-MNIST classifier of
    :mod:`pretrain` (its training seconds returned).
    """
    recipe = dict(recipes.get(name, {"epochs": 10}))
    epochs = args.epochs or recipe.pop("epochs")
    recipe.pop("epochs", None)
    lr = args.lr or recipe.pop("lr", None)
    recipe.pop("lr", None)
    model = recipe.pop("model", name)
    pretrain_s = 0.0
    if recipe.pop("pretrained", False):
        if getattr(args, "pretrain", False) or args.pretrained_run:
            run, pretrain_s, accuracy = pretrained_backbone(
                runs, args.data_dir, args.pretrained_run
            )
            backbone = str(run)
        else:
            from cnnzoo.weights import get

            backbone = SHIPPED_BACKBONE
            accuracy = get(backbone).metrics["test/accuracy"]
        recipe["backbone_weights"] = backbone
        print(f"backbone: {backbone} (Fashion-MNIST test accuracy {accuracy:.4f})")
    return model, epochs, lr, recipe, pretrain_s


def shown_options(recipe: dict[str, Any], pretrain_s: float) -> dict[str, Any]:
    """The recipe's options as the table shows them (the weights path named by what it is)."""
    shown = {k: v for k, v in recipe.items() if k != "backbone_weights"}
    weights = recipe.get("backbone_weights")
    if weights is None:
        return shown
    return shown | {"backbone": "pretrained convnet" if pretrain_s else f"shipped {weights}"}


def write_results(runs: Path, header: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Print the markdown table (``header``, then one row per model with the machine named)
    and write it to ``runs/results.md`` and the rows to ``runs/results.json``."""
    import torch

    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    lines = [f"{header}; {machine()}{gpu}", "", "| " + " | ".join(columns) + " |",
             "|" + "---|" * len(columns)]  # fmt: skip
    for row in rows:
        options = ", ".join(f"{k}={v}" for k, v in row["options"].items()) or "-"
        values = [options if c == "options" else str(row[c]) for c in columns]
        lines.append("| " + " | ".join(values) + " |")
    table = "\n".join(lines)
    print(table)
    (runs / "results.md").write_text(table + "\n")
    (runs / "results.json").write_text(json.dumps(rows, indent=2) + "\n")


def train_scenes(
    folder: Path, n_train: int, source: str, fashion_dir: str | None, standard: Path
) -> Path:
    """Generate ``n_train`` training scenes from ``source`` into ``folder``, with the test
    split of the ``standard`` scenes (the default ``--data scenes``: symbolic links to its test
    images and masks, a copy of its COCO test boxes), so results compare on the same test set.

    Returns:
        ``folder``, readable as ``scenes:FOLDER`` (segmentation and detection).
    """
    from cnnzoo.data.scenes import generate_scenes
    from cnnzoo.data.seg_datamodule import SCENES_DEFAULTS

    settings = {**SCENES_DEFAULTS, "n_train": n_train, "n_test": 0}
    generate_scenes(folder, seed=0, source=source, data_dir=fashion_dir, **settings)
    for kind in ("images", "masks"):
        link = folder / kind / "test"
        if link.is_dir() and not link.is_symlink() and not any(link.iterdir()):
            link.rmdir()  # generate_scenes made it empty (n_test 0)
        if not link.exists():
            link.symlink_to((standard / kind / "test").resolve(), target_is_directory=True)
    boxes = "annotations/instances_test.json"
    shutil.copyfile(standard / boxes, folder / boxes)
    return folder
