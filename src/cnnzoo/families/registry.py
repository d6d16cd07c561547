"""Which family serves which task.

The built-in families are named here as import paths and loaded on first use, so a family's
module (and its data, tasks and plots) is only imported when a run of it is used, and adding a
family is one line here (or a :func:`register_family` call) that touches no other family and
no workflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from cnnzoo.errors import CnnzooError
from cnnzoo.families.base import Family

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
