"""create_model(..., weights=PATH) and load_weights: cnnzoo and torchvision weights, a new head
for another number of classes, a first convolution adapted to another number of channels,
and clear errors for weights of another architecture.

Shape-only checks (reports, errors) run on the meta device; checks of values use small
models (ResNet-20, ConvNet) and one ResNet-18 against torchvision's, the oracle.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import Tensor, nn

from cnnzoo import CnnzooError, LoadReport, create_model, load_weights
from cnnzoo.models.weights import adapt_input_channels
from cnnzoo.rundir import RunDir

SMALL_CONVNET = {"widths": (8, 16), "hidden": 16}


def _randomize_bn_statistics(model: nn.Module) -> nn.Module:
    """Give every BN running mean/variance values other than (0, 1); returns ``model``."""
    torch.manual_seed(1)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if key.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif key.endswith("running_mean"):
                tensor.uniform_(-0.5, 0.5)
    return model


def _save(model: nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def _assert_same_tensors(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _meta(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):  # shapes only: checks that fail before any value is copied
        return create_model(name, **kwargs)


# --- cnnzoo's own weights ---------------------------------------------------------------------
@pytest.fixture
def resnet20_run(tmp_path: Path) -> tuple[nn.Module, RunDir]:
    """A ResNet-20 (10 classes, random BN statistics) saved as a run directory."""
    torch.manual_seed(0)
    model = _randomize_bn_statistics(create_model("resnet20")).eval()
    run = RunDir.create(tmp_path / "run")
    run.save_model(model, {"model": "resnet20", "kwargs": model.model_kwargs})
    return model, run


def test_a_run_directory_and_its_safetensors_file_load_the_same_weights(resnet20_run) -> None:
    source, run = resnet20_run
    from_dir = create_model("resnet20", weights=run.path)
    from_file = create_model("resnet20", weights=str(run.weights))
    _assert_same_tensors(from_dir.state_dict(), source.state_dict())
    _assert_same_tensors(from_file.state_dict(), source.state_dict())


def test_a_lone_safetensors_file_loads_without_model_json(tmp_path: Path) -> None:
    source = _randomize_bn_statistics(create_model("convnet", **SMALL_CONVNET))
    path = _save(source, tmp_path / "lone.safetensors")
    report = load_weights(create_model("convnet", **SMALL_CONVNET), path)
    assert report == LoadReport(
        loaded=len(source.state_dict()), key_format="cnnzoo", source=str(path)
    )


def test_a_lightning_checkpoint_loads_the_network_under_model(tmp_path: Path) -> None:
    source = _randomize_bn_statistics(create_model("convnet", **SMALL_CONVNET))
    state = {f"model.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "last.ckpt")
    model = create_model("convnet", **SMALL_CONVNET)
    report = load_weights(model, tmp_path / "last.ckpt")
    assert report.key_format == "lightning"
    _assert_same_tensors(model.state_dict(), source.state_dict())


# --- another number of classes: a fresh head -------------------------------------------------
def test_another_num_classes_keeps_the_body_and_a_fresh_head(resnet20_run, caplog) -> None:
    source, run = resnet20_run
    torch.manual_seed(7)
    fresh = create_model("resnet20", num_classes=5)
    torch.manual_seed(7)  # the same draws: the head must be exactly the fresh model's
    with caplog.at_level(logging.WARNING, logger="cnnzoo"):
        model = create_model("resnet20", num_classes=5, weights=run.path)

    body = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    _assert_same_tensors(
        body, {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    )
    assert model.fc.weight.shape == (5, 64)
    assert torch.equal(model.fc.weight, fresh.fc.weight)
    assert torch.equal(model.fc.bias, fresh.fc.bias)
    [record] = [r for r in caplog.records if r.name == "cnnzoo"]
    assert record.levelno == logging.WARNING
    assert record.message.endswith(
        "have 10 classes, the model 5: their classifier (fc) is left out and the model keeps "
        "its freshly initialised one"
    )


def test_googlenet_drops_its_auxiliary_classifiers_with_the_main_one() -> None:
    source = _meta("googlenet", num_classes=10).state_dict()
    report = load_weights(_meta("googlenet", num_classes=4), source)
    assert report.dropped_head == [
        "aux1.fc2.bias",
        "aux1.fc2.weight",
        "aux2.fc2.bias",
        "aux2.fc2.weight",
        "fc.bias",
        "fc.weight",
    ]
    assert report.loaded == len(source) - 6


def test_auxiliary_weights_are_unused_by_a_googlenet_built_without_them() -> None:
    source = _meta("googlenet").state_dict()
    report = load_weights(_meta("googlenet", aux_logits=False), source)
    assert report.unused == [k for k in source if k.startswith(("aux1.", "aux2."))]
    assert len(report.unused) == 2 * 10  # per head: conv 1, BN 5, fc1 2, fc2 2 tensors
    assert report.missing == report.unexpected == []


# --- another number of input channels: the first convolution adapted ----------------------
def test_rgb_weights_on_gray_input_equal_the_rgb_model_on_replicated_gray(resnet20_run) -> None:
    source, run = resnet20_run
    model = create_model("resnet20", in_channels=1, weights=run.path).eval()
    gray = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            model(gray), source(gray.repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-5
        )
    assert torch.equal(model.stem.conv.weight, source.stem.conv.weight.sum(dim=1, keepdim=True))


def test_gray_weights_on_rgb_input_equal_the_gray_model_when_channels_are_equal(
    tmp_path: Path, caplog
) -> None:
    source = _randomize_bn_statistics(create_model("convnet", **SMALL_CONVNET)).eval()
    path = _save(source, tmp_path / "gray.safetensors")
    model = create_model("convnet", in_channels=3, **SMALL_CONVNET)
    with caplog.at_level(logging.INFO, logger="cnnzoo"):
        report = load_weights(model, path)
    assert report.adapted_conv == "stages.0.0.conv"
    assert "adapted stages.0.0.conv" in caplog.text and "from 1 to 3 input channels" in caplog.text
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x.repeat(1, 3, 1, 1)), source(x), atol=1e-5, rtol=0)


def test_kernels_are_repeated_cyclically_and_scaled_by_source_over_target_channels() -> None:
    weight = torch.arange(6.0).reshape(2, 3, 1, 1)  # out 2, in 3
    two = adapt_input_channels(weight, 2)
    five = adapt_input_channels(weight, 5)
    one = adapt_input_channels(weight, 1)
    assert two.flatten().tolist() == [0.0, 1.5, 4.5, 6.0]  # channels 0, 1 times 3/2
    assert five[0].flatten().tolist() == pytest.approx([0, 0.6, 1.2, 0, 0.6])  # 0,1,2,0,1 x 3/5
    assert one.flatten().tolist() == [3.0, 12.0]  # summed


# --- torchvision's weights ------------------------------------------------------------------
@pytest.fixture(scope="module")
def torchvision_resnet18(tmp_path_factory) -> tuple[nn.Module, Path]:
    """torchvision's ResNet-18 with random weights and BN statistics, saved with torch.save."""
    torch.manual_seed(0)
    reference = _randomize_bn_statistics(torchvision.models.resnet18(weights=None)).eval()
    path = tmp_path_factory.mktemp("tv") / "x.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


