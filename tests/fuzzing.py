"""What the fuzz tests (test_fuzz_readers.py, test_fuzz_formats.py) share.

- :func:`fuzz_settings`: a small, derandomized budget per reader in the ordinary test run;
  ``make fuzz`` selects the hypothesis profile ``fuzz`` (registered in conftest.py), whose
  ``max_examples`` every fuzz test then takes, with fresh randomness.
- :func:`mutated_bytes`, :func:`mutated_text`, :func:`mutated_tree`: start from a valid
  document and break it (byte flips, truncation, insertion, deletion, repeated chunks,
  extreme 32-bit integers; wrong types, missing keys, negative/huge numbers, NaN).
- :func:`check_reader`: the property every reader must have: it returns, or raises
  :class:`~cnnzoo.errors.CnnzooError` with a one-line message naming the file; any other
  exception fails the test. Each example runs under :func:`bounded` (a Python-level alarm,
  a process-level watchdog for hangs inside C code, and a cap on the growth of the peak
  resident memory); :func:`python_peak_mb` measures the bombs precisely.

With ``CNNZOO_FUZZ_REPORT=FILE`` the cases run per reader (accepted, refused with
CnnzooError) are written to FILE as JSON at exit (``make fuzz`` prints them).
"""

from __future__ import annotations

import atexit
import copy
import faulthandler
import json
import math
import os
import resource
import signal
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from cnnzoo.errors import CnnzooError

FUZZ = settings.get_current_profile_name() == "fuzz"
"""True under ``make fuzz`` (``--hypothesis-profile=fuzz``)."""

EXAMPLE_SECONDS = 20
"""Per-example bound: the alarm fires after this long (the hypothesis deadline is lower)."""

RSS_GROWTH_MB = 512
"""No single example may raise the process's peak resident memory by more than this."""

COUNTS: defaultdict[str, Counter[str]] = defaultdict(Counter)
"""reader -> {"accepted": n, "refused": n}: what :func:`check_reader` saw."""


def fuzz_settings(ci_examples: int) -> settings:
    """Hypothesis settings for one fuzz test: ``ci_examples`` derandomized examples in the
    ordinary run; the ``fuzz`` profile's ``max_examples`` (random) under ``make fuzz``.

    Returns:
        The settings to decorate the test with.
    """
    return settings(
        max_examples=settings.default.max_examples if FUZZ else ci_examples,
        deadline=timedelta(seconds=5),
        derandomize=not FUZZ,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
            HealthCheck.filter_too_much,
        ],
    )


class Hang(BaseException):  # a BaseException, so that `except Exception` cannot eat it
    """An example ran longer than :data:`EXAMPLE_SECONDS`."""


def _alarm(signum: int, frame: Any) -> None:
    raise Hang(f"example ran longer than {EXAMPLE_SECONDS} s")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def bounded(seconds: int = EXAMPLE_SECONDS) -> Iterator[None]:
    """Run the body under a time bound and a memory-growth bound.

    A Python-level alarm raises :class:`Hang` after ``seconds``; a hang inside C code (which
    the alarm cannot interrupt) ends the process after ``3 * seconds`` with every thread's
    traceback (faulthandler). The peak resident memory may grow by :data:`RSS_GROWTH_MB`.
    """
    before = _peak_rss_mb()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    faulthandler.dump_traceback_later(3 * seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    grown = _peak_rss_mb() - before
    assert grown < RSS_GROWTH_MB, f"peak memory grew by {grown:.0f} MB in one example"


def check_reader(reader: str, call: Callable[[], Any], names: Sequence[str]) -> Any:
    """Run ``call`` (a reader on a fuzzed file), bounded; return its result, or None when it
    refused the file.

    Returns:
        What ``call`` returned, or None if it raised :class:`CnnzooError`.

    Raises:
        AssertionError: if the CnnzooError's message spans lines or names none of ``names``.
        Exception: any other exception ``call`` raises (the bug the fuzzing looks for).
    """
    with bounded():
        try:
            result = call()
        except CnnzooError as err:
            message = str(err)
            assert "\n" not in message, f"message spans lines: {message!r}"
            assert any(name in message for name in names), (
                f"message names none of {list(names)}: {message!r}"
            )
            COUNTS[reader]["refused"] += 1
            return None
    COUNTS[reader]["accepted"] += 1
    return result


def python_peak_mb(call: Callable[[], Any]) -> tuple[float, BaseException | None]:
    """Run ``call`` under tracemalloc (Python objects and numpy arrays, not torch tensors).

    Returns:
        ``(peak MB allocated while it ran, the exception it raised or None)``.
    """
    tracemalloc.start()
    error: BaseException | None = None
    try:
        with bounded():
            call()
    except Exception as err:
        error = err
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20, error


def _write_report() -> None:
    target = os.environ.get("CNNZOO_FUZZ_REPORT")
    if target and COUNTS:
        rows = {reader: {**counts, "cases": sum(counts.values()), "other_exceptions": 0}
                for reader, counts in sorted(COUNTS.items())}  # fmt: skip
        with open(target, "w") as f:
            json.dump(rows, f, indent=1)


atexit.register(_write_report)


# --------------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------------

INT32_EDGES = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1)
TOKENS = (
    b"\x00", b"\xff", b"\xc3", b"[", b"{", b"]", b"}", b'"', b":", b",", b"-", b"\n", b"  ",
    b"*a", b"&a ", b"!!python/object:os.system", b"<", b">", b"</", b"<!ENTITY", b"&lt;",
    b"NaN", b"-Infinity", b"1e999", b"-1", b"0", b"99999999999999999999", b"9" * 5000,
)  # fmt: skip
"""Bytes worth inserting into text formats (JSON, YAML, XML, CSV-like label files)."""


