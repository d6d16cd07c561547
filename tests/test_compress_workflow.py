"""cnnzoo compress / export / bench on real (tiny) runs: each makes a run that loads and scores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnzoo.errors import CnnzooError
from cnnzoo.rundir import INT8_FILE, RunDir
from cnnzoo.summary import count_macs
from cnnzoo.workflows.compress import CompressConfig, compress
from cnnzoo.workflows.train import TrainConfig, train


def _train(out: Path, model: str = "resnet20", **kwargs) -> Path:
    cfg = TrainConfig(model=model, data="fashion-mnist-mini", out=str(out), epochs=1,
                      batch_size=64, subset=256, val_fraction=0.0, progress=False,
                      accelerator="cpu", lr=0.05, **kwargs)  # fmt: skip
    return train(cfg).run_dir


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("base") / "r20")


def _compress(base: Path, out: Path, **options) -> dict:
    result = compress(CompressConfig(source=str(base), out=str(out), progress=False,
                                     accelerator="cpu", finetune_epochs=1, **options))  # fmt: skip
    assert result.run_dir == out
    return json.loads((out / "metrics.json").read_text())


def _accuracy(run: Path) -> float:
    from cnnzoo.families.classification.evaluate import evaluate

    return evaluate(run, accelerator="cpu", plot=False).accuracy


def test_structured_pruning_makes_a_smaller_run_that_reloads(base, tmp_path):
    out = tmp_path / "pruned"
    metrics = _compress(base, out, prune="structured:0.5")
    info = metrics["compression"]
    assert info["macs_after"] <= 0.5 * info["macs_before"]
    assert info["params_after"] < info["params_before"]
    model, spec = RunDir.open(out).load_model()  # rebuilt from model.json's shapes, no pickle
    assert "shapes" in spec
    assert count_macs(model, (1, 28, 28)) == info["macs_after"]
    assert sum(p.numel() for p in model.parameters()) == info["params_after"]
    # the reloaded run scores what training measured on the same test split
    assert _accuracy(out) == pytest.approx(metrics["metrics"]["test/accuracy"], abs=1e-6)


def test_unstructured_pruning_keeps_its_zeros_through_fine_tuning(base, tmp_path):
    out = tmp_path / "sparse"
    metrics = _compress(base, out, prune="unstructured:0.7", prune_rounds=1)
    model, _ = RunDir.open(out).load_model()
    pruned = metrics["compression"]["sparsity"]
    assert pruned["sparsity"] == pytest.approx(0.7, abs=1e-3)
    layers = [n for n in pruned["layers"]]
    weights = dict(model.named_modules())
    zeros = sum(int((weights[n].weight == 0).sum()) for n in layers)
    total = sum(weights[n].weight.numel() for n in layers)
    assert zeros / total >= 0.7 - 1e-3  # fine-tuning did not revive pruned weights
    assert metrics["compression"]["macs_after"] == metrics["compression"]["macs_before"]


def test_fine_tuning_trains_in_train_mode(base, tmp_path):
    # A run's model loads in eval mode; fine-tuning it there would leave BatchNorm's running
    # statistics frozen at the source's values (and train with them). They must move.
    out = tmp_path / "mode"
    _compress(base, out, prune="unstructured:0.1")
    source, _ = RunDir.open(base).load_model()
    tuned, _ = RunDir.open(out).load_model()
    old, new = dict(source.named_buffers()), dict(tuned.named_buffers())
    means = [n for n in old if n.endswith("running_mean")]
    assert means
    moved = [n for n in means if not torch.allclose(old[n], new[n])]
    assert len(moved) == len(means)
    assert int(new["stem.bn.num_batches_tracked"]) > int(old["stem.bn.num_batches_tracked"])


def test_iterative_unstructured_pruning_follows_its_schedule(base, tmp_path):
    out = tmp_path / "iter"
    result = compress(CompressConfig(source=str(base), out=str(out), progress=False,
                                     accelerator="cpu", finetune_epochs=2, prune_rounds=2,
                                     prune="unstructured:0.6"))  # fmt: skip
    assert result.compression["sparsity_schedule"] == pytest.approx([0.3, 0.6])
    assert result.compression["sparsity"]["sparsity"] == pytest.approx(0.6, abs=1e-3)


def test_int8_run_has_a_quarter_size_onnx_model_that_scores_like_fp32(base, tmp_path):
    out = tmp_path / "int8"
    metrics = _compress(base, out, quantize="int8", calibration=64)
    info = metrics["compression"]
    assert (out / INT8_FILE).is_file() and (out / "model.int8.json").is_file()
    assert info["onnx_fp32_bytes"] / info["onnx_int8_bytes"] > 3.0
    acc8, acc32 = metrics["metrics"]["test/accuracy"], info["onnx_fp32_accuracy"]
    assert abs(acc8 - acc32) <= 0.05
    assert acc32 == pytest.approx(_accuracy(base), abs=1e-6)  # ORT fp32 == PyTorch
    manifest = json.loads((out / "model.int8.json").read_text())
    assert manifest["model"]["quantization"] == "int8"


@pytest.mark.slow
def test_int8_with_qat_fine_tunes_on_the_int8_grid_then_quantizes(base, tmp_path):
    from cnnzoo.compress.qat import fake_quant_weight

    out = tmp_path / "qat"
    metrics = _compress(base, out, quantize="int8", qat=True, calibration=64)
    info, scores = metrics["compression"], metrics["metrics"]
    assert info["method"].startswith("quantization-aware training")
    assert (out / INT8_FILE).is_file() and RunDir.open(out).read_spec()["int8_onnx"] == INT8_FILE
    assert abs(scores["test/accuracy"] - scores["test/accuracy_qat_fp32"]) <= 0.05
    model, _ = RunDir.open(out).load_model()
    base_model, _ = RunDir.open(base).load_model()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(torch.equal(fake_quant_weight(m.weight), m.weight) for m in convs)
    changed = [
        not torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), base_model.state_dict().values(), strict=True)
    ]
    assert any(changed)  # fine-tuning moved the weights


def test_ternary_run_stores_three_values_per_layer(base, tmp_path):
    out = tmp_path / "tern"
    metrics = _compress(base, out, quantize="ternary")
    model, spec = RunDir.open(out).load_model()
    layers = spec["lowbit"]["layers"]
    modules = dict(model.named_modules())
    assert layers and all(len(torch.unique(modules[n].weight)) == 3 for n in layers)
    size = metrics["compression"]["packed_size"]
    assert size["bits_per_weight"] == 2 and size["ratio"] > 8


def test_distillation_trains_the_source_architecture_with_the_teacher(base, tmp_path):
    student = _train(tmp_path / "lenet", model="lenet5", label_smoothing=0.1)
    out = tmp_path / "kd"
    teacher_before = RunDir.open(base).weights.read_bytes()
    result = compress(CompressConfig(source=str(student), out=str(out), distill_from=str(base),
                                     temperature=3.0, alpha=0.7, progress=False,
                                     accelerator="cpu"))  # fmt: skip
    spec = RunDir.open(out).read_spec()
    assert spec["model"] == "lenet5"
    assert result.compression["teacher"] == "resnet20"
    assert result.compression["temperature"] == 3.0 and result.compression["alpha"] == 0.7
    assert RunDir.open(base).weights.read_bytes() == teacher_before
    # the recorded accuracy is the saved student's: eval re-runs the test split and agrees
    assert result.metrics["test/accuracy"] == pytest.approx(_accuracy(out), abs=1e-4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of"),
        ({"prune": "structured:0.5", "quantize": "int8"}, "exactly one of"),
        ({"quantize": "int4"}, "int4"),
        ({"prune": "half"}, "half"),
        ({"quantize": "ternary", "qat": True}, "--qat applies"),
    ],
)
def test_bad_options_are_clear_errors(base, tmp_path, options, message):
    with pytest.raises(CnnzooError, match=message):
        compress(CompressConfig(source=str(base), out=str(tmp_path / "x"), **options))
    assert not (tmp_path / "x").exists()


def test_existing_output_is_never_overwritten(base, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(CnnzooError, match="exists"):
        compress(CompressConfig(source=str(base), out=str(out), quantize="int8"))
    assert (out / "mine.txt").read_text() == "keep"


def test_export_writes_onnx_and_manifest_checked_against_pytorch(base, tmp_path):
    import onnxruntime as ort

    from cnnzoo.workflows.export import ATOL, export_run

    result = export_run(base, tmp_path / "dev" / "model.onnx")
    assert result.max_abs_diff is not None and result.max_abs_diff <= ATOL
    manifest = json.loads(result.manifest.read_text())
    assert manifest["verified"]["images"] == 32 and "test images" in manifest["verified"]["inputs"]
    session = ort.InferenceSession(str(result.onnx), providers=["CPUExecutionProvider"])
    for batch in (1, 7):  # dynamic batch
        x = np.zeros((batch, 1, 28, 28), np.float32)
        assert session.run(None, {"input": x})[0].shape == (batch, 10)
    with pytest.raises(CnnzooError, match="already exists"):
        export_run(base, tmp_path / "dev" / "model.onnx")
    with pytest.raises(CnnzooError, match="own model.json"):
        export_run(base, base / "model.onnx", overwrite=True)
    with pytest.raises(CnnzooError, match="no model.int8.onnx"):
        export_run(base, tmp_path / "dev" / "q.onnx", fmt="onnx-int8")


@pytest.mark.slow
def test_bench_rows_table_and_pareto(base, tmp_path):
    from cnnzoo.workflows.bench import bench

    sparse = tmp_path / "sparse"
    _compress(base, sparse, prune="unstructured:0.5")
    report = bench([str(base), str(sparse)], tmp_path / "b", threads=1, repeats=2)
    variants = [(r.run, r.variant) for r in report.rows]
    assert variants == [("r20", "pytorch fp32"), ("r20", "onnxruntime fp32"),
                        ("sparse", "pytorch fp32"), ("sparse", "onnxruntime fp32")]  # fmt: skip
    base_row, sparse_row = report.rows[0], report.rows[2]
    assert base_row.score == pytest.approx(report.rows[1].score, abs=1e-3)
    assert sparse_row.nonzero_params < 0.6 * sparse_row.params
    assert sparse_row.macs == base_row.macs  # zeros are still multiplied
    saved = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert saved["threads"] == 1 and len(saved["rows"]) == 4
    assert (tmp_path / "b" / "pareto.png").stat().st_size > 1000
    with pytest.raises(CnnzooError, match="already exists"):
        bench([str(base)], tmp_path / "b", threads=1, repeats=1)


def test_cli_compress_error_is_one_line(base, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "cnnzoo.cli", "compress", str(base), "--out", str(tmp_path / "y"),
         "--quantize", "int4"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2 and "int4" in out.stderr and "Traceback" not in out.stderr


def test_pareto_front_keeps_only_undominated_points():
    from cnnzoo.viz.pareto import pareto_front

    latency = [1.0, 2.0, 3.0, 0.5, 2.5]
    accuracy = [0.80, 0.90, 0.85, 0.70, 0.95]
    assert pareto_front(latency, accuracy) == [3, 0, 1, 4]


@pytest.mark.slow
def test_compression_experiment_tabulates_every_variant(tmp_path, monkeypatch):
    from cnnzoo.experiments import compression, run_experiment

    tiny = compression.CompressionSettings(
        data="fashion-mnist-mini", base="lenet5", base_epochs=1, student="convnet",
        student_kwargs={"widths": [4], "hidden": 16}, student_epochs=1,
        student_per_class=8, student_augment=False, finetune_epochs=1, calibration=32,
        subset=128, repeats=1, threads=1,
    )  # fmt: skip
    monkeypatch.setattr(compression, "QUICK", tiny)
    result = run_experiment("compression", out=tmp_path / "exp", quick=True)
    labels = [row["variant"] for row in result.rows]
    assert labels == [
        "lenet5 (base)", "lenet5 structured 50% MACs", "lenet5 unstructured 80%", "lenet5 int8",
        "lenet5 ternary", "lenet5 binary", "convnet alone", "convnet KD from lenet5",
    ]  # fmt: skip
    # the student (alone and distilled) gets the data-limited recipe, the base does not
    for run in ("student-convnet", "student-convnet-kd"):
        cfg = RunDir(tmp_path / "exp" / "runs" / run).read_config()
        assert (cfg["per_class"], cfg["augment"]) == (8, False)
        assert cfg["model_kwargs"] == {"widths": [4], "hidden": 16}
    base_cfg = RunDir(tmp_path / "exp" / "runs" / "base-lenet5").read_config()
    assert (base_cfg["per_class"], base_cfg["augment"]) == (None, True)
    runtimes = {row["variant"]: row["runtime"] for row in result.rows}
    assert runtimes["lenet5 int8"] == "onnxruntime int8"
    macs = {row["variant"]: float(row["MACs (M)"]) for row in result.rows}
    assert macs["lenet5 structured 50% MACs"] <= 0.5 * macs["lenet5 (base)"] + 0.01
    saved = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert len(saved["rows"]) == 8 and (tmp_path / "exp" / "pareto.png").is_file()
    assert "Distillation" in result.notes
