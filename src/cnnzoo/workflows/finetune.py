"""``cnnzoo finetune``: continue a trained model on new data with a fine-tuning strategy."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cnnzoo.rundir import RunDir, WeightsRun
from cnnzoo.workflows.train import TrainConfig, TrainResult, train


def finetune_config(source: str | Path, cfg: TrainConfig) -> TrainConfig:
    """Return ``cfg`` completed from a source run (its ``model.safetensors``, or a named
    weight set such as ``resnet20.fmnist``).

    The architecture and its options come from the source's ``model.json``; the classes and
    channels come from the new data, so a different head is initialised afresh and a
    different channel count adapts the first convolution (see :func:`cnnzoo.load_weights`).

    Raises:
        CnnzooError: if ``source`` is not a cnnzoo run.
    """
    run = RunDir.open(source)
    spec = run.read_spec()
    kwargs = {k: v for k, v in spec.get("kwargs", {}).items()
              if k not in ("num_classes", "in_channels")}  # fmt: skip
    return replace(
        cfg,
        model=spec["model"],
        weights=run.label if isinstance(run, WeightsRun) else str(run.weights),
        model_kwargs={**kwargs, **cfg.model_kwargs},
        strategy=cfg.strategy or "full",
    )


def finetune(source: str | Path, cfg: TrainConfig) -> TrainResult:
    """Fine-tune the model of run ``source`` on ``cfg.data`` into ``cfg.out``.

    Returns:
        The training result; the run directory also holds ``trainable.json``.
    """
    return train(finetune_config(source, cfg))
