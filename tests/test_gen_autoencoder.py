"""Convolutional autoencoder (conv_ae) and the denoising corruptions."""

from __future__ import annotations

import math

import pytest
import torch

import cnnzoo
from cnnzoo.errors import CnnzooError
from cnnzoo.models.generative import autoencoder, noise  # registers conv_ae
from cnnzoo.models.generative.noise import corrupt, parse_noise


def rectangles(n: int, size: int = 28, seed: int = 0) -> torch.Tensor:
    """``n`` images in [0, 1]: a bright rectangle of random place and size on a dark ground."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((n, 1, size, size), 0.1)
    for i in range(n):
        top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
        h, w = torch.randint(size // 4, size // 2, (2,), generator=g).tolist()
        images[i, :, top : top + h, left : left + w] = 0.9
    return images


def tiny_ae(**kwargs) -> autoencoder.ConvAutoencoder:
    torch.manual_seed(0)
    return cnnzoo.create_model("conv_ae", **{"widths": (8, 16), "latent": 8, **kwargs})


# -- registry -------------------------------------------------------------------------------
def test_conv_ae_is_registered_for_reconstruction():
    info = cnnzoo.registry.model_info("conv_ae")
    assert info.task == "reconstruction"
    assert info.input_size == (1, 28, 28)
    assert info.min_input_size == 16
    assert "conv_ae" in cnnzoo.registry.list_models("reconstruction")


# -- shapes and ranges ----------------------------------------------------------------------
@pytest.mark.parametrize("size", [28, 32, 64])
def test_reconstruction_has_the_input_shape_and_lies_in_0_1(size):
    model = tiny_ae(image_size=size)
    x = rectangles(2, size)
    with torch.no_grad():
        x_hat = model(x)
    assert x_hat.shape == x.shape
    assert float(x_hat.min()) >= 0 and float(x_hat.max()) <= 1


def test_odd_image_size_is_cropped_back_exactly():
    model = tiny_ae(image_size=30)  # 30 -> 15 -> 8 -> decoded 32 -> cropped 30
    assert model(rectangles(2, 30)).shape == (2, 1, 30, 30)


def test_encode_gives_the_latent_code_and_decode_inverts_its_shape():
    model = tiny_ae(latent=5)
    z = model.encode(rectangles(3))
    assert z.shape == (3, 5)
    assert model.decode(z).shape == (3, 1, 28, 28)


def test_reconstruct_restores_training_mode_and_needs_no_grad():
    model = tiny_ae().train()
    out = model.reconstruct(rectangles(2))
    assert model.training and all(m.training for m in model.modules())
    assert not out.requires_grad


def test_wrong_input_size_raises_a_clear_error():
    with pytest.raises(CnnzooError, match="image_size"):
        tiny_ae().encode(torch.rand(2, 1, 32, 32))


@pytest.mark.parametrize("kwargs", [{"latent": 0}, {"widths": ()}, {"image_size": 0}])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(CnnzooError):
        tiny_ae(**kwargs)


def test_backbone_options_without_backbone_raise():
    with pytest.raises(CnnzooError, match="backbone"):
        tiny_ae(small_input=True)


# -- backbone encoder and pre-training ------------------------------------------------------
def test_backbone_encoder_reconstructs_at_the_input_size():
    model = tiny_ae(backbone="convnet")
    assert model.encoder_backbone is not None
    with torch.no_grad():
        x_hat = model(rectangles(2))
    assert x_hat.shape == (2, 1, 28, 28)
    assert float(x_hat.min()) >= 0 and float(x_hat.max()) <= 1


def test_backbone_encoder_state_initialises_a_classifier_except_its_head():
    model = tiny_ae(backbone="convnet")
    clf = cnnzoo.create_model("convnet", num_classes=10, widths=(8, 16), hidden=16)
    result = clf.load_state_dict(model.encoder_state(), strict=False)
    assert result.unexpected_keys == []
    assert all(k.startswith(("fc.", "fc1.")) for k in result.missing_keys)
    key = "stages.0.0.conv.weight"
    assert torch.equal(clf.state_dict()[key], model.encoder.model.state_dict()[key])


def test_plain_encoder_state_names_the_stride_2_stages():
    state = tiny_ae().encoder_state()
    assert state["stages.0.conv.weight"].shape == (8, 1, 3, 3)
    assert state["stages.1.conv.weight"].shape == (16, 8, 3, 3)
    fresh = autoencoder.ConvEncoder(1, (8, 16))
    fresh.load_state_dict(state)  # strict: the keys are exactly a ConvEncoder's


# -- loss and training ----------------------------------------------------------------------
def test_loss_reports_mse_and_psnr():
    model = tiny_ae()
    target = torch.zeros(2, 1, 28, 28)
    out = model.loss(torch.full_like(target, 0.1), target)
    assert float(out["mse"]) == pytest.approx(0.01)
    assert float(out["psnr"]) == pytest.approx(20.0, abs=1e-4)


def test_a_few_adam_steps_lower_the_reconstruction_error():
    model = tiny_ae()
    x = rectangles(8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(model.loss(model(x), x)["mse"])
    for _ in range(30):
        loss = model.loss(model(x), x)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = float(model.loss(model.reconstruct(x), x)["mse"])
    assert after < 0.5 * first


# -- corruption -----------------------------------------------------------------------------
def test_parse_noise_reads_kind_and_amount():
    assert parse_noise("gaussian:0.3") == ("gaussian", 0.3)
    assert parse_noise("saltpepper:0.1") == ("saltpepper", 0.1)
    assert parse_noise("mask:0.25") == ("mask", 0.25)
    assert parse_noise("none") == ("none", 0.0)


@pytest.mark.parametrize(
    "spec", ["gauss:0.3", "gaussian", "gaussian:abc", "mask:1.5", "saltpepper:-0.1", "", "mask:"]
)
def test_bad_noise_specs_raise_naming_the_spec_and_the_valid_forms(spec):
    with pytest.raises(CnnzooError) as err:
        parse_noise(spec)
    assert repr(spec) in str(err.value)
    assert "saltpepper:FRACTION" in str(err.value)


def test_gaussian_noise_has_the_requested_std():
    x = torch.full((4, 1, 64, 64), 0.5)
    g = torch.Generator().manual_seed(0)
    y = corrupt(x, "gaussian:0.1", generator=g)
    diff = y - x
    # 16384 values: the sample std is within ~1% of sigma; clamping at 5 sigma never bites.
    assert float(diff.std()) == pytest.approx(0.1, rel=0.03)
    assert abs(float(diff.mean())) < 0.005
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_gaussian_noise_is_clamped_to_0_1():
    y = corrupt(torch.full((1, 1, 16, 16), 0.95), "gaussian:1.0", torch.Generator().manual_seed(1))
    assert float(y.max()) == 1.0 and float(y.min()) == 0.0


def test_saltpepper_sets_the_exact_fraction_to_0_or_1():
    x = 0.2 + 0.6 * torch.rand(3, 2, 20, 20, generator=torch.Generator().manual_seed(0))
    y = corrupt(x, "saltpepper:0.1", generator=torch.Generator().manual_seed(1))
    changed = (y != x).any(dim=1)  # per pixel
    assert changed.flatten(1).sum(dim=1).tolist() == [40, 40, 40]  # 10% of 400
    values = y.permute(0, 2, 3, 1)[changed]
    assert set(values.unique().tolist()) == {0.0, 1.0}
    # Both channels of a corrupted pixel get the same value.
    assert torch.equal(values[:, 0], values[:, 1])
    assert torch.equal(y.permute(0, 2, 3, 1)[~changed], x.permute(0, 2, 3, 1)[~changed])


def test_mask_zeroes_the_exact_fraction_of_pixels():
    x = 0.1 + torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = corrupt(x, "mask:0.25", generator=torch.Generator().manual_seed(2))
    zeroed = y == 0
    assert zeroed.flatten(1).sum(dim=1).tolist() == [196, 196]  # 25% of 784
    assert torch.equal(y[~zeroed], x[~zeroed])


def test_corruption_is_reproducible_and_leaves_the_input_alone():
    x = torch.rand(2, 1, 16, 16)
    before = x.clone()
    a = corrupt(x, "mask:0.5", torch.Generator().manual_seed(3))
    b = corrupt(x, "mask:0.5", torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(x, before)
    assert torch.equal(corrupt(x, "none"), x)


def test_noise_kinds_are_listed():
    assert set(noise.NOISE_KINDS) == {"gaussian", "saltpepper", "mask", "none"}
    assert math.isclose(parse_noise("GAUSSIAN:0.5")[1], 0.5)
