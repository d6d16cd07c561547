"""Segmentation models: encoder-decoder, full-resolution FCN, SegNet, U-Net, patch-wise."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.models.classification.vgg import VGG
from cnnzoo.models.segmentation.segnet import MaxPoolEncoder, MaxUnpoolDecoder
from cnnzoo.registry import list_models, model_info

NUM_CLASSES = 5

# Tiny variants of every model: same architecture, small widths.
TINY: dict[str, dict[str, Any]] = {
    "encdec": {"backbone": "convnet", "widths": (8, 16), "min_width": 8},
    "fullres_fcn": {"depth": 3, "width": 8},
    "segnet": {"widths": (4, 8, 8, 8, 8), "depths": (1, 1, 2, 2, 2)},
    "unet": {"width": 4},
    "patchwise": {"patch": 7, "width": 4, "chunk": 512},
}


def tiny(name: str, **kwargs: Any) -> nn.Module:
    torch.manual_seed(0)
    return cnnzoo.create_model(name, num_classes=NUM_CLASSES, **{**TINY[name], **kwargs})


def test_registry_lists_them_under_segmentation() -> None:
    names = list_models("segmentation")
    for name in TINY:
        assert name in names
        info = model_info(name)
        assert info.task == "segmentation"
        assert info.paper
        assert info.input_size[0] == 3


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("size", [(32, 32), (37, 29)])
def test_logits_have_the_input_size(name: str, size: tuple[int, int]) -> None:
    model = tiny(name).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, *size))
    assert y.shape == (2, NUM_CLASSES, *size)


def test_encdec_default_backbone_is_resnet18() -> None:
    model = cnnzoo.create_model("encdec", num_classes=NUM_CLASSES).eval()
    assert model.backbone.model_name == "resnet18"
    assert model.stride == 32
    assert len(model.decoder) == 5
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 29)).shape == (1, NUM_CLASSES, 37, 29)


@pytest.mark.parametrize("mode", ["transposed", "bilinear", "nearest"])
def test_encdec_works_with_each_upsampling(mode: str) -> None:
    model = tiny("encdec", upsample=mode).eval()
    assert all(step.up.mode == mode for step in model.decoder)
    has_deconv = any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())
    assert has_deconv == (mode == "transposed")
    with torch.no_grad():
        assert model(torch.randn(1, 3, 29, 37)).shape == (1, NUM_CLASSES, 29, 37)


def test_encdec_rejects_an_unknown_upsampling() -> None:
    with pytest.raises(cnnzoo.CnnzooError, match="unknown upsampling 'cubic'"):
        tiny("encdec", upsample="cubic")


def test_fullres_fcn_keeps_full_resolution_at_every_layer() -> None:
    model = tiny("fullres_fcn").eval()
    shapes: list[tuple[int, ...]] = []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU)):
            module.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape[-2:])))
    with torch.no_grad():
        model(torch.randn(1, 3, 23, 17))
    assert len(shapes) == 3 * 3 + 1  # three conv-BN-ReLU and the classifier
    assert set(shapes) == {(23, 17)}


def test_maxunpool_puts_the_maxima_back_at_their_positions() -> None:
    torch.manual_seed(0)
    encoder = MaxPoolEncoder(1, 2, depth=1).eval()
    decoder = MaxUnpoolDecoder(2, 2, depth=1)
    x = torch.randn(1, 2, 7, 5)  # odd sizes: ceil-mode windows at the edges
    pooled, indices = encoder.pool(x)
    unpooled = decoder.unpool(pooled, indices, output_size=(7, 5))
    assert unpooled.shape == x.shape
    # Expected: each 2x2 window's maximum at its argmax, zeros elsewhere.
    expected = torch.zeros_like(x)
    for c in range(2):
        for i in range(0, 7, 2):
            for j in range(0, 5, 2):
                window = x[0, c, i : i + 2, j : j + 2]
                k = int(window.argmax())
                di, dj = divmod(k, window.shape[1])
                expected[0, c, i + di, j + dj] = window.max()
    assert torch.equal(unpooled, expected)
    assert int((unpooled != 0).sum()) == 2 * 4 * 3


def test_segnet_decoder_unpools_with_the_encoder_indices() -> None:
    model = tiny("segnet").eval()
    calls: list[tuple[int, ...]] = []
    for stage in model.decoder:
        stage.unpool.register_forward_hook(lambda m, a, out: calls.append(tuple(out.shape[-2:])))
    with torch.no_grad():
        model(torch.randn(1, 3, 37, 29))
    # Deepest first: each unpool restores the size its encoder pool saw (ceil-mode pools).
    assert calls == [(3, 2), (5, 4), (10, 8), (19, 15), (37, 29)]


def test_segnet_default_is_vgg16_shaped() -> None:
    model = cnnzoo.create_model("segnet")
    convs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    assert [s.convs[-1].conv.out_channels for s in model.encoder] == [64, 128, 256, 512, 512]


def test_segnet_loads_a_vgg_bn_encoder() -> None:
    torch.manual_seed(0)
    vgg = VGG(((4,), (8,), (8, 8), (8, 8), (8, 8)), batch_norm=True, num_classes=3)
    model = tiny("segnet")
    model.load_vgg_encoder(vgg)
    assert torch.equal(model.encoder[3].convs[1].conv.weight, vgg.stages[3][1].conv.weight)
    assert torch.equal(model.encoder[0].convs[0].bn.running_var, vgg.stages[0][0].bn.running_var)
    with pytest.raises(cnnzoo.CnnzooError, match="stage 2 has 2 convolutions"):
        cnnzoo.create_model(
            "segnet", widths=(4, 8, 8, 8, 8), depths=(1, 1, 1, 1, 1)
        ).load_vgg_encoder(vgg)


@pytest.mark.parametrize("mode", ["transposed", "bilinear"])
def test_unet_concatenates_skips_at_every_level(mode: str) -> None:
    model = tiny("unet", upsample=mode).eval()
    widths = [4, 8, 16, 32, 64]
    assert len(model.down) == len(model.up) == 4
    # Each up level convolves [skip, upsampled] = 2x its output width.
    assert [up.conv[0].conv.in_channels for up in model.up] == [64, 32, 16, 8]
    assert [up.conv[0].conv.out_channels for up in model.up] == widths[3::-1]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 17, 33)).shape == (1, NUM_CLASSES, 17, 33)


def test_patchwise_pixel_depends_only_on_its_patch() -> None:
    model = tiny("patchwise").eval()  # patch 7: radius 3
    x = torch.randn(1, 3, 20, 20)
    with torch.no_grad():
        y = model(x)
        far = x.clone()
        far[:, :, 10, 14] += 5.0  # 4 columns from (10, 10): outside its window
        near = x.clone()
        near[:, :, 10, 13] += 5.0  # 3 columns away: inside it
        y_far, y_near = model(far), model(near)
    assert torch.equal(y_far[..., 10, 10], y[..., 10, 10])
    assert not torch.allclose(y_near[..., 10, 10], y[..., 10, 10])
    assert not torch.allclose(y_far[..., 10, 14], y[..., 10, 14])


def test_patchwise_matches_classifying_each_window_alone() -> None:
    model = tiny("patchwise", chunk=37).eval()  # bands of one row: chunking must not matter
    x = torch.randn(2, 3, 9, 11)
    with torch.no_grad():
        y = model(x)
        padded = nn.functional.pad(x, (3, 3, 3, 3))
        alone = model.classifier(padded[:, :, 4:11, 6:13])  # window of pixel (4, 6)
    torch.testing.assert_close(y[:, :, 4, 6], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_few_training_steps_lower_the_loss(name: str) -> None:
    model = tiny(name).train()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 16, 16)
    target = torch.randint(0, NUM_CLASSES, (2, 16, 16))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = loss_fn(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = loss_fn(model(x), target).item()
    assert final < losses[0]


def test_unet_on_a_classifier_mirrors_its_stages() -> None:
    model = tiny("unet", backbone="convnet", widths=(8, 16, 32, 64), width=None).eval()
    assert model.stride == 16
    # Each level ends with the channels of the map it concatenates: the classifier's stages
    # (32, 16, 8), then the stride-1 stem (half the first stage, at least 8).
    assert [up.conv[0].conv.out_channels for up in model.up] == [32, 16, 8, 8]
    assert [up.conv[0].conv.in_channels for up in model.up] == [64, 32, 16, 16]
    assert not any(name.startswith("backbone.model.fc") for name in model.state_dict())
    with torch.no_grad():
        assert model(torch.randn(2, 3, 17, 33)).shape == (2, NUM_CLASSES, 17, 33)
    stages = [(s.module, s.reduction) for s in model.feature_info]
    assert stages[0] == ("stem", 1) and stages[-1] == ("backbone.model.stages.3", 16)


def test_unet_levels_without_a_skip_upsample_alone() -> None:
    # AlexNet's first map is at stride 8: the levels at strides 4 and 2 have nothing to
    # concatenate, and its unpadded pools give maps that are not exact halvings.
    model = tiny("unet", backbone="alexnet", width=None).eval()
    convs = [up.conv[0].conv for up in model.up]
    assert [c.in_channels == c.out_channels for c in convs] == [False, False, True, True, False]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 67, 72)).shape == (1, NUM_CLASSES, 67, 72)


def test_unet_backbone_options_need_the_right_encoder() -> None:
    with pytest.raises(cnnzoo.CnnzooError, match="backbone options: pass a backbone"):
        cnnzoo.create_model("unet", widths=(8, 16))
    with pytest.raises(cnnzoo.CnnzooError, match="the depth is the backbone's"):
        cnnzoo.create_model("unet", backbone="convnet", depth=3)
