"""The report's "Most confident mistakes" section: drawn for classification runs whose data
is at hand, a note saying why otherwise, and an image a real browser decodes."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from cnnzoo.workflows.report import write_report
from cnnzoo.workflows.train import TrainConfig, train

HEADING = "<h4>Most confident mistakes</h4>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "convnet"
    cfg = TrainConfig(model="convnet", data="fashion-mnist-mini", out=str(out), epochs=1,
                      batch_size=32, subset=128, val_fraction=0.25,
                      model_kwargs={"widths": [8, 16], "hidden": 16}, progress=False,
                      accelerator="cpu")  # fmt: skip
    return train(cfg).run_dir


@pytest.fixture(scope="module")
def page(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report([run], tmp_path_factory.mktemp("report") / "r.html", top_losses=4)


def _section(html: str) -> str:
    """The mistakes section of a one-run page: from its heading to the end of the run."""
    return html.split(HEADING, 1)[1].split("</body>", 1)[0]


def _png(html: str) -> Image.Image:
    found = re.search(r'<img src="data:image/png;base64,([^"]+)" alt="most confident', html)
    assert found, "no embedded mistakes image"
    return Image.open(io.BytesIO(base64.b64decode(found[1])))


def test_classification_run_gets_the_figure(page: Path) -> None:
    html = page.read_text()
    assert html.count(HEADING) == 1
    section = _section(html)
    assert section.count("<img ") == 1 and "Skipped" not in section
    assert "pred / true / loss / prob" in section
    image = _png(html)
    assert image.format == "PNG" and image.width > 2 * image.height  # one row of four pairs


def test_no_section_unless_asked_for(run: Path, tmp_path: Path) -> None:
    html = write_report([run], tmp_path / "r.html").read_text()
    assert "Most confident mistakes" not in html


def _segmentation_run(path: Path) -> Path:
    path.mkdir()
    (path / "model.json").write_text(json.dumps({"model": "unet", "task": "segmentation"}))
    return path


def _run_without_data(run: Path, path: Path) -> Path:
    shutil.copytree(run, path)
    spec = json.loads((path / "model.json").read_text())
    spec["data"]["name"] = str(path / "gone")  # the image folder it was trained on is gone
    (path / "model.json").write_text(json.dumps(spec))
    return path


def _run_without_weights(path: Path) -> Path:
    path.mkdir()
    (path / "metrics.json").write_text(json.dumps({"model": "convnet", "task": "classification",
                                                   "metrics": {"test/accuracy": 0.5}}))  # fmt: skip
    return path


def test_other_runs_say_why_they_have_none(run: Path, tmp_path: Path) -> None:
    runs = [
        _segmentation_run(tmp_path / "seg"),
        _run_without_data(run, tmp_path / "nodata"),
        _run_without_weights(tmp_path / "noweights"),
    ]
    html = write_report(runs, tmp_path / "r.html", top_losses=4).read_text()
    notes = re.findall(HEADING + r'<p class="note">Skipped: ([^<]*)</p>', html)
    assert len(notes) == 3
    assert notes[0] == "they apply to classification runs; this is a segmentation run."
    assert "unknown dataset" in notes[1] and "gone" in notes[1]
    assert "is not a cnnzoo run" in notes[2] and "model.safetensors" in notes[2]
    assert 'alt="most confident mistakes"' not in html


def test_an_unexpected_failure_is_a_note_not_a_crash(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cnnzoo.explain.top_losses as module

    def broken(*args: object, **kwargs: object) -> list:
        raise RuntimeError("CUDA out of memory\nsecond line")

    monkeypatch.setattr(module, "top_losses", broken)
    html = write_report([run], tmp_path / "r.html", top_losses=4).read_text()
    assert (
        HEADING + '<p class="note">Skipped: could not be computed (RuntimeError: CUDA out of '
        "memory).</p>" in html
    )


# A test-only probe (the report itself has no JavaScript): once the page has loaded, write the
# decoded size of the section's image into the DOM that --dump-dom prints.
PROBE = """<script>addEventListener("load", () => {
  const heading = [...document.querySelectorAll("h4")]
    .find(h => h.textContent === "Most confident mistakes");
  const figure = heading && heading.nextElementSibling;
  const img = figure && figure.querySelector("img");
  document.body.dataset.mistakes = img ? `${img.naturalWidth}x${img.naturalHeight}` : "missing";
});</script>"""


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed here (apt-get install chromium)"
)
def test_section_renders_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    command = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
               "--dump-dom", probe.as_uri()]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert HEADING in dom
    size = re.search(r'data-mistakes="([^"]+)"', dom)
    assert size, "the probe did not run: " + dom[:500]
    image = _png(page.read_text())
    assert size[1] == f"{image.width}x{image.height}"  # decoded, at its full size