def test_a_torchvision_pth_gives_torchvisions_outputs(torchvision_resnet18) -> None:
    reference, path = torchvision_resnet18
    model = create_model("resnet18", weights=path).eval()
    assert load_weights(create_model("resnet18"), path).key_format == "torchvision"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=1e-4)


def test_a_torchvision_pth_with_another_num_classes_keeps_the_body(
    torchvision_resnet18, caplog
) -> None:
    reference, path = torchvision_resnet18
    with caplog.at_level(logging.WARNING, logger="cnnzoo"):
        model = create_model("resnet18", num_classes=10, weights=path).eval()
    assert "have 1000 classes, the model 10: their classifier (fc) is left out" in caplog.text
    assert model.fc.weight.shape == (10, 512)
    x = torch.randn(2, 3, 64, 64)
    trunk = nn.Sequential(*list(reference.children())[:-1], nn.Flatten())  # up to avgpool
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(pooled, trunk(x), atol=1e-4, rtol=1e-4)


def test_weights_fill_a_backbone_without_its_removed_modules() -> None:
    torch.manual_seed(0)
    source = create_model("resnet20")
    features = create_model("resnet20", features_only=True, out_indices=(1,))
    report = load_weights(features, source.state_dict())
    assert features.pruned == ["fc", "global_pool", "stages.1", "stages.2"]
    assert report.unused == [
        k for k in source.state_dict() if k.startswith(("stages.1.", "stages.2.", "fc."))
    ]
    _assert_same_tensors(
        features.model.state_dict(),
        {k: v for k, v in source.state_dict().items() if k not in report.unused},
    )


