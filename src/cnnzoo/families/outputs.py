"""Files ``cnnzoo predict`` reads and writes: input images checked once, output names that never
silently replace a user's file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cnnzoo.errors import CnnzooError


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Raise unless ``path`` is free or ``overwrite`` is set.

    Raises:
        CnnzooError: naming the existing file.
    """
    if path.exists() and not overwrite:
        raise CnnzooError(f"{path} exists: pass --overwrite or another --out")


def output_paths(out_dir: Path, file: Path, suffixes: Sequence[str], overwrite: bool) -> list[Path]:
    """Return ``out_dir / (file.stem + suffix)`` for each suffix (e.g. ``"_label.png"``).

    Raises:
        CnnzooError: if one exists and ``overwrite`` is False.
    """
    paths = [out_dir / f"{file.stem}{suffix}" for suffix in suffixes]
    for path in paths:
        refuse_existing(path, overwrite)
    return paths


def check_inputs(
    files: Sequence[str | Path], out_dir: Path, suffixes: Sequence[str], overwrite: bool
) -> list[Path]:
    """Check image files before any work: each exists, no two share a name (their outputs
    would collide), and no output exists (without ``overwrite``).

    Returns:
        The files as paths.

    Raises:
        CnnzooError: naming the first problem found.
    """
    paths = [Path(f) for f in files]
    stems = [p.stem for p in paths]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise CnnzooError(
            f"several inputs are named {duplicates[0]!r}: their outputs would overwrite each "
            "other; predict them into different --out folders"
        )
    for path in paths:
        if not path.is_file():
            raise CnnzooError(f"image not found: {path}")
        output_paths(out_dir, path, suffixes, overwrite)
    return paths
