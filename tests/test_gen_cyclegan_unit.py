"""Unpaired translation: CycleGAN and UNIT, their image pool, PatchGAN and LSGAN loss."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch import nn

import cnnzoo
from cnnzoo.errors import CnnzooError
from cnnzoo.layers.gan import PatchDiscriminator
from cnnzoo.layers.gan_training import ImagePool, lsgan_loss
from cnnzoo.models.generative import cyclegan as _cyclegan  # noqa: F401  (registers)
from cnnzoo.models.generative import unit as _unit  # noqa: F401
from cnnzoo.registry import model_info

TINY: dict[str, dict[str, Any]] = {
    "cyclegan": {"in_channels": 1, "ngf": 8, "ndf": 8, "n_blocks": 1},
    "unit": {"in_channels": 1, "ngf": 8, "ndf": 8, "n_blocks": 1},
}


def tiny(name: str, **kwargs: Any) -> nn.Module:
    torch.manual_seed(0)
    return cnnzoo.create_model(name, **{**TINY[name], **kwargs})


def smooth_images(n: int, size: int = 16, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """Low-frequency images in [-1, 1] (bilinear upsampling of 4x4 noise)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, 4, 4, generator=g) * 2 - 1
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def unpaired_batch(n_a: int = 2, n_b: int = 2, size: int = 16) -> dict[str, torch.Tensor]:
    return {"A": smooth_images(n_a, size, seed=1), "B": smooth_images(n_b, size, seed=2)}


# -- registry ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cyclegan", "unit"])
def test_registered_under_translation(name: str) -> None:
    info = model_info(name)
    assert info.task == "translation"
    assert name in cnnzoo.list_models("translation")
    assert "2017" in info.paper
    assert info.min_input_size == 16


# -- image pool ----------------------------------------------------------------------------
def test_image_pool_returns_the_new_images_until_full() -> None:
    pool = ImagePool(50, torch.Generator().manual_seed(0))
    for step in range(12):  # 12 x 4 = 48 images: never full
        images = torch.full((4, 1, 2, 2), float(step))
        assert torch.equal(pool.query(images), images)
    assert len(pool) == 48


def test_image_pool_swaps_with_probability_one_half_once_full() -> None:
    pool = ImagePool(50, torch.Generator().manual_seed(0))
    pool.query(torch.arange(50.0).view(50, 1, 1, 1))
    calls, swapped = 2000, 0
    for i in range(calls):
        fresh = torch.full((1, 1, 1, 1), 1000.0 + i)
        out = pool.query(fresh)
        if not torch.equal(out, fresh):
            swapped += 1
            assert out.item() < 1000.0 + i  # a stored, older image came back
        assert len(pool) == 50
    # Binomial(2000, 0.5): the standard deviation of the rate is ~0.011.
    assert abs(swapped / calls - 0.5) < 0.05


def test_image_pool_never_exceeds_its_size_and_detaches() -> None:
    pool = ImagePool(50)
    x = torch.randn(7, 1, 2, 2, requires_grad=True)
    for _ in range(20):
        out = pool.query(x * 2)
        assert len(pool) <= 50
        assert out.shape == x.shape
        assert not out.requires_grad
    assert len(pool) == 50


def test_image_pool_of_size_zero_passes_through() -> None:
    pool = ImagePool(0)
    x = torch.randn(3, 1, 2, 2)
    assert torch.equal(pool.query(x), x)
    assert len(pool) == 0


# -- PatchGAN and LSGAN --------------------------------------------------------------------
def test_patchgan_gives_a_map_of_logits_at_32_px() -> None:
    x = torch.randn(2, 3, 32, 32)
    # 70x70 PatchGAN, padding 1: 32 -> 16 -> 8 -> 4 -> 3 -> 2.
    assert PatchDiscriminator(3, ndf=4, n_layers=3)(x).shape == (2, 1, 2, 2)
    # 34x34 PatchGAN: 32 -> 16 -> 8 -> 7 -> 6.
    assert PatchDiscriminator(3, ndf=4, n_layers=2)(x).shape == (2, 1, 6, 6)


def test_patchgan_with_three_layers_sees_70x70_patches() -> None:
    disc = PatchDiscriminator(1, ndf=2, n_layers=3, norm="none")
    x = torch.randn(1, 1, 160, 160, requires_grad=True)
    y = disc(x)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    assert rows.max() - rows.min() + 1 == 70
    assert cols.max() - cols.min() + 1 == 70


