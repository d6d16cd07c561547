"""Execute the lecture's notebooks (``notebooks/*.py``, jupytext py:percent) on this machine.

    python scripts/run_notebooks.py                 # every notebook, 300 s limit each
    python scripts/run_notebooks.py 02 05           # the notebooks whose names contain 02 or 05
    python scripts/run_notebooks.py --limit 120     # a tighter limit per notebook

Each notebook runs in a fresh kernel (this interpreter's, so the venv's cnnzoo) with a fresh
working directory, ``build/notebooks/work/<name>/``, so what it writes (runs, figures) never
lands in the repository. The executed notebook, outputs included, is written to
``build/notebooks/<name>.ipynb`` (git-ignored; open it in Jupyter). A notebook fails when a
cell raises or when the whole notebook takes longer than the limit. Prints one line per
notebook and a total; exits 1 if any notebook failed, 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
OUT = REPO / "build" / "notebooks"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def select(patterns: list[str], folder: Path = NOTEBOOKS) -> list[Path]:
    """The notebooks to run: all of ``folder/*.py`` or those whose name contains a pattern.

    Returns:
        The notebook files, sorted by name.

    Raises:
        SystemExit: (status 2) when a pattern matches no notebook.
    """
    books = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
    if not patterns:
        return books
    chosen = [b for b in books if any(p in b.stem for p in patterns)]
    if not chosen:
        names = ", ".join(b.stem for b in books)
        print(f"error: no notebook matches {' '.join(patterns)!r}; there are: {names}")
        raise SystemExit(2)
    return chosen


def run_one(path: Path, out: Path, limit: float) -> tuple[bool, float, str]:
    """Execute one notebook in a fresh kernel and working directory.

    Returns:
        (passed, seconds, a one-line message: "ok" or what failed and in which cell).
    """
    import jupytext
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    work = out / "work" / path.stem
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sockets = out / "kernels" / path.stem
    shutil.rmtree(sockets, ignore_errors=True)
    sockets.mkdir(parents=True)
    notebook = jupytext.read(path)
    # IPC sockets inside the work folder: nothing listens on TCP (and the kernel stays quiet).
    manager = KernelManager(kernel_name="python3", transport="ipc", ip=str(sockets / "kernel"))
    client = NotebookClient(
        notebook,
        km=manager,
        timeout=int(limit),
        resources={"metadata": {"path": str(work)}},
    )
    start = time.perf_counter()
    message = "ok"
    passed = True
    try:
        client.execute()
    except CellTimeoutError:
        passed, message = False, f"a cell ran past the {limit:.0f} s limit"
    except CellExecutionError as err:
        lines = [ANSI.sub("", ln) for ln in str(err).splitlines() if ln.strip()]
        passed, message = False, (lines[-1] if lines else "a cell raised")
    seconds = time.perf_counter() - start
    if passed and seconds > limit:
        passed, message = False, f"took {seconds:.0f} s, over the {limit:.0f} s limit"
    target = out / f"{path.stem}.ipynb"
    tmp = out / f".{path.stem}.tmp.ipynb"
    nbformat.write(notebook, tmp)
    os.replace(tmp, target)
    shutil.rmtree(sockets, ignore_errors=True)
    return passed, seconds, message


def main(argv: list[str] | None = None) -> int:
    """Run the selected notebooks and print one line each.

    Returns:
        0 when all passed, 1 when any failed.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", help="run only notebooks whose name contains one")
    parser.add_argument("--limit", type=float, default=300.0, help="seconds per notebook")
    parser.add_argument("--folder", type=Path, default=NOTEBOOKS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=OUT, help="where executed notebooks go")
    args = parser.parse_args(argv)
    if args.limit <= 0:
        print(f"error: --limit must be a positive number of seconds, got {args.limit}")
        return 2
    books = select(args.patterns, args.folder)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    total = 0.0
    for book in books:
        passed, seconds, message = run_one(book, args.out, args.limit)
        total += seconds
        failed += not passed
        mark = "pass" if passed else "FAIL"
        print(f"{mark}  {book.name:<28} {seconds:6.1f} s  {message}", flush=True)
    print(f"{len(books) - failed}/{len(books)} notebooks passed in {total:.0f} s ({args.out})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
