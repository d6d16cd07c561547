"""ONNX export, the check against PyTorch, the device manifest and int8 quantization."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.compress.export import device_manifest, export_onnx, verify_onnx
from cnnzoo.compress.quantize import quantize_int8
from cnnzoo.compress.runtime import median_latency_ms, ort_logits, ort_session
from cnnzoo.data.datamodule import ClassificationData, prepare_batch
from cnnzoo.data.fashion_mnist import load_fashion_mnist_mini
from cnnzoo.errors import CnnzooError

SHAPE = (1, 28, 28)
RIDGE = 10.0  # weight of the L2 penalty in the head fit
FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)
FAMILIES = {
    "convnet": {"widths": (8, 16), "hidden": 32},
    "resnet20": {},
    "squeezenet1_1": {"small_input": True},
}


def _build(name: str, seed: int = 0) -> nn.Module:
    """A model that behaves like a trained one, cheaply: BatchNorm statistics of real images
    (so folding BN into Conv is exercised) and a last linear layer fitted by ridge regression
    to their labels (so predictions spread over the classes, as a trained model's do)."""
    torch.manual_seed(seed)
    model = cnnzoo.create_model(name, num_classes=10, in_channels=1, **FAMILIES[name])
    images, labels = load_fashion_mnist_mini("train")
    pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:256]
    x, y = prepare_batch(images[pick], FMNIST_MEAN, FMNIST_STD), labels[pick]
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: the statistics of these batches
    model.train()
    with torch.no_grad():
        model(x)
        model(x.flip(-1))
    model.eval()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears:
        head, features = linears[-1], []
        hook = head.register_forward_hook(lambda mod, args, out: features.append(args[0]))
        with torch.no_grad():
            model(x)
        hook.remove()
        f = torch.cat([features[0], torch.ones(len(x), 1)], 1)
        target = nn.functional.one_hot(y, 10).float()
        solution = torch.linalg.solve(f.T @ f + RIDGE * torch.eye(f.shape[1]), f.T @ target)
        with torch.no_grad():
            head.weight.copy_(solution[:-1].T)
            head.bias.copy_(solution[-1])
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Callable[[str], tuple[nn.Module, Path]]:
    """Export each family once per module: ``exported(name) -> (model, path)``."""
    cache: dict[str, tuple[nn.Module, Path]] = {}
    folder = tmp_path_factory.mktemp("onnx")

    def get(name: str) -> tuple[nn.Module, Path]:
        if name not in cache:
            model = _build(name)
            cache[name] = model, export_onnx(model, folder / name / "model.onnx", SHAPE)
        return cache[name]

    return get


def _test_images(n: int, offset: int = 0) -> torch.Tensor:
    images, _ = load_fashion_mnist_mini("test")
    return prepare_batch(images[offset : offset + n], FMNIST_MEAN, FMNIST_STD)


# -- export ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FAMILIES))
def test_export_matches_pytorch_at_batch_1_and_5_from_one_file(exported, name):
    model, path = exported(name)
    assert verify_onnx(model, path, _test_images(1)) < 1e-4
    assert verify_onnx(model, path, _test_images(5, offset=7)) < 1e-4
    graph = onnx.load(str(path)).graph
    assert [n.op_type for n in graph.node].count("BatchNormalization") == 0
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert not batch_dim.HasField("dim_value")  # symbolic, not fixed
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["logits"]


def test_export_is_one_self_contained_file_at_opset_18_or_more(exported):
    _, path = exported("resnet20")
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]
    proto = onnx.load(str(path), load_external_data=False)
    assert all(not t.external_data for t in proto.graph.initializer)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 18


def test_verify_raises_for_the_file_of_other_weights(exported):
    _, path = exported("resnet20")
    other = _build("resnet20", seed=1)
    with pytest.raises(CnnzooError, match="max abs difference"):
        verify_onnx(other, path, _test_images(4))


def test_verify_raises_for_the_file_of_another_model(exported):
    _, path = exported("convnet")
    other = cnnzoo.create_model("resnet20", num_classes=7, in_channels=1).eval()
    with pytest.raises(CnnzooError, match="different model"):
        verify_onnx(other, path, _test_images(2))