def test_patchgan_rejects_too_small_inputs() -> None:
    with pytest.raises(CnnzooError, match="too small"):
        PatchDiscriminator(1, ndf=4, n_layers=3)(torch.randn(1, 1, 16, 16))


def test_lsgan_loss_values() -> None:
    ones = torch.ones(2, 1, 3, 3)
    assert lsgan_loss(ones, True).item() == 0.0
    assert lsgan_loss(ones, False).item() == 1.0
    assert lsgan_loss(torch.full((1, 1, 2, 2), 0.5), True).item() == pytest.approx(0.25)
    assert lsgan_loss([ones, torch.zeros(1, 1, 1, 1)], True).item() == pytest.approx(0.5)


# -- CycleGAN ------------------------------------------------------------------------------
def test_cyclegan_losses_of_identity_generators_are_exactly_zero() -> None:
    model = tiny("cyclegan")
    model.G_AB = nn.Identity()
    model.G_BA = nn.Identity()
    losses, fakes = model.generator_step(unpaired_batch())
    assert losses["cycle"].item() == 0.0
    assert losses["identity"].item() == 0.0
    assert losses["gan"].item() > 0
    assert torch.equal(fakes["fake_B"], unpaired_batch()["A"])


def test_cyclegan_weights_are_the_papers() -> None:
    model = cnnzoo.create_model("cyclegan", ngf=4, ndf=4, n_blocks=1)
    assert model.lambda_cycle == 10.0
    assert model.lambda_identity * model.lambda_cycle == 5.0
    assert model.pool_A.size == model.pool_B.size == 50


def test_cyclegan_identity_loss_off_between_different_channel_counts() -> None:
    model = tiny("cyclegan", out_channels=3)
    losses, _ = model.generator_step({"A": smooth_images(2), "B": smooth_images(2, channels=3)})
    assert losses["identity"].item() == 0.0
    assert model.translate(smooth_images(1)).shape == (1, 3, 16, 16)
    assert model.translate(smooth_images(1, channels=3), "BA").shape == (1, 1, 16, 16)
    with pytest.raises(CnnzooError, match="lambda_identity"):
        tiny("cyclegan", out_channels=3, lambda_identity=0.5)


def test_cyclegan_discriminator_step_draws_fakes_through_the_pools() -> None:
    model = tiny("cyclegan")
    batch = unpaired_batch()
    _, fakes = model.generator_step(batch)
    model.discriminator_step(batch, fakes)
    assert len(model.pool_A) == len(model.pool_B) == 2


@pytest.mark.parametrize("name", ["cyclegan", "unit"])
def test_steps_return_finite_documented_losses(name: str) -> None:
    model = tiny(name)
    batch = unpaired_batch(2, 3)  # unpaired: even the batch sizes differ
    losses, fakes = model.generator_step(batch)
    keys = {"cyclegan": {"gan", "cycle", "identity"},
            "unit": {"gan", "recon", "kl", "cycle", "cycle_kl"}}[name]  # fmt: skip
    assert set(losses) == {"loss", *keys}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    assert losses["loss"].item() == pytest.approx(sum(losses[k].item() for k in keys), rel=1e-5)
    assert fakes["fake_B"].shape == (2, 1, 16, 16)
    assert fakes["fake_A"].shape == (3, 1, 16, 16)
    losses["loss"].backward()
    # The generator step leaves no gradient on the discriminators.
    assert all(p.grad is None for p in model.discriminator_parameters())
    assert all(p.grad is not None for p in model.generator_parameters())
    d_losses = model.discriminator_step(batch, fakes)
    assert set(d_losses) == {"loss", "d_A", "d_B"}
    assert all(torch.isfinite(v) for v in d_losses.values())
    d_losses["loss"].backward()  # the fakes are detached: the generators' graph is gone
    assert all(p.grad is not None for p in model.discriminator_parameters())


