"""Paired translation: pix2pix and pix2pixHD, multi-scale discriminator, feature matching."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.errors import CnnzooError
from cnnzoo.layers.gan import MultiScaleDiscriminator
from cnnzoo.layers.gan_training import bce_gan_loss, feature_matching_loss
from cnnzoo.models.generative import pix2pix as _pix2pix  # noqa: F401  (registers)
from cnnzoo.models.generative import pix2pixhd as _pix2pixhd  # noqa: F401
from cnnzoo.models.generative.pix2pix import UNetGenerator
from cnnzoo.registry import model_info

TINY: dict[str, dict[str, Any]] = {
    "pix2pix": {"in_channels": 1, "ngf": 8, "ndf": 8, "depth": 4},
    "pix2pixhd": {
        "in_channels": 1,
        "ngf": 8,
        "ndf": 8,
        "n_down_global": 2,
        "n_blocks_global": 1,
        "n_blocks_local": 1,
    },
}


def tiny(name: str, **kwargs: Any) -> nn.Module:
    torch.manual_seed(0)
    return cnnzoo.create_model(name, **{**TINY[name], **kwargs})


def smooth_images(n: int, size: int = 16, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """Low-frequency images in [-1, 1] (bilinear upsampling of 4x4 noise)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, 4, 4, generator=g) * 2 - 1
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def paired_batch(n: int = 2, size: int = 16) -> dict[str, torch.Tensor]:
    a = smooth_images(n, size)
    return {"A": a, "B": -a}  # a pixel-wise mapping, learnable in a few steps


@pytest.mark.parametrize("name", ["pix2pix", "pix2pixhd"])
def test_registered_under_translation(name: str) -> None:
    info = model_info(name)
    assert info.task == "translation"
    assert name in cnnzoo.list_models("translation")
    assert info.paper
    assert info.min_input_size == 16


# -- shared blocks -------------------------------------------------------------------------
def test_multiscale_discriminator_sees_num_d_halving_scales() -> None:
    disc = MultiScaleDiscriminator(2, ndf=4, n_layers=2, num_D=3)
    sizes: list[int] = []
    for d in disc.discriminators:
        d.layers[0].register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[-1]))
    out = disc(torch.randn(2, 2, 32, 32))
    assert len(out) == disc.num_D == 3
    assert sizes == [32, 16, 8]
    assert all(len(f) == 4 for f in out)  # 3 conv blocks + the logit map, per scale
    logit_sides = [f[-1].shape[-1] for f in out]
    assert logit_sides == sorted(logit_sides, reverse=True) and len(set(logit_sides)) == 3
    assert all(f[-1].shape[:2] == (2, 1) for f in out)


def test_feature_matching_is_zero_for_identical_inputs() -> None:
    disc = MultiScaleDiscriminator(1, ndf=4, n_layers=2, num_D=2)
    x = torch.randn(1, 1, 16, 16)
    feats = [f[:-1] for f in disc(x)]
    assert feature_matching_loss(feats, feats).item() == 0.0
    other = [f[:-1] for f in disc(x + 1)]
    assert feature_matching_loss(other, feats).item() > 0


def test_feature_matching_averages_layers_and_scales_and_detaches_real() -> None:
    fake = [[torch.ones(1, 1, 2, 2, requires_grad=True), torch.zeros(1, 2, 1, 1)]]
    real = [[torch.zeros(1, 1, 2, 2, requires_grad=True), torch.zeros(1, 2, 1, 1)]]
    loss = feature_matching_loss(fake, real)
    assert loss.item() == pytest.approx(0.5)  # layer L1s 1 and 0, averaged
    loss.backward()
    assert fake[0][0].grad is not None and real[0][0].grad is None
    # One scale may also be passed as a flat list.
    assert feature_matching_loss(fake[0], real[0]).item() == pytest.approx(0.5)


def test_bce_gan_loss_is_log_two_at_zero_logits() -> None:
    assert bce_gan_loss(torch.zeros(1, 1, 4, 4), True).item() == pytest.approx(math.log(2))