def _position(draw: st.DrawFn, n: int) -> int:
    if n <= 1:
        return 0
    # Headers matter most: half the positions fall in the first 64 bytes.
    return draw(st.one_of(st.integers(0, min(n - 1, 63)), st.integers(0, n - 1)))


@st.composite
def mutated_bytes(
    draw: st.DrawFn, data: bytes, max_ops: int = 4, tokens: Sequence[bytes] = ()
) -> bytes:
    """Strategy: ``data`` after 1..``max_ops`` random edits.

    Returns:
        The mutated bytes (possibly empty).
    """
    buf = bytearray(data)
    ops = ["flip", "set", "truncate", "insert", "delete", "repeat", "int32"]
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(ops + (["token"] if tokens else [])))
        pos = _position(draw, len(buf))
        if op == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[pos] = draw(st.sampled_from((0, 1, 0x7F, 0x80, 0xFF)) | st.integers(0, 255))
        elif op == "truncate":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 16))]
        elif op == "repeat":
            chunk = buf[pos : pos + draw(st.integers(1, 64))]
            buf[pos:pos] = chunk * draw(st.integers(1, 8))
        elif op == "int32":
            order = draw(st.sampled_from(("big", "little")))
            buf[pos : pos + 4] = draw(st.sampled_from(INT32_EDGES)).to_bytes(4, order)
        elif op == "token":
            buf[pos:pos] = draw(st.sampled_from(tokens))
    return bytes(buf)


@st.composite
def mutated_text(draw: st.DrawFn, text: str, max_ops: int = 4) -> bytes:
    """Strategy: the UTF-8 bytes of ``text`` after edits that favour the text formats' tokens.

    Returns:
        The mutated bytes (not necessarily valid UTF-8).
    """
    return draw(mutated_bytes(text.encode(), max_ops=max_ops, tokens=TOKENS))


JUNK: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, 1, 2, 255, 256, 2**31, 2**63, 10**15, -(10**15), 10**40]),
    st.sampled_from([0.0, -0.5, 0.5, 1e-300, 1e308, math.nan, math.inf, -math.inf]),
    st.integers(),
    st.floats(),
    st.sampled_from(
        [
            "",
            "x",
            "0",
            "-1",
            "nan",
            "../x",
            "a/b",
            "\x00",
            "é",
            " ",
            "~nobody9/x",
            "x" * 300,
            "1e999",
            "[",
            "{",
        ]
    ),
    st.text(max_size=8),
    st.lists(st.integers(-5, 2000), max_size=5),
    st.lists(st.floats(), max_size=5),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
)
"""Values of the wrong type or range, put where a document expects something else."""


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every position inside ``node`` (dict keys, list indices), depth first."""
    found = []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(
        node, list) else ()  # fmt: skip
    for key, child in children:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


def _at(doc: Any, path: Sequence) -> Any:
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated_tree(draw: st.DrawFn, doc: Any, keys: Sequence[str] = (), max_ops: int = 3) -> Any:
    """Strategy: a deep copy of the JSON-like ``doc`` after 1..``max_ops`` structural edits:
    a value replaced by :data:`JUNK`, a key or item deleted, an item duplicated (repeated
    ids), a key added (one of ``keys`` or any text), or the root replaced.

    Returns:
        The mutated document.
    """
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, max_ops))):
        paths = _paths(doc)
        op = draw(st.sampled_from(["replace", "replace", "delete", "duplicate", "add", "root"]))
        if op == "root" or not paths:
            if draw(st.integers(0, 9)) == 0:  # rarely: the whole document is wrong
                return draw(JUNK)
            continue
        path = draw(st.sampled_from(paths))
        parent, key = _at(doc, path[:-1]), path[-1]
        if op == "replace":
            parent[key] = draw(JUNK)
        elif op == "delete":
            del parent[key]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif op == "add" and isinstance(_at(doc, path), dict):
            name = draw(st.sampled_from(list(keys)) if keys else st.text(max_size=6))
            _at(doc, path)[name] = draw(JUNK)
    return doc


def nesting_bomb(depth: int = 100_000, kind: str = "json") -> str:
    """A document nested ``depth`` levels deep (lists), as JSON or YAML flow style.

    Returns:
        The text.
    """
    return "[" * depth + "]" * depth if kind == "json" else "a: " + "[" * depth


def alias_bomb(levels: int = 30) -> str:
    """A YAML 'billion laughs': each level lists the previous one 9 times through aliases,
    so the text is small and its expansion holds 9**levels strings.

    Returns:
        The YAML text (a mapping with ``names``, ``train`` and ``path`` set to the bomb).
    """
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        refs = ", ".join([f"*l{i - 1}"] * 9)
        lines.append(f"l{i}: &l{i} [{refs}]")
    top = f"*l{levels - 1}"
    lines += [f"names: {top}", f"train: {top}", f"path: {top}", f"model: {top}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # `make fuzz`: the table of what each reader saw
    import sys
    from pathlib import Path

    report = json.loads(Path(sys.argv[1]).read_text())
    print(f"{'reader':15} {'cases':>7} {'accepted':>9} {'refused':>8}  other exceptions")
    for reader, row in report.items():
        print(f"{reader:15} {row['cases']:7} {row.get('accepted', 0):9} "
              f"{row.get('refused', 0):8}  {row['other_exceptions']}")  # fmt: skip
