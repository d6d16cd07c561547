"""``cnnzoo train --seeds N``: one configuration trained with N seeds, and their mean ± std.

The layout (``RUN`` is ``--out``)::

    RUN/config.yaml        the configuration as given (seeds: N; seed: the first one)
    RUN/seed-S/            a complete run directory per seed, S = seed, seed+1, ..., seed+N-1
    RUN/metrics.json       model, task, dataset, epochs (the most any seed trained), seconds
                           (all seeds together), params, metrics (each the mean over the seeds)
                           and multi_seed: seeds, runs (folder names), std (sample standard
                           deviation, n - 1), values (per metric, one per seed, in seed order),
                           epochs and seconds per seed
    RUN/environment.json   the first seed's (:mod:`cnnzoo.workflows.environment`)

Each ``RUN/seed-S`` is an ordinary run that ``eval``, ``predict``, ``export``, ``compress``...
take. ``RUN`` itself holds no weights: those commands refuse it in one line naming a seed's
folder (no one model stands for the run; picking one would hide the spread it measured).
``cnnzoo report RUN`` shows each metric as mean ± std. ``--resume`` keeps the seeds that
finished, resumes an interrupted one from its ``last.ckpt`` and trains the others.

A metric enters the summary when every seed has it. The folders are named by the seed itself,
so ``cnnzoo train ... --seed S`` (without ``--seeds``) reproduces ``RUN/seed-S``.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import yaml

from cnnzoo.errors import CnnzooError
from cnnzoo.families.base import TrainConfig, TrainResult
from cnnzoo.registry import model_info
from cnnzoo.rundir import METRICS, WEIGHTS, RunDir
from cnnzoo.workflows.environment import ENVIRONMENT_FILE

SEED_DIR = "seed-{}"
"""A seed's run directory inside a multi-seed run, by its seed."""


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def seed_runs(cfg: TrainConfig) -> list[tuple[int, Path]]:
    """Return ``(seed, run directory)`` of each seed of a ``--seeds`` run, in order."""
    return [(s, Path(cfg.out) / SEED_DIR.format(s)) for s in range(cfg.seed, cfg.seed + cfg.seeds)]


def summarize(values: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Return the mean and the sample standard deviation (n - 1; 0 for one seed) of each
    metric every one of ``values`` (one dict per seed) has, in the first seed's order."""
    keys = [k for k in values[0] if all(k in v for v in values)]
    mean = {k: statistics.fmean(float(v[k]) for v in values) for k in keys}
    std = {
        k: statistics.stdev(float(v[k]) for v in values) if len(values) > 1 else 0.0 for k in keys
    }
    return mean, std


def _prepare(cfg: TrainConfig) -> RunDir:
    """Create (or, resuming, check) the multi-seed run directory and write its config.

    Raises:
        CnnzooError: as :meth:`RunDir.create`; resuming a folder that is not a multi-seed run.
    """
    parent = RunDir(cfg.out)
    if cfg.resume:
        try:
            before = int(parent.read_config().get("seeds") or 1)
        except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
            before = 1  # unreadable: not a multi-seed run this can resume
        if before < 2:
            raise CnnzooError(
                f"cannot resume: {parent.path} is not a multi-seed run (no config.yaml with "
                "seeds > 1); drop --seeds to resume a single run"
            )
    else:
        parent = RunDir.create(cfg.out, overwrite=cfg.overwrite)
        parent.discard_if_empty()  # the folders create() makes: a seed's run holds its own
        parent.path.mkdir(parents=True, exist_ok=True)
    runs = [folder.name for _, folder in seed_runs(cfg)]
    parent.write_config({**asdict(cfg), "runs": runs})
    return parent


def _finished(folder: Path) -> TrainResult | None:
    """A seed's result read back from its run directory, or None if it did not finish."""
    metrics = folder / METRICS
    if not (metrics.is_file() and (folder / WEIGHTS).is_file()):
        return None
    try:
        done = json.loads(metrics.read_text())
        return TrainResult(
            run_dir=folder,
            metrics={k: float(v) for k, v in done["metrics"].items()},
            seconds=float(done.get("seconds", 0.0)),
            epochs=int(done.get("epochs", 0)),
            params=int(done.get("params", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable: train the seed again


def train_seeds(cfg: TrainConfig, train_one: Callable[[TrainConfig], TrainResult]) -> TrainResult:
    """Train ``cfg`` once per seed (``cfg.seed`` ... ``cfg.seed + cfg.seeds - 1``) with
    ``train_one`` (:func:`cnnzoo.workflows.train.train` for one seed), each into
    ``RUN/seed-S``, and write the multi-seed summary (see the module docstring).

    Returns:
        The multi-seed result: ``metrics`` holds each metric's mean over the seeds, ``std``
        its sample standard deviation, ``seconds`` the seeds' total, ``epochs`` the most any
        seed trained; ``run_dir`` is ``RUN``.

    Raises:
        CnnzooError: for ``seeds`` below 1, an existing ``RUN`` (without ``overwrite`` or
            ``resume``), resuming a folder that is not a multi-seed run, and whatever a seed's
            training raises.
    """
    if cfg.seeds < 1:
        raise CnnzooError(f"--seeds must be 1 or more, got {cfg.seeds}")
    rank0 = _rank() == 0
    parent = _prepare(cfg) if rank0 else RunDir(cfg.out)
    results: list[TrainResult] = []
    for seed, folder in seed_runs(cfg):
        done = _finished(folder) if cfg.resume else None
        if done is not None:
            results.append(done)
            continue
        resume = cfg.resume and (folder / "checkpoints" / "last.ckpt").is_file()
        # a fresh RUN has no seed folders; resuming, a seed's folder without a checkpoint
        # holds at most what a failed start left: train that seed again from scratch
        again = cfg.overwrite or (cfg.resume and not resume)
        one = replace(cfg, seed=seed, seeds=1, out=str(folder), resume=resume, overwrite=again)
        results.append(train_one(one))
    mean, std = summarize([r.metrics for r in results])
    combined = TrainResult(
        run_dir=parent.path,
        metrics=mean,
        seconds=sum(r.seconds for r in results),
        epochs=max(r.epochs for r in results),
        params=results[0].params,
        class_names=results[0].class_names,
        steps=max(r.steps for r in results),
        std=std,
    )
    if rank0:
        _write_summary(parent, cfg, combined, results)
    return combined


def _write_summary(
    parent: RunDir, cfg: TrainConfig, combined: TrainResult, results: list[TrainResult]
) -> None:
    """Write ``RUN/metrics.json`` and ``RUN/environment.json`` of a multi-seed run."""
    summary: dict[str, Any] = {
        "model": cfg.model,
        "task": model_info(cfg.model).task,
        "dataset": cfg.data,
        "epochs": combined.epochs,
        "seconds": round(combined.seconds, 2),
        "params": combined.params,
        "metrics": combined.metrics,
        "multi_seed": {
            "seeds": [seed for seed, _ in seed_runs(cfg)],
            "runs": [folder.name for _, folder in seed_runs(cfg)],
            "std": combined.std,
            "values": {k: [r.metrics[k] for r in results] for k in combined.metrics},
            "epochs": [r.epochs for r in results],
            "seconds": [round(r.seconds, 2) for r in results],
        },
    }
    parent.write_json(METRICS, summary)
    first = results[0].run_dir / ENVIRONMENT_FILE
    if first.is_file():
        parent.write_json(ENVIRONMENT_FILE, json.loads(first.read_text()))
