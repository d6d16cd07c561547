"""The weights catalog: torchvision's ImageNet entries fit cnnzoo's models, names resolve (or
fail with close matches), storage types round-trip, and the preprocessing matches what the
weights expect."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import cnnzoo
from cnnzoo.errors import CnnzooError
from cnnzoo.weights import storage

TV = cnnzoo.weights.list_weights()
TORCHVISION = [ws for ws in TV if ws.storage == "pth"]
PUBLISHED = {r["name"]: r for r in json.loads(cnnzoo.weights.catalog.TORCHVISION.read_text())}


def test_every_classifier_with_a_torchvision_twin_has_its_imagenet_weights():
    twins = {n for n in cnnzoo.list_models("classification") if cnnzoo.model_info(n).torchvision}
    assert twins == {ws.model for ws in TORCHVISION if ws.tag == "tv_in1k"}
    assert {"alexnet", "vgg16_bn", "googlenet", "resnet152", "mobilenet_v2"} <= twins
    assert {"squeezenet1_1", "shufflenet_v2_x1_0"} <= twins


@pytest.mark.parametrize("ws", TORCHVISION, ids=lambda ws: ws.name)
def test_torchvision_entry_fits_the_cnnzoo_model(ws):
    assert ws.url.startswith("https://download.pytorch.org/models/")
    assert ws.file == ws.url.rsplit("/", 1)[1]
    # torchvision's file names publish the start of the file's SHA-256.
    assert re.search(rf"-{ws.sha256}\.pth$", ws.file) and len(ws.sha256) >= 8
    with torch.device("meta"):
        model = cnnzoo.create_model(ws.model, **ws.spec["kwargs"])
        full = cnnzoo.create_model(ws.model, **{**ws.spec["kwargs"], "aux_logits": True}) if (
            ws.model == "googlenet") else model  # fmt: skip
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[ws.name]["num_params"]
    assert sum(p.numel() for p in full.parameters()) == ws.num_params  # what the file holds
    assert len(ws.classes) == 1000 and ws.classes[0] == "tench"
    assert ws.preprocessing.size == (224, 224) and ws.preprocessing.resize in (232, 256)
    assert 0.5 < ws.metrics["imagenet_val/acc1"] < ws.metrics["imagenet_val/acc5"] < 1


def test_googlenet_mean_std_of_one_half_equals_torchvision_transform_input():
    """torchvision's GoogLeNet weights expect transform_input=True; cnnzoo's entry normalises
    with mean = std = 0.5 instead, which must give the same logits."""
    from torchvision.models import googlenet as tv_googlenet

    torch.manual_seed(0)
    tv = tv_googlenet(weights=None, aux_logits=False, init_weights=True, transform_input=True)
    tv.eval()
    ours = cnnzoo.create_model("googlenet", aux_logits=False).eval()
    cnnzoo.load_weights(ours, tv.state_dict())
    raw = torch.rand(2, 3, 96, 96)
    imagenet = cnnzoo.weights.get("resnet50.tv_in1k").preprocessing
    half = cnnzoo.weights.get("googlenet.tv_in1k").preprocessing
    assert half.mean == (0.5, 0.5, 0.5) and half.std == (0.5, 0.5, 0.5)

    def norm(x: torch.Tensor, p) -> torch.Tensor:
        return (x - torch.tensor(p.mean)[:, None, None]) / torch.tensor(p.std)[:, None, None]

    with torch.no_grad():
        expected = tv(norm(raw, imagenet))
        got = ours(norm(raw, half))
    assert (got - expected).abs().max().item() < 1e-4
    assert expected.std() > 1e-3


def test_transforms_resize_the_shorter_side_then_crop_and_normalise():
    tf = cnnzoo.weights.get("resnet18.tv_in1k").transforms()
    img = Image.fromarray(np.full((300, 400, 3), (255, 0, 128), dtype=np.uint8))
    x = tf(img)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    mean = torch.tensor([0.485, 0.456, 0.406])
    std = torch.tensor([0.229, 0.224, 0.225])
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - mean) / std
    assert torch.allclose(x[:, 112, 112], expected, atol=1e-3)
    gray = cnnzoo.weights.Preprocessing(1, (28, 28), None, (0.5,), (0.25,)).transforms()
    y = gray(Image.fromarray(np.full((50, 40, 3), 255, dtype=np.uint8)))
    assert y.shape == (1, 28, 28) and torch.allclose(y, torch.full_like(y, 2.0), atol=1e-3)


@pytest.mark.parametrize(
    ("name", "model", "message"),
    [
        ("resnet5.tv_in1k", None, "did you mean resnet50.tv_in1k"),
        ("tv_in1kk", "resnet50", "did you mean resnet50.tv_in1k"),
        ("resnet18.tv_in1k", "resnet50", "holds a resnet18, not a resnet50"),
    ],
)
def test_bad_names_get_one_line_with_close_matches(name, model, message):
    with pytest.raises(CnnzooError, match=message):
        cnnzoo.weights.get(name, model=model)


def test_create_model_refuses_weights_of_another_model_before_downloading(monkeypatch):
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    with pytest.raises(CnnzooError, match="holds a vgg16, not a resnet50"):
        cnnzoo.create_model("resnet50", weights="vgg16.tv_in1k")
    with pytest.raises(CnnzooError, match="no file, folder or weight set 'runs_r20'"):
        cnnzoo.create_model("resnet20", weights="runs_r20")


def test_list_filters_by_model_with_wildcards_and_by_task():
    names = [ws.name for ws in cnnzoo.weights.list_weights(model="resnet1*")]
    assert names == sorted(names) and "resnet18.tv_in1k" in names
    assert all(n.split(".")[0] in ("resnet18", "resnet101", "resnet152") for n in names)
    assert cnnzoo.weights.list_weights(model="no_such_model") == []
    tasks = {ws.task for ws in cnnzoo.weights.list_weights(task="classification")}
    assert tasks == {"classification"}


def test_register_checks_the_name_fits_the_model():
    ws = cnnzoo.weights.get("resnet18.tv_in1k")
    from dataclasses import replace

    with pytest.raises(CnnzooError, match="must be MODEL.TAG with MODEL = 'resnet18'"):
        cnnzoo.weights.register(replace(ws, name="resnet34.mine"))
    with pytest.raises(CnnzooError, match="already exists"):
        cnnzoo.weights.register(ws)


# -- storage ------------------------------------------------------------------------------
def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "conv.weight": torch.randn(16, 8, 3, 3) * torch.linspace(0.01, 2, 16)[:, None, None, None],
        "conv.bias": torch.randn(16),
        "bn.num_batches_tracked": torch.tensor(7),
        "fc.weight": torch.randn(10, 4),  # small: fp16, not int8
    }


def test_fp16_storage_round_trips_within_half_precision():
    state = _state()
    tensors, header = storage.encode(state, "fp16")
    assert tensors["conv.weight"].dtype == torch.float16
    back = storage.decode(tensors, header)
    for key, value in state.items():
        assert back[key].dtype == value.dtype
        assert torch.allclose(back[key].float(), value.float(), rtol=1e-3, atol=1e-4)


def test_int8_storage_keeps_each_channel_within_half_a_step():
    state = _state()
    tensors, header = storage.encode(state, "int8")
    assert tensors["conv.weight"].dtype == torch.int8
    assert tensors["conv.weight.int8_scale"].shape == (16,)
    assert tensors["fc.weight"].dtype == torch.float16  # under INT8_MIN_ELEMENTS
    back = storage.decode(tensors, header)
    step = state["conv.weight"].abs().amax(dim=(1, 2, 3)) / 127
    error = (back["conv.weight"] - state["conv.weight"]).abs().amax(dim=(1, 2, 3))
    assert torch.all(error <= step / 2 + 1e-7)
    assert back["bn.num_batches_tracked"].item() == 7
    assert set(back) == set(state)


def test_read_safetensors_expands_stored_files_and_leaves_plain_ones(tmp_path):
    state = _state()
    tensors, header = storage.encode(state, "int8")
    save_file(tensors, tmp_path / "int8.safetensors", metadata=header)
    save_file(state, tmp_path / "plain.safetensors")
    expanded = storage.read_safetensors(tmp_path / "int8.safetensors")
    assert expanded["conv.weight"].dtype == torch.float32
    plain = storage.read_safetensors(tmp_path / "plain.safetensors")
    assert all(torch.equal(plain[k], state[k]) for k in state)
    with pytest.raises(CnnzooError, match="unknown storage 'int4'"):
        storage.encode(state, "int4")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CnnzooError, match="cannot read weights from .*bad.safetensors"):
        storage.read_safetensors(tmp_path / "bad.safetensors")


def test_torchvision_catalog_is_what_the_script_writes():
    """The catalog file lists each twin's V1 weights (and V2 where torchvision has them)."""
    from cnnzoo.weights.catalog import TORCHVISION

    rows = json.loads(TORCHVISION.read_text())
    names = [r["name"] for r in rows]
    assert len(names) == len(set(names)) == len(TORCHVISION_NAMES := set(names))
    assert {"resnet50.tv_in1k", "resnet50.tv2_in1k", "mobilenet_v2.tv2_in1k"} <= TORCHVISION_NAMES


