"""Training recipes (`--recipe`), EMA of the weights (`--ema-decay`) and flip test-time
augmentation (`--tta`)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from cnnzoo.errors import CnnzooError
from cnnzoo.families import family_for
from cnnzoo.families.base import Family, TrainConfig
from cnnzoo.tasks.tta import FlipAverage, flip_average, shift_image, with_tta


class _Recipes(Family):
    name = "toy"
    recipes = {"plain": {}, "quick": {"label_smoothing": 0.2, "epochs": 3, "tta": True}}


def test_recipe_fills_options_left_at_their_defaults():
    cfg = _Recipes().apply_recipe(TrainConfig(model="m", recipe="quick"))
    assert (cfg.label_smoothing, cfg.epochs, cfg.tta, cfg.recipe) == (0.2, 3, True, "quick")


def test_an_option_the_user_set_wins_over_the_recipe():
    cfg = _Recipes().apply_recipe(TrainConfig(model="m", recipe="quick", epochs=7))
    assert cfg.epochs == 7 and cfg.label_smoothing == 0.2


def test_no_recipe_asked_names_the_first_and_changes_nothing_else():
    base = TrainConfig(model="m")
    cfg = _Recipes().apply_recipe(base)
    assert cfg == replace(base, recipe="plain")


def test_unknown_recipe_is_one_line_naming_the_choices():
    with pytest.raises(CnnzooError, match=r"unknown recipe 'slow'.*plain, quick") as err:
        _Recipes().apply_recipe(TrainConfig(model="m", recipe="slow"))
    assert "\n" not in str(err.value)


def test_a_family_without_recipes_refuses_one():
    with pytest.raises(CnnzooError, match="no training recipes"):
        family_for("reconstruction").apply_recipe(TrainConfig(model="m", recipe="fast"))


def test_classifiers_offer_standard_first_and_fast():
    names = list(family_for("classification").recipes)
    assert names[0] == "standard" and "fast" in names


class _Asymmetric(nn.Module):
    """Logits that depend on where the mass of the image is (left half vs right half)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.stack([x[..., :half].sum((1, 2, 3)), x[..., half:].sum((1, 2, 3))], 1)


def test_flip_average_is_the_mean_of_both_views():
    x = torch.rand(3, 1, 4, 6)
    model = _Asymmetric()
    expected = (model(x) + model(x.flip(-1))) / 2
    torch.testing.assert_close(flip_average(model, x), expected)
    # both halves count equally after averaging: the two logits agree
    out = FlipAverage(model)(x)
    torch.testing.assert_close(out[:, 0], out[:, 1])
    assert not torch.allclose(model(x)[:, 0], model(x)[:, 1])


@pytest.mark.parametrize("d", [1, -1, 2])
def test_shift_image_moves_the_content_diagonally_and_repeats_the_edge(d):
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 2, 3] = 1.0
    x[0, 0, 0, :] = 0.5  # the top edge row
    out = shift_image(x, d)
    assert out.shape == x.shape
    assert out[0, 0, 2 + d, 3 + d] == 1.0 and out.eq(1.0).sum() == 1
    if d > 0:  # the rows that enter at the top repeat the edge row
        assert torch.equal(out[0, 0, :d, d:], torch.full((d, 6 - d), 0.5))


def test_shifted_flip_average_weighs_the_two_views_half_and_the_four_shifts_half():
    x = torch.rand(3, 1, 5, 6)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(4))
    model(x)  # materialise the lazy layer
    views = [x, x.flip(-1)]
    shifted = [shift_image(v, d) for v in views for d in (1, -1)]
    expected = sum(model(v) for v in views) / 4 + sum(model(v) for v in shifted) / 8
    with torch.no_grad():
        torch.testing.assert_close(flip_average(model, x, shift=1), expected)
        torch.testing.assert_close(FlipAverage(model, 1)(x), expected)
        assert not torch.allclose(flip_average(model, x), expected)


def test_with_tta_follows_the_runs_spec():
    model = _Asymmetric()
    assert with_tta(model, {}) is model
    assert with_tta(model, {"tta": "hflip"}).shift == 0
    assert with_tta(model, {"tta": "hflip", "tta_shift": 2}).shift == 2


@pytest.mark.parametrize("shift", [-1, 5])
def test_a_shift_out_of_range_is_one_line(shift):
    with pytest.raises(CnnzooError, match=rf"--tta-shift {shift}: expected 0 to 4") as err:
        FlipAverage(_Asymmetric(), shift)
    assert "\n" not in str(err.value)


def test_tta_shift_without_tta_is_refused_before_any_run_exists(tiny_cfg, tmp_path):
    from cnnzoo.workflows.train import train

    with pytest.raises(CnnzooError, match="--tta-shift 1 needs --tta"):
        train(tiny_cfg(out=str(tmp_path / "bad"), tta_shift=1))
    assert not (tmp_path / "bad").exists()


def test_ema_changes_the_saved_weights_and_is_recorded(tiny_cfg, tmp_path):
    from cnnzoo.workflows.train import train

    plain = train(tiny_cfg(out=str(tmp_path / "plain"), val_fraction=0.0))
    ema = train(tiny_cfg(out=str(tmp_path / "ema"), val_fraction=0.0, ema_decay=0.9))
    a = load_file(plain.run_dir / "model.safetensors")
    b = load_file(ema.run_dir / "model.safetensors")
    assert a.keys() == b.keys()
    diffs = [
        float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point()
    ]
    assert max(diffs) > 1e-4  # same seed, same data: only the averaging differs
    config = (ema.run_dir / "config.yaml").read_text()
    assert "ema_decay: 0.9" in config