def test_export_refuses_an_existing_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"keep me")
    with pytest.raises(CnnzooError, match="already exists"):
        export_onnx(_build("convnet"), target, SHAPE)
    assert target.read_bytes() == b"keep me"


def test_export_rejects_an_opset_the_exporter_cannot_write(tmp_path):
    with pytest.raises(CnnzooError, match="opset 16"):
        export_onnx(_build("convnet"), tmp_path / "m.onnx", SHAPE, opset=16)
    assert not (tmp_path / "m.onnx").exists()


# -- device manifest ---------------------------------------------------------------------


def test_manifest_recipe_in_numpy_reproduces_cnnzoo_preprocessing_and_logits(exported):
    model, path = exported("convnet")
    spec = ClassificationData("fashion-mnist-mini", val_fraction=0, augment=False).spec
    manifest = device_manifest(
        path,
        model_name="convnet",
        class_names=spec.class_names,
        mean=spec.mean,
        std=spec.std,
        image_size=spec.image_size,
    )
    manifest = json.loads(json.dumps(manifest))  # what an app reads back from model.json
    pixels, _ = load_fashion_mnist_mini("test")
    pixels = pixels[:16]

    pre = manifest["preprocessing"]
    assert pre["resize"] is None
    mean = np.asarray(pre["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(pre["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    x = (pixels.numpy().astype(np.float32) * np.float32(pre["scale"]) - mean) / std

    reference = prepare_batch(pixels, spec.mean, spec.std)
    np.testing.assert_allclose(x, reference.numpy(), atol=1e-5)
    assert manifest["input"]["shape"][1:] == [1, 28, 28]
    assert manifest["classes"] == list(spec.class_names)
    session = ort_session(path, threads=1)
    assert manifest["input"]["name"] == session.get_inputs()[0].name
    logits = session.run([manifest["output"]["name"]], {manifest["input"]["name"]: x})[0]
    with torch.no_grad():
        expected = model(reference).numpy()
    np.testing.assert_array_equal(logits.argmax(1), expected.argmax(1))


def test_manifest_describes_the_resize_and_broadcasts_one_mean_to_all_channels(tmp_path):
    model = cnnzoo.create_model("convnet", num_classes=3, in_channels=3, widths=(4, 8)).train()
    path = export_onnx(model, tmp_path / "m.onnx", (3, 32, 32))
    assert model.training  # export switches to eval only while tracing
    manifest = device_manifest(
        path,
        model_name="convnet",
        class_names=["a", "b", "c"],
        mean=[0.5],
        std=[0.25],
        image_size=[28, 28],
        resize_to=32,
        quantization="int8",
    )
    pre = manifest["preprocessing"]
    assert pre["mean"] == [0.5, 0.5, 0.5] and pre["std"] == [0.25, 0.25, 0.25]
    assert pre["color"] == "RGB"
    assert pre["resize"]["size"] == [32, 32] and pre["resize"]["antialias"] is False
    assert manifest["model"]["quantization"] == "int8"
    assert manifest["model"]["bytes"] == path.stat().st_size


def test_manifest_rejects_class_names_that_do_not_fit_the_outputs(exported):
    _, path = exported("convnet")
    with pytest.raises(CnnzooError, match="3 class names for a model with 10 outputs"):
        device_manifest(
            path, model_name="convnet", class_names=["a", "b", "c"],
            mean=FMNIST_MEAN, std=FMNIST_STD, image_size=(28, 28),
        )  # fmt: skip


# -- int8 ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_resnet20(exported) -> tuple[nn.Module, Path, Path]:
    model, fp32 = exported("resnet20")
    images, _ = load_fashion_mnist_mini("train")
    calibration = prepare_batch(images[-256:], FMNIST_MEAN, FMNIST_STD).numpy()
    int8 = quantize_int8(fp32, fp32.with_name("model-int8.onnx"), calibration)
    return model, fp32, int8


def test_int8_model_is_qdq_and_over_3x_smaller(int8_resnet20):
    _, fp32, int8 = int8_resnet20
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert fp32.stat().st_size / int8.stat().st_size >= 3.0


def _agreement(model: nn.Module, int8: Path, x: torch.Tensor) -> tuple[float, float]:
    """Share of equal argmax, and mean |int8 - fp32| logit error relative to the logits' std."""
    with torch.no_grad():
        expected = model(x).numpy()
    logits = ort_logits(ort_session(int8, threads=1), x.numpy(), batch_size=5)
    assert logits.shape == expected.shape and np.isfinite(logits).all()
    assert len(np.unique(expected.argmax(1))) >= 5  # agreement means something
    agree = float((logits.argmax(1) == expected.argmax(1)).mean())
    return agree, float(np.abs(logits - expected).mean() / expected.std())


def test_int8_model_runs_and_agrees_with_fp32_on_most_images(int8_resnet20):
    # The stand-in model has random convolutions and a fitted head, which magnifies
    # quantization noise more than training does (a trained ResNet-20 keeps 99 % of its
    # argmaxes); broken calibration gives ~10 % agreement and an error above 1.
    model, _, int8 = int8_resnet20
    agree, error = _agreement(model, int8, _test_images(64, offset=100))
    assert agree >= 0.75
    assert error < 0.25


def test_int8_uses_the_calibration_ranges(int8_resnet20, tmp_path):
    # Calibrating on un-normalised pixels (a classic mistake) must hurt: the ranges matter.
    model, fp32, int8 = int8_resnet20
    images, _ = load_fashion_mnist_mini("train")
    raw = images[-256:].numpy().astype(np.float32) / 255.0
    wrong = quantize_int8(fp32, tmp_path / "wrong.onnx", raw)
    x = _test_images(64, offset=100)
    right_agree, right_error = _agreement(model, int8, x)
    wrong_agree, wrong_error = _agreement(model, wrong, x)
    assert wrong_agree < right_agree - 0.3
    assert wrong_error > 3 * right_error


def test_quantize_errors_clearly_on_empty_calibration(exported, tmp_path):
    _, fp32 = exported("resnet20")
    with pytest.raises(CnnzooError, match="calibration data is empty"):
        quantize_int8(fp32, tmp_path / "q.onnx", np.zeros((0, 1, 28, 28), np.float32))
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.zeros((8, 3, 28, 28), np.float32), "axis 1 differs"),
        (np.zeros((8, 28, 28), np.float32), r"expected preprocessed images \(N, C, H, W\)"),
        (np.zeros((8, 1, 28, 28), np.uint8), "expected float32 images"),
    ],
)
def test_quantize_rejects_calibration_that_does_not_fit_the_model(
    exported, tmp_path, data, message
):
    _, fp32 = exported("resnet20")
    with pytest.raises(CnnzooError, match=message):
        quantize_int8(fp32, tmp_path / "q.onnx", data)


def test_quantize_refuses_an_existing_output(exported, tmp_path):
    _, fp32 = exported("resnet20")
    target = tmp_path / "q.onnx"
    target.write_bytes(b"keep me")
    with pytest.raises(CnnzooError, match="already exists"):
        quantize_int8(fp32, target, _test_images(4).numpy())
    assert target.read_bytes() == b"keep me"


# -- runtime -------------------------------------------------------------------------------


def test_ort_logits_in_small_batches_equals_one_batch(exported):
    _, path = exported("convnet")
    session = ort_session(path, threads=2)
    assert session.get_session_options().intra_op_num_threads == 2
    x = _test_images(7).numpy()
    np.testing.assert_allclose(ort_logits(session, x, batch_size=2), ort_logits(session, x))


def test_ort_session_names_a_missing_file(tmp_path):
    with pytest.raises(CnnzooError, match="nothing.onnx does not exist"):
        ort_session(tmp_path / "nothing.onnx")


def test_median_latency_calls_warmup_plus_repeats_times():
    calls = []
    ms = median_latency_ms(lambda: calls.append(1), repeats=7, warmup=2)
    assert len(calls) == 9
    assert ms >= 0.0