def test_unet_generator_keeps_the_size_and_uses_dropout_in_training() -> None:
    torch.manual_seed(0)
    gen = UNetGenerator(1, 3, ngf=4, depth=5)
    x = smooth_images(2, size=28)  # padded to 32 inside, cropped back
    y1, y2 = gen(x), gen(x)
    assert y1.shape == (2, 3, 28, 28)
    assert not torch.equal(y1, y2)  # dropout is the generator's noise
    gen.eval()
    assert torch.equal(gen(x), gen(x))
    # Skips concatenate: decoder layers below the innermost take twice the encoder width.
    assert gen.up[0][0].in_channels == gen.down[-1].conv.out_channels
    assert gen.up[1][0].in_channels == 2 * gen.down[-2].conv.out_channels


# -- the contract --------------------------------------------------------------------------
KEYS = {"pix2pix": {"gan", "l1"}, "pix2pixhd": {"gan", "feature_matching"}}


@pytest.mark.parametrize("name", ["pix2pix", "pix2pixhd"])
def test_steps_return_finite_documented_losses(name: str) -> None:
    model = tiny(name)
    batch = paired_batch()
    losses, fakes = model.generator_step(batch)
    assert set(losses) == {"loss", *KEYS[name]}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    total = sum(losses[k].item() for k in KEYS[name])
    assert losses["loss"].item() == pytest.approx(total, rel=1e-5)
    assert set(fakes) == {"fake_B"} and fakes["fake_B"].shape == (2, 1, 16, 16)
    losses["loss"].backward()
    assert all(p.grad is None for p in model.discriminator_parameters())
    d_losses = model.discriminator_step(batch, fakes)
    assert set(d_losses) == {"loss", "real", "fake"}
    assert all(torch.isfinite(v) for v in d_losses.values())
    d_losses["loss"].backward()
    assert all(p.grad is not None for p in model.discriminator_parameters())


def test_pix2pix_weights_are_the_papers() -> None:
    model = cnnzoo.create_model("pix2pix", ngf=4, ndf=4, depth=3)
    assert model.lambda_l1 == 100.0
    assert model.gan_mode == "vanilla"
    assert model.D.layers[0].conv.in_channels == 6  # conditional: concat(A, B)
    lsgan = tiny("pix2pix", gan_mode="lsgan")
    assert torch.isfinite(lsgan.generator_step(paired_batch())[0]["gan"])