def test_ema_decay_out_of_range_is_refused_before_any_run_exists(tiny_cfg, tmp_path):
    from cnnzoo.workflows.train import train

    with pytest.raises(CnnzooError, match="--ema-decay 1.5"):
        train(tiny_cfg(out=str(tmp_path / "bad"), ema_decay=1.5))
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("shift", [0, 1])
def test_tta_run_is_tested_and_evaluated_with_both_views(tiny_cfg, tmp_path, shift):
    from cnnzoo.families.classification.evaluate import evaluate, prepared_batches, run_data
    from cnnzoo.rundir import RunDir
    from cnnzoo.workflows.train import train

    cfg = tiny_cfg(out=str(tmp_path / "tta"), val_fraction=0.0, tta=True, tta_shift=shift)
    result = train(cfg)
    spec = json.loads((result.run_dir / "model.json").read_text())
    assert spec["tta"] == "hflip" and spec.get("tta_shift", 0) == shift
    run = RunDir.open(result.run_dir)
    model, spec = run.load_model()
    dm, _ = run_data(run, spec, split="test")
    correct = changed = total = 0
    with torch.no_grad():
        for x, y in prepared_batches(dm, "test"):
            both = flip_average(model, x, shift).argmax(1)
            correct += int((both == y).sum())
            changed += int((both != model(x).argmax(1)).sum())
            total += len(y)
    assert evaluate(result.run_dir, plot=False).accuracy == pytest.approx(correct / total)
    assert result.metrics["test/accuracy"] == pytest.approx(correct / total, abs=1e-6)
    assert total == 1000 and changed > 0  # the second view changed some predictions


def test_fast_recipe_model_options_go_only_to_models_that_take_them():
    family = family_for("classification")
    convnet = family.apply_recipe(TrainConfig(model="convnet", recipe="fast"))
    resnet = family.apply_recipe(TrainConfig(model="resnet20", recipe="fast"))
    assert convnet.model_kwargs == {"head_norm": True, "init": "pytorch", "widths": (16, 64)}
    assert resnet.model_kwargs == {} and resnet.tta and resnet.precision == "auto"


def test_a_model_option_the_user_set_wins_over_the_recipe():
    cfg = TrainConfig(model="convnet", recipe="fast", model_kwargs={"head_norm": False})
    kwargs = family_for("classification").apply_recipe(cfg).model_kwargs
    assert kwargs == {"head_norm": False, "init": "pytorch", "widths": (16, 64)}


def test_convnet_head_norm_adds_batchnorm_to_the_hidden_layer():
    from cnnzoo.registry import create_model

    plain, normed = create_model("convnet"), create_model("convnet", head_norm=True)
    norms = [m for m in normed.fc1 if isinstance(m, nn.BatchNorm1d)]
    assert len(norms) == 1 and norms[0].num_features == 256
    assert not any(isinstance(m, nn.BatchNorm1d) for m in plain.fc1)
    normed.train()
    features = normed.pool(normed.forward_features(torch.randn(64, 1, 28, 28)))
    hidden = normed.fc1[:3](features)
    # in training mode the normalised hidden units have zero mean over the batch
    assert float(hidden.detach().mean(0).abs().max()) < 1e-4


def test_convnet_pytorch_init_keeps_the_layers_default_scale():
    from cnnzoo.registry import create_model

    torch.manual_seed(0)
    kaiming = create_model("convnet")
    torch.manual_seed(0)
    default = create_model("convnet", init="pytorch")
    conv_k, conv_d = kaiming.stages[1][1].conv, default.stages[1][1].conv  # 64 -> 64, 3x3
    fan_in, fan_out = 64 * 9, 64 * 9
    # PyTorch's default: uniform in +-1/sqrt(fan_in), std 1/sqrt(3 fan_in)
    assert float(conv_d.weight.detach().std()) == pytest.approx((3 * fan_in) ** -0.5, rel=0.05)
    # torchvision's Kaiming normal, fan-out: std sqrt(2 / fan_out)
    assert float(conv_k.weight.detach().std()) == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
    with pytest.raises(CnnzooError, match="convnet init 'xavier'"):
        create_model("convnet", init="xavier")


def test_negative_crop_padding_is_one_line_and_leaves_no_run(tiny_cfg, tmp_path):
    from cnnzoo.workflows.train import train

    with pytest.raises(CnnzooError, match="--crop-padding -1 is negative") as err:
        train(tiny_cfg(out=str(tmp_path / "bad"), crop_padding=-1))
    assert "\n" not in str(err.value) and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("shift", [0, 1])
def test_tta_exports_to_onnx_with_its_views_in_the_graph(tmp_path, shift):
    from cnnzoo.compress.export import export_onnx, verify_onnx
    from cnnzoo.registry import create_model

    torch.manual_seed(0)
    model = FlipAverage(create_model("convnet", head_norm=True, widths=(16, 32)), shift).eval()
    path = export_onnx(model, tmp_path / "tta.onnx", (1, 28, 28))
    for n in (1, 5):
        assert verify_onnx(model, path, torch.randn(n, 1, 28, 28)) < 1e-4