def train(model: nn.Module, batch: dict[str, torch.Tensor], key: str, steps: int) -> list[float]:
    opt_g = torch.optim.Adam(model.generator_parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(model.discriminator_parameters(), 2e-4, betas=(0.5, 0.999))
    history = []
    for _ in range(steps):
        losses, fakes = model.generator_step(batch)
        opt_g.zero_grad()
        losses["loss"].backward()
        opt_g.step()
        d_losses = model.discriminator_step(batch, fakes)
        opt_d.zero_grad()
        d_losses["loss"].backward()
        opt_d.step()
        history.append(losses[key].item())
    assert all(math.isfinite(h) for h in history)
    return history


def test_cyclegan_training_lowers_the_cycle_loss() -> None:
    model = tiny("cyclegan", ngf=16)
    history = train(model, {"A": smooth_images(4), "B": smooth_images(4, seed=9)}, "cycle", 20)
    assert history[-1] < 0.7 * history[0]


def test_unit_training_lowers_the_reconstruction_loss() -> None:
    model = tiny("unit", ngf=16)
    history = train(model, {"A": smooth_images(4), "B": smooth_images(4, seed=9)}, "recon", 20)
    assert history[-1] < 0.85 * history[0]


@pytest.mark.parametrize("name", ["cyclegan", "unit"])
@pytest.mark.parametrize("direction", ["AB", "BA"])
def test_translate_shape_and_range(name: str, direction: str) -> None:
    model = tiny(name).eval()
    x = smooth_images(2, size=20) * 5  # out-of-range input: the tanh still bounds the output
    with torch.no_grad():
        y = model.translate(x, direction)
    assert y.shape == (2, 1, 20, 20)  # 20 is no multiple of 4: padded and cropped back
    assert y.min() >= -1 and y.max() <= 1
    assert torch.equal(model(x), model.translate(x, "AB"))


@pytest.mark.parametrize("name", ["cyclegan", "unit"])
def test_bad_arguments_raise(name: str) -> None:
    model = tiny(name)
    with pytest.raises(CnnzooError, match="'AB' or 'BA'"):
        model.translate(smooth_images(1), "AA")
    with pytest.raises(CnnzooError, match="'B'"):
        model.generator_step({"A": smooth_images(1)})
    with pytest.raises(CnnzooError, match=r"\(N, 1, H, W\)"):
        model.generator_step({"A": smooth_images(1, channels=3), "B": smooth_images(1)})
    with pytest.raises(CnnzooError, match="norm"):
        tiny(name, norm="group")
    with pytest.raises(CnnzooError):
        tiny(name, ngf=0)


# -- UNIT ----------------------------------------------------------------------------------
def test_unit_shares_the_same_modules_between_domains() -> None:
    model = tiny("unit")
    enc_a, enc_b = model.encoder("A"), model.encoder("B")
    gen_a, gen_b = model.generator("A"), model.generator("B")
    assert enc_a[1] is enc_b[1] is model.enc_shared
    assert gen_a[0] is gen_b[0] is model.gen_shared
    assert enc_a[0] is not enc_b[0]
    shared_a = list(enc_a[1].parameters()) + list(gen_a[0].parameters())
    shared_b = list(enc_b[1].parameters()) + list(gen_b[0].parameters())
    assert len(shared_a) > 0
    assert all(pa is pb for pa, pb in zip(shared_a, shared_b, strict=True))
    # Each parameter counted once by the optimiser.
    ids = [id(p) for p in model.generator_parameters()]
    assert len(ids) == len(set(ids))


def test_unit_updating_domain_a_updates_the_shared_layers_of_domain_b() -> None:
    model = tiny("unit")
    enc_b_shared = list(model.encoder("B")[1].parameters())
    before = [p.detach().clone() for p in enc_b_shared]
    opt = torch.optim.SGD(model.encoder("A").parameters(), lr=0.1)
    model.encode(smooth_images(2), "A").pow(2).mean().backward()
    opt.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, enc_b_shared, strict=True)]
    assert any(changed)


def test_unit_state_dict_holds_the_shared_weights_once() -> None:
    model = tiny("unit")
    state = model.state_dict()
    assert any(k.startswith("enc_shared.") for k in state)
    assert not any(k.startswith("_encoders") for k in state)
    save({k: v.contiguous() for k, v in state.items()})  # shared tensors would be refused


def test_unit_losses_use_the_papers_weights() -> None:
    model = tiny("unit")
    assert model.weights == {"gan": 1.0, "recon": 10.0, "kl": 0.01, "cycle": 10.0,
                             "cycle_kl": 0.01}  # fmt: skip


def test_unit_gan_on_recon_shows_reconstructions_to_d() -> None:
    batch = unpaired_batch()
    torch.manual_seed(0)
    plain = tiny("unit").generator_step(batch)[0]["gan"]
    torch.manual_seed(0)
    both = tiny("unit", gan_on_recon=True).generator_step(batch)[0]["gan"]
    assert both.item() > plain.item()