def train(model: nn.Module, batch: dict[str, torch.Tensor], steps: int) -> list[float]:
    """Alternate Adam steps; return the L1 distance of G(A) to B before each step."""
    opt_g = torch.optim.Adam(model.generator_parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(model.discriminator_parameters(), 2e-4, betas=(0.5, 0.999))
    history = []
    for _ in range(steps):
        losses, fakes = model.generator_step(batch)
        history.append(F.l1_loss(fakes["fake_B"], batch["B"]).item())
        opt_g.zero_grad()
        losses["loss"].backward()
        opt_g.step()
        d_losses = model.discriminator_step(batch, fakes)
        opt_d.zero_grad()
        d_losses["loss"].backward()
        opt_d.step()
    assert all(math.isfinite(h) for h in history)
    return history


def test_pix2pix_training_lowers_the_l1_loss() -> None:
    model = tiny("pix2pix", ngf=16)
    history = train(model, paired_batch(4), 40)  # dropout noise: a few more steps
    assert history[-1] < 0.8 * history[0]


def test_pix2pixhd_training_lowers_the_l1_distance() -> None:
    # pix2pixHD has no L1 term: feature matching alone pulls G(A) towards B.
    model = tiny("pix2pixhd", ngf=16)
    history = train(model, paired_batch(4), 20)
    assert history[-1] < 0.7 * history[0]


@pytest.mark.parametrize("name", ["pix2pix", "pix2pixhd"])
def test_translate_shape_range_and_direction(name: str) -> None:
    model = tiny(name).eval()
    x = smooth_images(2, size=20) * 5
    with torch.no_grad():
        y = model.translate(x)
    assert y.shape == (2, 1, 20, 20)
    assert y.min() >= -1 and y.max() <= 1
    with pytest.raises(CnnzooError, match="'AB'"):
        model.translate(x, "BA")


@pytest.mark.parametrize("name", ["pix2pix", "pix2pixhd"])
def test_bad_batches_raise(name: str) -> None:
    model = tiny(name)
    with pytest.raises(CnnzooError, match="'B'"):
        model.generator_step({"A": smooth_images(1)})
    with pytest.raises(CnnzooError, match="paired"):
        model.generator_step({"A": smooth_images(2), "B": smooth_images(3)})
    with pytest.raises(CnnzooError, match="fake_B"):
        model.discriminator_step(paired_batch(), {})


def test_bad_options_raise() -> None:
    with pytest.raises(CnnzooError, match="gan_mode"):
        tiny("pix2pix", gan_mode="wgan")
    with pytest.raises(CnnzooError, match="even"):
        tiny("pix2pixhd", ngf=7)
    with pytest.raises(CnnzooError, match="lambda"):
        tiny("pix2pix", lambda_l1=-1)
    with pytest.raises(CnnzooError, match="does not accept"):
        tiny("pix2pixhd", num_classes=3)


# -- pix2pixHD specifics -------------------------------------------------------------------
def test_pix2pixhd_discriminator_has_num_d_scales_on_the_pair() -> None:
    model = tiny("pix2pixhd", num_D=3)
    assert model.D.num_D == 3
    assert model.D.discriminators[0].layers[0].conv.in_channels == 2


def test_pix2pixhd_local_enhancer_adds_the_global_generators_features() -> None:
    model = tiny("pix2pixhd").eval()
    x = smooth_images(1)
    with torch.no_grad():
        y = model.translate(x)
        for p in model.G.global_generator.parameters():
            p.add_(0.5)
        assert not torch.allclose(model.translate(x), y)
    assert isinstance(model.G.global_generator.head, nn.Identity)  # only G1's features


def test_pix2pixhd_takes_a_label_map() -> None:
    model = tiny("pix2pixhd", label_nc=4)
    labels = torch.randint(0, 4, (2, 16, 16))
    batch = {"A": labels, "B": smooth_images(2, channels=3)}
    _, fakes = model.generator_step(batch)
    assert fakes["fake_B"].shape == (2, 3, 16, 16)
    assert torch.isfinite(model.discriminator_step(batch, fakes)["loss"])
    one_hot = model.condition(labels)
    assert one_hot.shape == (2, 4, 16, 16) and torch.equal(one_hot.argmax(1), labels)
    with torch.no_grad():
        assert torch.equal(model.translate(labels), model.translate(one_hot))
    with pytest.raises(CnnzooError, match=r"0\.\.3"):
        model.translate(torch.full((1, 16, 16), 4))


def test_pix2pixhd_perceptual_loss_from_a_cnnzoo_classifier() -> None:
    torch.manual_seed(0)
    classifier = cnnzoo.create_model("convnet", widths=(4, 8), hidden=8)
    model = tiny("pix2pixhd", perceptual=classifier)
    model.train()
    assert not model.perceptual_net.training  # frozen, BN/dropout never in training mode
    losses, _ = model.generator_step(paired_batch())
    assert set(losses) == {"loss", "gan", "feature_matching", "perceptual"}
    assert losses["perceptual"].item() > 0
    perceptual_ids = {id(p) for p in model.perceptual_net.parameters()}
    assert perceptual_ids.isdisjoint(id(p) for p in model.generator_parameters())
    assert all(not p.requires_grad for p in model.perceptual_net.parameters())


def test_pix2pixhd_perceptual_loss_is_off_by_default() -> None:
    model = tiny("pix2pixhd")
    assert model.perceptual_net is None
    assert "perceptual" not in model.generator_step(paired_batch())[0]


def test_pix2pixhd_perceptual_network_from_a_weights_file(tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    classifier = cnnzoo.create_model("convnet")
    path = tmp_path / "convnet.safetensors"
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(path))
    model = tiny("pix2pixhd", perceptual=str(path), perceptual_model="convnet")
    first = next(m for m in model.perceptual_net.modules() if isinstance(m, nn.Conv2d))
    source = next(m for m in classifier.modules() if isinstance(m, nn.Conv2d))
    assert torch.equal(first.weight, source.weight)
    assert model.generator_step(paired_batch())[0]["perceptual"].item() > 0
    with pytest.raises(CnnzooError, match="not found"):
        tiny("pix2pixhd", perceptual=str(tmp_path / "missing.safetensors"))
