"""int8 for segmenters and one-stage detectors, and ``bench`` on them: the int8 run records
its task metric beside the fp32 graph's (both measured by the family's evaluation code), a
detector keeps its prediction heads and decoding in fp32, and ``bench`` reports each run's
own metric."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import TensorProto, helper

import cnnzoo
from cnnzoo.compress.quantize import float_tail_nodes
from cnnzoo.errors import CnnzooError
from cnnzoo.families import family_for
from cnnzoo.families.deployed import torch_graph
from cnnzoo.rundir import INT8_FILE, RunDir
from cnnzoo.workflows.compress import CompressConfig, compress


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNZOO_HOME", str(tmp_path / "home"))


def _int8(name: str, out) -> dict:
    compress(CompressConfig(source=name, out=str(out), quantize="int8", calibration=16,
                            progress=False, accelerator="cpu"))  # fmt: skip
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def unet_int8(tmp_path_factory):
    out = tmp_path_factory.mktemp("unet") / "int8"
    return out, _int8("unet.scenes", out)


@pytest.fixture(scope="module")
def yolo_int8(tmp_path_factory):
    out = tmp_path_factory.mktemp("yolo") / "int8"
    return out, _int8("yolov3.scenes", out)


def _graph(*nodes: onnx.NodeProto) -> onnx.GraphProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_graph(list(nodes), "g", [x], [y])


def test_the_float_tail_is_what_follows_the_last_convolutions():
    g = _graph(
        helper.make_node("Conv", ["x", "w1"], ["a"], name="body"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("Conv", ["b", "w2"], ["c"], name="head"),
        helper.make_node("Sigmoid", ["c"], ["d"], name="sigmoid"),
        helper.make_node("Mul", ["d", "b"], ["y"], name="decode"),  # also reads the body
    )
    assert float_tail_nodes(g) == ["sigmoid", "decode"]
    assert float_tail_nodes(g, heads=True) == ["head", "sigmoid", "decode"]


def test_a_segmenter_int8_run_records_miou_of_both_graphs(unet_int8):
    out, metrics = unet_int8
    scores, info = metrics["metrics"], metrics["compression"]
    assert metrics["task"] == "segmentation" and (out / INT8_FILE).is_file()
    record = info["int8"]
    assert record["metric"] == "miou"
    assert (
        record["int8"] == scores["test/miou"]
        and record["fp32_onnx"] == scores["test/miou_fp32_onnx"]
    )
    assert record["holds"] == (record["drop"] <= record["tolerance"])
    # ONNX Runtime fp32 scores what PyTorch scored (the shipped set's test mIoU)
    expected = cnnzoo.weights.get("unet.scenes").metrics["test/miou"]
    assert scores["test/miou_fp32_onnx"] == pytest.approx(expected, abs=1e-3)
    assert abs(scores["test/miou"] - expected) < 0.05  # int8 is close, not equal
    assert scores["test/miou"] != scores["test/miou_fp32_onnx"]
    assert info["onnx_fp32_bytes"] / info["onnx_int8_bytes"] > 3.0
    manifest = json.loads((out / "model.int8.json").read_text())
    assert manifest["model"]["quantization"] == "int8"
    assert manifest["measured"]["metric"] == "miou" and manifest["measured"]["split"] == "test"
    assert manifest["output"]["name"] == "logits"


def test_a_detector_int8_keeps_heads_and_decoding_fp32_and_records_map(yolo_int8):
    out, metrics = yolo_int8
    scores, record = metrics["metrics"], metrics["compression"]["int8"]
    assert metrics["task"] == "detection" and record["metric"] == "map"
    assert {"test/map", "test/map_50", "test/map_fp32_onnx", "test/map_50_fp32_onnx"} <= set(scores)
    expected = cnnzoo.weights.get("yolov3.scenes").metrics["test/map"]
    assert scores["test/map_fp32_onnx"] == pytest.approx(expected, abs=1e-3)
    graph = onnx.load(str(out / INT8_FILE)).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    float_convs = [n.name for n in convs if made_by.get(n.input[1]) != "DequantizeLinear"]
    assert len(float_convs) == 3  # the three scales' 1x1 prediction convolutions
    assert len(convs) > 10  # the backbone and neck are int8
    for op in ("Exp", "Sigmoid"):  # the decoding reads float tensors
        for node in (n for n in graph.node if n.op_type == op):
            assert made_by.get(node.input[0]) != "DequantizeLinear", node.name
    manifest = json.loads((out / "model.int8.json").read_text())
    assert manifest["postprocessing"]["iou_threshold"] == 0.5
    assert manifest["measured"]["fp32_tail"] is True


def test_a_detector_graph_in_pytorch_scores_what_eval_scores():
    family = family_for("detection")
    run = RunDir.open("yolov3.scenes")
    model, spec = run.load_model()
    plan = family.export_plan(model, spec, run.label)
    assert family.score(run, torch_graph(plan.module)) == pytest.approx(family.score(run))


def test_compress_takes_only_int8_for_segmenters_and_detectors(tmp_path):
    for name in ("unet.scenes", "yolov3.scenes"):
        for options, flag in (({"prune": "structured:0.5"}, "--prune structured:0.5"),
                              ({"quantize": "int8", "qat": True}, "--quantize int8 --qat"),
                              ({"quantize": "ternary"}, "--quantize ternary")):  # fmt: skip
            with pytest.raises(CnnzooError, match=f"`cnnzoo compress {flag}` does not apply"):
                compress(CompressConfig(source=name, out=str(tmp_path / "c"), **options))
            assert not (tmp_path / "c").exists()


def test_bench_reports_each_runs_own_metric(unet_int8):
    from cnnzoo.workflows.bench import bench

    out, metrics = unet_int8
    report = bench([str(out), "yolov3.scenes"], threads=1, repeats=1, onnx=False)
    (int8_row, yolo_row) = report.rows
    assert (int8_row.variant, int8_row.metric) == ("onnxruntime int8", "miou")
    assert int8_row.score == pytest.approx(metrics["metrics"]["test/miou"], abs=1e-6)
    assert (yolo_row.variant, yolo_row.metric) == ("pytorch fp32", "map")
    expected = cnnzoo.weights.get("yolov3.scenes").metrics["test/map"]
    assert yolo_row.score == pytest.approx(expected, abs=1e-3)
    assert set(yolo_row.scores) == {"map", "map_50", "map_75"}
    assert yolo_row.latency_ms[32] > yolo_row.latency_ms[1] > 0
    assert "| yolov3.scenes | pytorch fp32 | map |" in report.markdown()


def test_exporting_an_int8_detector_run_keeps_its_measured_map(yolo_int8, tmp_path):
    from cnnzoo.workflows.export import export_run

    out, metrics = yolo_int8
    done = export_run(out, tmp_path / "dev" / "yolo-int8.onnx", fmt="onnx-int8")
    manifest = json.loads(done.manifest.read_text())
    assert manifest["model"]["quantization"] == "int8"
    assert [o["name"] for o in manifest["outputs"]] == ["boxes", "scores"]
    assert manifest["measured"]["int8"] == metrics["metrics"]["test/map"]
    assert manifest["postprocessing"]["score_threshold"] == 0.3
