"""The catalog of named weight sets: the ones cnnzoo ships, torchvision's ImageNet weights for
every classifier with a torchvision twin, and any a user registers.

Shipped entries are read from ``shipped/index.json`` (written by ``scripts/make_weights.py``
with each file's hash and measured metrics); torchvision's from ``torchvision_in1k.json``
(written by ``scripts/make_torchvision_catalog.py`` from torchvision's published weight
records). Nothing is read before the first lookup.
"""

from __future__ import annotations

import difflib
import functools
import json
from pathlib import Path
from typing import Any

from cnnzoo.errors import CnnzooError
from cnnzoo.weights.entry import WeightSet

HERE = Path(__file__).parent
SHIPPED = HERE / "shipped"
SHIPPED_INDEX = SHIPPED / "index.json"
TORCHVISION = HERE / "torchvision_in1k.json"
IMAGENET_CLASSES = HERE / "imagenet_classes.txt"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_LICENSE = "BSD-3-Clause (torchvision); ImageNet-1K's terms of access apply"

_EXTRA: dict[str, WeightSet] = {}


def _torchvision_entry(row: dict[str, Any], classes: list[str]) -> WeightSet:
    crop = int(row["crop"])
    spec = {
        "model": row["model"],
        "task": "classification",
        "kwargs": {"num_classes": len(classes), "in_channels": 3, **row.get("kwargs", {})},
        "resize_to": None,
        "data": {
            "name": "imagenet",
            "class_names": classes,
            "in_channels": 3,
            "image_size": [crop, crop],
            "resize": int(row["resize"]),
            "crop": crop,
            "interpolation": row["interpolation"],
            "mean": list(row.get("mean", IMAGENET_MEAN)),
            "std": list(row.get("std", IMAGENET_STD)),
        },
    }
    notes = ""
    if "mean" in row:
        notes = ("ported from TensorFlow: torchvision's transform_input=True, which cnnzoo "
                 "reproduces with mean = std = 0.5")  # fmt: skip
    return WeightSet(
        name=row["name"],
        spec=spec,
        file=row["url"].rsplit("/", 1)[1],
        sha256=row["sha256"],
        url=row["url"],
        size=int(row["size_mb"] * 2**20),
        storage="pth",
        trained_on="ImageNet-1K train (1.28M images)",
        dataset=None,
        metrics=dict(row["metrics"]),
        license=TORCHVISION_LICENSE,
        recipe=row["recipe"],
        num_params=int(row["file_params"]),
        notes=notes,
    )


def _shipped_entry(row: dict[str, Any]) -> WeightSet:
    fields = {k: v for k, v in row.items() if k in WeightSet.__dataclass_fields__}
    return WeightSet(**fields)


@functools.cache
def _catalog() -> dict[str, WeightSet]:
    entries: dict[str, WeightSet] = {}
    if SHIPPED_INDEX.is_file():
        for row in json.loads(SHIPPED_INDEX.read_text()):
            entries[row["name"]] = _shipped_entry(row)
    classes = IMAGENET_CLASSES.read_text().splitlines()
    for row in json.loads(TORCHVISION.read_text()):
        entries[row["name"]] = _torchvision_entry(row, classes)
    return entries


def _all() -> dict[str, WeightSet]:
    return {**_catalog(), **_EXTRA}


def register(weight_set: WeightSet, replace: bool = False) -> None:
    """Add a weight set to the catalog (e.g. your own, on your own server), for this process.

    Raises:
        CnnzooError: if the name is taken and ``replace`` is False, is not ``MODEL.TAG``, or
            the hash is not 8-64 hex digits.
    """
    if "." not in weight_set.name or weight_set.name.split(".")[0] != weight_set.model:
        raise CnnzooError(
            f"weight set name {weight_set.name!r} must be MODEL.TAG with MODEL = "
            f"{weight_set.model!r}"
        )
    digest = weight_set.sha256.lower()
    if len(digest) < 8 or len(digest) > 64 or any(c not in "0123456789abcdef" for c in digest):
        raise CnnzooError(
            f"weight set {weight_set.name!r}: sha256 must be 8 to 64 hex digits, got "
            f"{weight_set.sha256!r}"
        )
    if weight_set.name in _all() and not replace:
        raise CnnzooError(f"weight set {weight_set.name!r} already exists")
    _EXTRA[weight_set.name] = weight_set


def unregister(name: str) -> None:
    """Remove a weight set added with :func:`register` (shipped and torchvision entries stay)."""
    _EXTRA.pop(name, None)


def is_weight_name(text: str) -> bool:
    """Tell whether ``text`` is the name of a weight set (``MODEL.TAG``)."""
    return text in _all()


def looks_like_weight_name(text: str) -> bool:
    """Tell whether ``text`` is written like a weight set name (``word.word``, no path
    separator, no file suffix cnnzoo reads), known or not."""
    head, dot, tag = text.partition(".")
    suffixes = ("safetensors", "pth", "pt", "ckpt", "onnx", "json", "yaml")
    return (
        bool(dot and head and tag)
        and "/" not in text
        and "\\" not in text
        and tag not in suffixes
        and not text.startswith(".")
    )


def get(name: str, model: str | None = None, as_path: bool = False) -> WeightSet:
    """Return the weight set ``name``: ``MODEL.TAG``, or just ``TAG`` when ``model`` is given.

    ``as_path``: ``name`` was given where a file or folder is accepted too (the error says
    that no such path exists either).

    Raises:
        CnnzooError: for an unknown name (close names suggested), or one that belongs to
            another model than ``model``.
    """
    entries = _all()
    full = name if name in entries or model is None else f"{model}.{name}"
    if full not in entries:
        pool = [n for n in entries if model is None or n.startswith(f"{model}.")] or list(entries)
        close = difflib.get_close_matches(full, pool, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `cnnzoo weights list`"
        what = "no file, folder or weight set" if as_path else "unknown weight set"
        raise CnnzooError(f"{what} {name!r}; {hint}")
    found = entries[full]
    if model is not None and found.model != model:
        raise CnnzooError(
            f"weight set {full!r} holds a {found.model}, not a {model}; "
            f"see `cnnzoo weights list --model {model}`"
        )
    return found


def list_weights(model: str | None = None, task: str | None = None) -> list[WeightSet]:
    """Return the weight sets, sorted by name, optionally of one model (``*`` wildcards
    allowed, e.g. ``"resnet*"``) or one task."""
    from fnmatch import fnmatchcase

    return [
        ws
        for name, ws in sorted(_all().items())
        if (model is None or fnmatchcase(ws.model, model)) and (task is None or ws.task == task)
    ]