# --- errors -----------------------------------------------------------------------------------
def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CnnzooError, match="weights file not found: .*nope.pth"):
        create_model("convnet", weights=tmp_path / "nope.pth")


def test_a_directory_without_weights_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CnnzooError, match="directory without model.safetensors"):
        create_model("convnet", weights=tmp_path)


def test_a_file_that_is_not_a_state_dict_is_a_clear_error(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "list.pt")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CnnzooError, match="does not hold a state dict"):
        create_model("convnet", weights=tmp_path / "list.pt")
    with pytest.raises(CnnzooError, match="cannot read weights from .*junk.pth"):
        create_model("convnet", weights=tmp_path / "junk.pth")
    with pytest.raises(
        CnnzooError, match=r"must be a path or a state dict \(name -> tensor\), got int"
    ):
        load_weights(create_model("convnet"), 3)  # type: ignore[arg-type]
    with pytest.raises(CnnzooError, match="do not form a state dict"):
        load_weights(create_model("convnet"), {"epoch": 3})


def test_resnet18_weights_into_resnet34_name_the_missing_keys() -> None:
    with pytest.raises(
        CnnzooError,
        match=r"do not fit model 'resnet34': missing stages\.0\.2\.conv1\.conv\.weight, .*in all",
    ):
        load_weights(_meta("resnet34"), _meta("resnet18").state_dict())


def test_a_run_of_another_depth_names_its_architecture(resnet20_run) -> None:
    _, run = resnet20_run
    with pytest.raises(
        CnnzooError,
        match=r"model\.json says they belong to 'resnet20'.*'resnet32': missing stages\.0\.3\.",
    ):
        create_model("resnet32", weights=run.path)


def test_unexpected_keys_are_named() -> None:
    state = dict(_meta("convnet").state_dict())
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CnnzooError, match="unexpected extra.weight"):
        load_weights(_meta("convnet"), state)


def test_a_body_shape_mismatch_names_the_key_and_both_shapes() -> None:
    source = _meta("convnet", widths=(8, 16)).state_dict()
    with pytest.raises(
        CnnzooError,
        match=r"shape mismatch for stages\.1\.0\.conv\.weight: model has \(32, 8, 3, 3\), "
        r"weights have \(16, 8, 3, 3\)",
    ):
        load_weights(_meta("convnet", widths=(8, 32)), source)


def test_without_strict_body_what_fits_is_loaded_and_the_rest_reported() -> None:
    source = create_model("convnet", widths=(8, 16)).state_dict()
    model = create_model("convnet", widths=(8, 32))
    report = load_weights(model, source, strict_body=False)
    assert report.mismatched[0] == "stages.1.0.conv.weight"
    assert torch.equal(model.stages[0][0].conv.weight, source["stages.0.0.conv.weight"])
    assert report.loaded == len(source) - len(report.mismatched)


def test_squeezenet_torchvision_weights_with_another_num_classes_keep_the_body(
    tmp_path: Path,
) -> None:
    # SqueezeNet's classifier is the 1x1 convolution conv10, not a linear layer.
    torch.manual_seed(0)
    reference = torchvision.models.squeezenet1_1().eval()
    path = tmp_path / "squeezenet1_1.pth"
    torch.save(reference.state_dict(), path)
    model = create_model("squeezenet1_1", num_classes=10, weights=path).eval()
    assert model.conv10.weight.shape[0] == 10
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            model.forward_features(x), reference.features(x), atol=1e-4, rtol=1e-4
        )
