"""The documentation site: the CLI reference is the typer app's own (regenerated and
compared, so it cannot drift), `mkdocs build --strict` passes (a broken link fails), and the
built home page and a section page render non-blank in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_cli_reference_is_generated_from_the_app(tmp_path: Path) -> None:
    fresh = tmp_path / "cli.md"
    command = [str(BIN / "typer"), "cnnzoo.cli", "utils", "docs", "--name", "cnnzoo",
               "--title", "Command line", "--output", str(fresh)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    committed = (ROOT / "docs" / "reference" / "cli.md").read_text()
    assert fresh.read_text() == committed, "docs/reference/cli.md is stale: run `make cli-docs`"
    for command_name in ("train", "eval", "predict", "export", "models", "explain"):
        assert f"## `cnnzoo {command_name}`" in committed


def test_the_annotated_model_pages_are_generated_from_the_source() -> None:
    check = [sys.executable, str(ROOT / "scripts" / "model_pages.py"), "--check"]
    result = subprocess.run(check, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout  # stale: run python scripts/model_pages.py
    page = (ROOT / "docs" / "models" / "classification.md").read_text()
    source = (ROOT / "src" / "cnnzoo" / "layers" / "residual.py").read_text()
    skip = "out = out + self.shortcut(x)"  # _ResidualBlock.forward, as the source has it
    assert skip in source and skip in page
    assert r"y = \mathcal{F}(x, \{W_i\}) + x" in page  # the paper's equation beside it
    for family in ("segmentation", "detection", "generative"):
        assert (ROOT / "docs" / "models" / f"{family}.md").is_file()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build = [str(BIN / "mkdocs"), "build", "--strict", "--quiet", "--site-dir", str(out)]
    result = subprocess.run(build, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_the_site_builds_strict_with_every_lecture_section(site: Path) -> None:
    for page in ("classification", "transfer", "segmentation", "detection", "autoencoders",
                 "generative", "embedded", "gallery", "reference/cli", "reference/api",
                 "models/classification", "models/detection"):  # fmt: skip
        assert (site / page / "index.html").is_file(), page
    api = (site / "reference" / "api" / "index.html").read_text()
    assert "create_model" in api and "Raises" in api  # rendered from the docstrings
    annotated = (site / "models" / "classification" / "index.html").read_text()
    assert annotated.count('class="annotated"') >= 10 and 'class="arithmatex"' in annotated


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed here (apt-get install chromium)"
)
@pytest.mark.parametrize(
    "page", ["index.html", "detection/index.html", "models/classification/index.html"]
)
def test_a_built_page_renders_non_blank(site: Path, page: str, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    command = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900",
               "--virtual-time-budget=5000", f"--screenshot={shot}",
               (site / page).as_uri()]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert pixels.shape[:2] == (900, 1200)
    assert pixels.std() > 20  # text, header and navigation drawn, not an empty page
    header = pixels[:40].reshape(-1, 3).mean(0)  # material's indigo header bar
    assert header[2] > header[0] + 40, header
