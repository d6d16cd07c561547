"""The lecture notebooks (notebooks/*.py, jupytext py:percent): each opens with its title and
run time, ends with exercises, and the runner (`make notebooks`, which CI runs) executes a
notebook in a fresh kernel and working folder, reporting a failing cell in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "scripts" / "run_notebooks.py"
BOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def test_there_are_lecture_notebooks_in_order() -> None:
    numbers = [int(b.name[:2]) for b in BOOKS]
    assert len(BOOKS) >= 4 and numbers == sorted(set(numbers)), numbers


@pytest.mark.parametrize("book", BOOKS, ids=[b.stem for b in BOOKS])
def test_a_notebook_has_title_timing_and_exercises(book: Path) -> None:
    notebook = jupytext.read(book)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    first, last = notebook.cells[0], notebook.cells[-1]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {int(book.name[:2])} ·")
    assert "2 CPU cores" in first.source  # the measured run time is stated
    assert last.cell_type == "markdown" and "## Exercises" in last.source
    exercises = last.source.split("## Exercises")[1]
    assert "\n1." in exercises and "\n2." in exercises
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.get("outputs") for c in code)  # no outputs kept in git
    assert "/work/" not in book.read_text()  # no absolute paths into a checkout


def _run(folder: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(RUNNER), "--folder", str(folder), "--out", str(out), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_the_runner_executes_in_a_fresh_folder_and_reports_a_failing_cell(tmp_path: Path) -> None:
    books = tmp_path / "books"
    books.mkdir()
    (books / "01_good.py").write_text(
        "# %%\nfrom pathlib import Path\nPath('made.txt').write_text('x')\nprint(6 * 7)\n"
    )
    (books / "02_bad.py").write_text("# %%\nraise ValueError('the third cell is wrong')\n")
    out = tmp_path / "out"
    result = _run(books, out)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("pass  01_good.py")
    assert (
        lines[1].startswith("FAIL  02_bad.py") and "ValueError: the third cell is wrong" in lines[1]
    )
    assert "1/2 notebooks passed" in lines[2]
    executed = nbformat.read(out / "01_good.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"] == "42\n"
    assert (out / "work" / "01_good" / "made.txt").read_text() == "x"  # not in the repo


def test_the_runner_names_the_notebooks_when_none_matches(tmp_path: Path) -> None:
    (tmp_path / "01_only.py").write_text("# %%\nx = 1\n")
    result = _run(tmp_path, tmp_path / "out", "nosuch")
    assert result.returncode == 2 and "no notebook matches 'nosuch'" in result.stdout
    assert "01_only" in result.stdout
