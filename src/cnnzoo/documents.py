"""Reading the JSON and YAML documents users hand to cnnzoo, safely (imports only
:mod:`cnnzoo.errors`).

COCO annotations, YOLO ``data.yaml``, a run's ``model.json`` / ``config.yaml`` /
``metrics.json``: whatever the file holds, reading it either gives the document or raises one
:class:`~cnnzoo.errors.CnnzooError` naming the file (with the line, where the parser knows it).
Bombs are refused: nesting deeper than the parser can follow, integers of thousands of digits,
and YAML aliases whose expansion would be far larger than the file (a "billion laughs").
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cnnzoo.errors import CnnzooError

EXPANSION_LIMIT = 100_000
"""A YAML document may expand (aliases followed) to at most this many values more than it has
characters: anything more is a bomb, not a configuration."""

MAX_FLOW_DEPTH = 100
"""YAML flow collections (``[...]``, ``{...}``) may nest this deep: PyYAML's scanner takes time
quadratic in the depth (100,000 ``[`` keep it busy for minutes)."""


def is_file(path: Path) -> bool:
    """``path.is_file()``, but False for a name the system refuses (too long, say) instead of
    an OSError: the names come from users' files (split lists, ``file_name``, label lists).

    Returns:
        Whether ``path`` is an existing file.
    """
    try:
        return path.is_file()
    except OSError:
        return False


def is_dir(path: Path) -> bool:
    """``path.is_dir()``, but False for a name the system refuses (see :func:`is_file`).

    Returns:
        Whether ``path`` is an existing folder.
    """
    try:
        return path.is_dir()
    except OSError:
        return False


def read_text(path: str | Path, what: str) -> str:
    """Read a UTF-8 text file (a split list, a label file, a class list).

    Args:
        path: the file.
        what: how messages name it, e.g. ``"VOC split file"``.

    Returns:
        The text.

    Raises:
        CnnzooError: naming the file if it is missing, unreadable or not UTF-8.
    """
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise CnnzooError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise CnnzooError(
            f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from None
    except OSError as exc:
        raise CnnzooError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None


def load_json(path: str | Path, what: str) -> Any:
    """Read a JSON file.

    Args:
        path: the file.
        what: how messages name it, e.g. ``"COCO annotation file"``.

    Returns:
        The parsed document (any JSON value).

    Raises:
        CnnzooError: naming the file for a missing or unreadable file, text that is not
            UTF-8, malformed JSON (with its line), or a nesting or number bomb.
    """
    path = Path(path)
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CnnzooError(
            f"{what} {path}:{exc.lineno}: malformed JSON ({exc.msg}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise CnnzooError(f"{what} {path} nests too deep to read: malformed JSON") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise CnnzooError(f"{what} {path}: malformed JSON ({exc})") from None


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text with ``yaml.safe_load`` (no Python objects), refusing bombs.

    Args:
        text: the YAML.
        where: how messages name its source, e.g. ``"YOLO data file data.yaml"``.

    Returns:
        The parsed document.

    Raises:
        CnnzooError: naming ``where`` for malformed YAML (with its line), nesting deeper than
            the parser can follow (flow collections: :data:`MAX_FLOW_DEPTH`), huge integers,
            or aliases expanding to more than ``len(text) + EXPANSION_LIMIT`` values.
    """
    import yaml

    depth = 0
    for bracket in re.sub(r"[^\[\]{}]", "", text):  # brackets in strings count too: fine
        depth = max(depth + 1, 1) if bracket in "[{" else depth - 1
        if depth > MAX_FLOW_DEPTH:
            raise CnnzooError(
                f"{where} nests [ or {{ more than {MAX_FLOW_DEPTH} deep: malformed YAML"
            )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise CnnzooError(f"{where}{line}: malformed YAML ({problem})") from None
    except RecursionError:
        raise CnnzooError(f"{where} nests too deep to read: malformed YAML") from None
    except (ValueError, OverflowError) as exc:  # an integer of 4300+ digits, a bad date
        raise CnnzooError(f"{where}: malformed YAML ({exc})") from None
    limit = len(text) + EXPANSION_LIMIT
    if _expanded_size(data, limit, {}) > limit:
        raise CnnzooError(
            f"{where}: its aliases expand to more than {limit} values (a YAML bomb); "
            "write the values out instead"
        )
    return data


def _expanded_size(node: Any, limit: int, seen: dict[int, int]) -> int:
    """How many values ``node`` holds with every alias followed (counted once per object,
    shared objects multiply), stopping early once past ``limit``."""
    if not isinstance(node, (dict, list)):
        return 1
    key = id(node)
    if key in seen:
        return seen[key]
    seen[key] = limit + 1  # a self-referencing node (``&a [*a]``) expands without end
    children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
    total = 1
    for child in children:
        total += _expanded_size(child, limit, seen)
        if total > limit:
            break
    seen[key] = total
    return total


def load_yaml(path: str | Path, what: str) -> Any:
    """Read a YAML file safely (see :func:`parse_yaml`).

    Args:
        path: the file.
        what: how messages name it, e.g. ``"YOLO data file"``.

    Returns:
        The parsed document (None for an empty file).

    Raises:
        CnnzooError: naming the file for a missing or unreadable file, text that is not
            UTF-8, malformed YAML (with its line) or a bomb.
    """
    path = Path(path)
    return parse_yaml(read_text(path, what), f"{what} {path}")


def load_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """Read a JSON (``.json``) or YAML (any other suffix) file that must hold a mapping.

    Args:
        path: the file.
        what: how messages name it, e.g. ``"run spec"``.

    Returns:
        The mapping (an empty file of YAML gives ``{}``).

    Raises:
        CnnzooError: as :func:`load_json` / :func:`load_yaml`, or if the document is not a
            mapping.
    """
    path = Path(path)
    data = load_json(path, what) if path.suffix == ".json" else load_yaml(path, what)
    if data is None and path.suffix != ".json":
        return {}
    if not isinstance(data, dict):
        raise CnnzooError(
            f"{what} {path} holds a {type(data).__name__}: expected a mapping of names to values"
        )
    return data
