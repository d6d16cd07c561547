"""Which family serves which task.

The built-in families are named here as import paths and loaded on first use, so a family's
module (and its data, tasks and plots) is only imported when a run of it is used, and adding a
family is one line here (or a :func:`register_family` call) that touches no other family and
no workflow.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any

from cnnzoo.errors import CnnzooError
from cnnzoo.families.base import SHARED_OPTIONS, Family, TrainConfig

if TYPE_CHECKING:
    from cnnzoo.rundir import RunDir

BUILTIN: dict[str, str] = {
    "classification": "cnnzoo.families.classification.family:ClassificationFamily",
    "segmentation": "cnnzoo.families.segmentation.family:SegmentationFamily",
    "detection": "cnnzoo.families.detection.family:DetectionFamily",
    "reconstruction": "cnnzoo.families.generative.family:GenerativeFamily",
    "generation": "cnnzoo.families.generative.family:GenerativeFamily",
    "translation": "cnnzoo.families.generative.family:GenerativeFamily",
}
"""Task -> ``module:class`` of the family that serves it."""

_LOADED: dict[str, Family] = {}


def register_family(family: Family) -> None:
    """Serve ``family.tasks`` with ``family`` (replacing the built-in one for those tasks)."""
    for task in family.tasks:
        _LOADED[task] = family


def family_for(task: str) -> Family:
    """Return the family that serves ``task`` (a registry task, ``ModelInfo.task``).

    Raises:
        CnnzooError: for a task no family serves.
    """
    if task not in _LOADED:
        path = BUILTIN.get(task)
        if path is None:
            raise CnnzooError(f"no task family serves {task!r} models")
        module, _, name = path.partition(":")
        family = getattr(importlib.import_module(module), name)()
        register_family(family)
    return _LOADED[task]


def exporting_family(run: RunDir, command: str) -> Family:
    """The family of ``run``, which must export to ONNX (``export``, ``bench``, ``compress``).

    Raises:
        CnnzooError: for a run of a family whose models do not export (one line, naming the
            run and what to use instead).
    """
    task = run.read_spec().get("task", "classification")
    family = family_for(task)
    family.check_exports(run.label, task, command)
    return family


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


def check_options(cfg: TrainConfig, task: str) -> None:
    """Refuse a training option that belongs to other families than ``task``'s.

    An option is set when it differs from :class:`TrainConfig`'s default and from the task's
    own default. The one place where options are checked against families: each family lists
    its own (:attr:`Family.options`).

    Raises:
        CnnzooError: naming the option, the families it belongs to and the model's task.
    """
    family = family_for(task)
    allowed = SHARED_OPTIONS | family.options
    task_defaults = family.defaults_for(task)
    for field in dataclasses.fields(TrainConfig):
        if field.name in allowed:
            continue
        value, default = getattr(cfg, field.name), _default(field)
        if value == default or value == task_defaults.get(field.name, default):
            continue
        families = [family_for(t) for t in {*BUILTIN, *_LOADED}]
        owners = sorted({f.name for f in families if field.name in f.options})
        flag = "--" + field.name.replace("_", "-")
        hint = family.option_hints.get(field.name)
        raise CnnzooError(
            f"{flag} is a {'/'.join(owners) or 'different'} option; {cfg.model} is a {task} "
            "model" + (f": {hint}" if hint else "")
        )
