"""`cnnzoo info --graph` (torchview + Graphviz) and `cnnzoo report` (one self-contained page)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import cnnzoo.cli  # registers info
import cnnzoo.cli.report  # noqa: F401  registers report
from cnnzoo.cli.common import app
from cnnzoo.errors import CnnzooError
from cnnzoo.registry import create_model
from cnnzoo.viz.graph import MAX_AUTO_NODES, draw_graph
from cnnzoo.workflows.report import write_report

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot not installed")


def _nodes(svg: str) -> int:
    return len(re.findall(r'<g id="node\d+" class="node"', svg))


# -- graph --------------------------------------------------------------------------------
@needs_dot
def test_graph_svg_has_modules_and_shapes(tmp_path: Path) -> None:
    model = create_model("lenet5").train()
    path = draw_graph(model, (1, 1, 28, 28), tmp_path / "lenet.svg", depth=2)
    svg = path.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "(1, 6, 28, 28)" in svg  # the first convolution's output (padding 2 keeps 28x28)
    assert "(1, 10)" in svg  # the logits
    assert "Conv2d" in svg and "MaxPool2d" in svg
    assert model.training  # the caller's mode is given back
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temporary file


@needs_dot
def test_graph_default_depth_keeps_resnet18_readable(tmp_path: Path) -> None:
    model = create_model("resnet18")
    svg = draw_graph(model, (1, 3, 64, 64), tmp_path / "r.svg").read_text()
    n = _nodes(svg)
    assert 30 <= n <= MAX_AUTO_NODES, n  # every block visible, not every BatchNorm
    assert ">add" in svg  # the shortcut's sum is a node of its own
    assert "BasicBlock" in svg  # blocks as dashed clusters
    deeper = draw_graph(model, (1, 3, 64, 64), tmp_path / "d.svg", depth=6).read_text()
    assert _nodes(deeper) > n


@needs_dot
def test_graph_png_and_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model("lenet5")
    png = draw_graph(model, (1, 1, 28, 28), tmp_path / "g.png", depth=1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(CnnzooError, match=r"\.pdf"):
        draw_graph(model, (1, 1, 28, 28), tmp_path / "g.pdf")
    assert not (tmp_path / "g.pdf").exists()
    before = png.read_bytes()
    with pytest.raises(CnnzooError, match="already exists"):
        draw_graph(model, (1, 1, 28, 28), png, depth=2)
    assert png.read_bytes() == before
    draw_graph(model, (1, 1, 28, 28), png, depth=2, overwrite=True)
    assert png.read_bytes() != before
    with pytest.raises(CnnzooError, match=r"cannot trace LeNet5 with input \(1, 3, 28, 28\)"):
        draw_graph(model, (1, 3, 28, 28), tmp_path / "wrong.svg")  # 3 channels into 1
    assert not (tmp_path / "wrong.svg").exists()
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(CnnzooError, match="install Graphviz"):
        draw_graph(model, (1, 1, 28, 28), tmp_path / "h.svg", depth=1)


@needs_dot
def test_cli_info_graph(tmp_path: Path) -> None:
    out = tmp_path / "g.svg"
    runner = CliRunner()
    result = runner.invoke(app, ["info", "lenet5", "--graph", str(out), "--graph-depth", "2"])
    assert result.exit_code == 0, result.output
    assert "total" in result.output and "61,706" in result.output  # the table still prints
    assert str(out) in result.output.replace("\n", "")
    assert "(1, 6, 28, 28)" in out.read_text()
    again = runner.invoke(app, ["info", "lenet5", "--graph", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output


# -- report -------------------------------------------------------------------------------
def _fake_run(path: Path, metrics: dict, config: dict, **extra) -> Path:
    path.mkdir(parents=True)
    summary = {"model": "convnet", "task": "classification", "dataset": "x", "epochs": 1,
               "seconds": 1.0, "params": 10, "metrics": metrics, **extra}  # fmt: skip
    (path / "metrics.json").write_text(json.dumps(summary))
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    return path


def test_report_compares_two_trained_runs(tiny_cfg, tmp_path: Path) -> None:
    from cnnzoo.workflows.train import train

    a = train(tiny_cfg(out=str(tmp_path / "run_a"), lr=0.05)).run_dir
    b = train(tiny_cfg(out=str(tmp_path / "run_b"), lr=0.01, epochs=2)).run_dir
    out = write_report([a, b], tmp_path / "report.html")
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "run_a" in page and "run_b" in page
    for run in (a, b):
        acc = json.loads((run / "metrics.json").read_text())["metrics"]["test/accuracy"]
        assert repr(acc) in page  # the exact value, as metrics.json holds it
    diff = page.split("Configuration differences", 1)[1].split("<h2>", 1)[0]
    assert "<code>lr</code>" in diff and "<code>epochs</code>" in diff
    assert "<code>batch_size</code>" not in diff  # equal keys are left out
    pngs = sum(len(list((r / "plots").rglob("*.png"))) for r in (a, b))
    images = page.count('<img src="data:image/png;base64,')
    assert images == pngs + 1  # every plot of both runs, and the overlaid curves
    assert "Curves across runs" in page
    assert 'src="http' not in page and "href=" not in page
    assert not re.search(r'src="(?!data:)', page)  # no file the page would need beside it
    assert page.count('class="num best"') >= 2  # test/accuracy and test/loss each have a best


def test_report_any_task_missing_files_and_escaping(tmp_path: Path) -> None:
    good = _fake_run(tmp_path / "a<b>", {"test/accuracy": 0.5, "test/loss": 1.5}, {"lr": 0.1})
    worse = _fake_run(
        tmp_path / "pruned", {"test/accuracy": 0.25, "test/loss": 0.5}, {"lr": 0.2},
        compression={"method": "prune-structured", "macs_after": 123456},
    )  # fmt: skip
    seg = tmp_path / "seg"
    seg.mkdir()
    (seg / "model.json").write_text(json.dumps({"model": "unet", "task": "segmentation"}))
    (seg / "metrics.csv").write_text("epoch,val/loss\n1,not-a-number\n")
    out = write_report([good, worse, seg], tmp_path / "r.html")
    page = out.read_text()
    assert "a&lt;b&gt;" in page and "a<b>" not in page
    assert "prune-structured" in page and "123,456" in page  # the compression entry
    assert "<th>compression</th>" in page.split("<h2>Configuration", 1)[0]
    assert "unet" in page and "segmentation" in page  # from model.json alone
    assert "No plots." in page and "<img" not in page  # nothing to draw, nothing drawn
    best = re.findall(r'<td class="num best" title="([^"]+)"', page)
    assert sorted(best) == ["0.5", "0.5"]  # the higher accuracy and the lower loss


def test_report_refusals(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", {"test/accuracy": 0.5}, {"lr": 0.1})
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnzooError, match="empty is not a cnnzoo run"):
        write_report([run, tmp_path / "empty"], tmp_path / "r.html")
    with pytest.raises(CnnzooError, match="missing is not a cnnzoo run"):
        write_report([tmp_path / "missing"], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    out = tmp_path / "r.html"
    out.write_text("mine")
    with pytest.raises(CnnzooError, match="already exists"):
        write_report([run], out)
    assert out.read_text() == "mine"
    assert "<html" in write_report([run], out, overwrite=True).read_text()


def test_cli_report(tmp_path: Path) -> None:
    a = _fake_run(tmp_path / "a", {"test/accuracy": 0.5}, {"lr": 0.1})
    b = _fake_run(tmp_path / "b", {"test/accuracy": 0.75}, {"lr": 0.3})
    out = tmp_path / "r.html"
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(a), str(b), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "0.75" in out.read_text()
    again = runner.invoke(app, ["report", str(a), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = runner.invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "x.html")])
    assert bad.exit_code == 2 and "is not a cnnzoo run" in bad.output