def test_register_refuses_a_hash_that_is_not_hex():
    from dataclasses import replace

    ws = cnnzoo.weights.get("resnet18.tv_in1k")
    with pytest.raises(CnnzooError, match="sha256 must be 8 to 64 hex digits"):
        cnnzoo.weights.register(replace(ws, name="resnet18.mine", sha256="not-a-hash"))
    with pytest.raises(CnnzooError, match="sha256 must be 8 to 64 hex digits"):
        cnnzoo.weights.register(replace(ws, name="resnet18.mine", sha256="abc"))


@pytest.mark.parametrize("size", [(300, 400), (400, 300), (256, 256), (231, 517)])
def test_predict_preprocessing_is_torchvisions_resize_then_centre_crop(tmp_path, size):
    """``cnnzoo predict`` with ImageNet weights resizes the shorter side and centre-crops
    without importing torchvision; the result is torchvision's Resize + CenterCrop exactly."""
    from torchvision.transforms.v2 import functional as TF

    from cnnzoo.data.folder import load_image
    from cnnzoo.families.classification.predict import load_for_model

    rng = np.random.default_rng(0)
    path = tmp_path / "x.png"
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    data = cnnzoo.weights.get("resnet50.tv_in1k").spec["data"]
    ours = load_for_model(path, data)
    image = load_image(path, 3)
    expected = TF.center_crop(TF.resize(image, [256], antialias=True), [224, 224])
    assert ours.shape == (3, 224, 224) and torch.equal(ours, expected)
