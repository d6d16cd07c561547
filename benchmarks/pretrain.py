"""The backbone the detection and segmentation benchmarks start from: a VGG-style ``convnet``
(widths 32-64-128, three stages, strides 2-4-8) trained on Fashion-MNIST classification —
the lecture's "feature extractor trained on classification, reused everywhere".

Its training time is part of the budget the benchmarks report (column "pretrain s").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PRETRAIN: dict[str, Any] = {
    "model": "convnet",
    "model_kwargs": {"widths": [32, 64, 128]},
    "data": "fashion-mnist",
    "epochs": 4,
    "batch_size": 256,
    "optimizer": "sgd",
    "lr": 0.1,
    "label_smoothing": 0.1,
    "val_fraction": 0.0,
    "precision": "bf16-mixed",
    "channels_last": True,
}
"""The classification run (the demo's recipe, one more stage, 4 epochs)."""


def pretrained_backbone(
    runs: Path, data_dir: str | None = None, existing: str | None = None
) -> tuple[Path, float, float]:
    """Train the backbone once into ``runs/pretrain`` (reused if it is already there), or
    take the ``existing`` run of the same recipe.

    Returns:
        ``(run directory, training seconds, Fashion-MNIST test accuracy)``.
    """
    import json

    from cnnzoo.workflows.train import TrainConfig, train

    out = Path(existing) if existing else runs / "pretrain"
    if (out / "metrics.json").is_file():
        done = json.loads((out / "metrics.json").read_text())
        return out, float(done["seconds"]), float(done["metrics"]["test/accuracy"])
    cfg = TrainConfig(out=str(out), data_dir=data_dir, progress=False, **PRETRAIN)
    result = train(cfg)
    return out, result.seconds, result.metrics["test/accuracy"]
