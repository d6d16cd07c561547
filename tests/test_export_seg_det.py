"""ONNX export of segmenters and one-stage detectors: the graph matches PyTorch on real test
scenes, the detections after the documented post-processing are PyTorch's, the manifest says
what the outputs are, and a two-stage detector is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from cnnzoo.compress.runtime import ort_outputs, ort_session
from cnnzoo.errors import CnnzooError
from cnnzoo.models.detection.postprocess import score_candidates
from cnnzoo.rundir import RunDir
from cnnzoo.workflows.export import export_run


def _scene_images(name: str, n: int) -> tuple[torch.nn.Module, dict, torch.Tensor]:
    from cnnzoo.families import family_for

    run = RunDir.open(name)
    model, spec = run.load_model()
    x, what = family_for(spec["task"]).check_images(run, spec, n)
    assert "test images of scenes" in what  # real scenes, not the noise fallback
    return model.eval(), spec, x


def test_a_segmenter_exports_its_logits(tmp_path) -> None:
    result = export_run("unet.scenes", tmp_path / "unet.onnx", check_images=8)
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-3
    assert result.images_checked == 8 and result.postprocessing is None
    manifest = json.loads(result.manifest.read_text())
    assert manifest["output"]["name"] == "logits"
    assert manifest["output"]["shape"] == ["batch", 11, 96, 96]
    assert "argmax over axis 1" in manifest["output"]["meaning"]
    model, _, x = _scene_images("unet.scenes", 4)
    (logits,) = ort_outputs(ort_session(result.onnx, threads=1), x.numpy())
    with torch.no_grad():
        expected = model(x).argmax(1).numpy()
    assert (logits.argmax(1) == expected).mean() > 0.999  # the same class on every pixel


@pytest.mark.parametrize("name", ["yolov3.scenes", "ssd.scenes"])
def test_a_one_stage_detector_exports_candidates_and_nms_gives_pytorchs_boxes(
    name: str, tmp_path
) -> None:
    result = export_run(name, tmp_path / "det.onnx", check_images=8)
    manifest = json.loads(result.manifest.read_text())
    boxes_info, scores_info = manifest["outputs"]
    assert (boxes_info["name"], scores_info["name"]) == ("boxes", "scores")
    assert boxes_info["shape"][0] == "batch" and boxes_info["shape"][2] == 4
    assert scores_info["shape"][2] == len(manifest["classes"]) == 10
    post = manifest["postprocessing"]
    assert post["iou_threshold"] == 0.5 and post["score_threshold"] == 0.3
    model, _, x = _scene_images(name, 6)
    session = ort_session(result.onnx, threads=1)
    for batch in (x[:1], x):  # the batch axis is dynamic
        boxes, scores = (torch.from_numpy(a) for a in ort_outputs(session, batch.numpy()))
        onnx_dets = score_candidates(boxes, scores, (96, 96), 0.3, 0.5, 100)
        with torch.no_grad():
            torch_dets = model.decode(model(batch), (96, 96), 0.3, 0.5, 100)
        assert len(onnx_dets) == len(batch)
        for mine, theirs in zip(onnx_dets, torch_dets, strict=True):
            assert torch.equal(mine["labels"], theirs["labels"])
            np.testing.assert_allclose(mine["boxes"], theirs["boxes"], atol=1e-2)
            np.testing.assert_allclose(mine["scores"], theirs["scores"], atol=1e-4)
    assert sum(len(d["labels"]) for d in torch_dets) > 0  # the check compared real boxes


def test_a_two_stage_detector_is_refused(tmp_path) -> None:
    with pytest.raises(CnnzooError, match="fast_rcnn selects its regions inside the network"):
        export_run("fast_rcnn.scenes", tmp_path / "f.onnx")
    assert not (tmp_path / "f.onnx").exists()


def test_the_command_line_prints_the_post_processing(tmp_path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    cli = [sys.executable, "-m", "cnnzoo.cli", "export"]
    out = subprocess.run([*cli, "yolov3.scenes", "--out", str(tmp_path / "y.onnx"),
                          "--check-images", "4"], capture_output=True, text=True, env=env,
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "after the graph: keep each (candidate, class) pair" in out.stdout
    refused = subprocess.run([*cli, "fast_rcnn.scenes", "--out", str(tmp_path / "f.onnx")],
                             capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
