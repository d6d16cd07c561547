"""Fine-tuning strategies: what learns, what stays bit-identical, and the finetune workflow."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import cnnzoo
from cnnzoo import CnnzooError
from cnnzoo.data.datamodule import ClassificationData
from cnnzoo.rundir import RunDir
from cnnzoo.tasks.classification import ClassificationTask
from cnnzoo.tasks.finetune import (
    FineTunePlan,
    FineTuning,
    apply_plan,
    parameter_stages,
    trainable_stages,
)
from cnnzoo.workflows.finetune import finetune
from cnnzoo.workflows.train import fit_and_test, train


def test_parameters_are_assigned_to_feature_stages_and_head():
    model = cnnzoo.create_model("resnet20", num_classes=5)
    stages = parameter_stages(model)
    assert stages["stem.conv.weight"] == "stage0"
    assert stages["stages.0.0.conv1.conv.weight"] == "stage1"
    assert stages["stages.2.2.conv2.bn.weight"] == "stage3"
    assert stages["fc.weight"] == stages["fc.bias"] == "head"
    assert list(dict.fromkeys(stages.values())) == ["stage0", "stage1", "stage2", "stage3", "head"]


def test_googlenet_auxiliary_heads_belong_to_the_head():
    stages = parameter_stages(cnnzoo.create_model("googlenet", num_classes=5))
    assert {s for n, s in stages.items() if n.startswith("aux")} == {"head"}


@pytest.mark.parametrize(
    ("plan", "epoch", "expected"),
    [
        (FineTunePlan("head"), 0, {"head"}),
        (FineTunePlan("partial", unfreeze=2), 0, {"head", "stage2", "stage3"}),
        (FineTunePlan("full"), 0, {"head", "stage0", "stage1", "stage2", "stage3"}),
        (FineTunePlan("gradual"), 0, {"head"}),
        (FineTunePlan("gradual"), 1, {"head", "stage3"}),
        (FineTunePlan("gradual", unfreeze_every=2), 5, {"head", "stage3", "stage2"}),
        (FineTunePlan("gradual"), 9, {"head", "stage0", "stage1", "stage2", "stage3"}),
    ],
)
def test_which_stages_learn(plan, epoch, expected):
    names = ["stage0", "stage1", "stage2", "stage3", "head"]
    assert trainable_stages(names, plan, epoch) == expected


def test_unknown_strategy_is_a_clear_error():
    with pytest.raises(CnnzooError, match="unknown strategy 'linear'"):
        FineTunePlan("linear")


def test_head_strategy_freezes_everything_else_and_its_batchnorm():
    model = cnnzoo.create_model("resnet20", num_classes=5).train()
    report = apply_plan(model, FineTunePlan("head"))
    assert report.trainable_params == 64 * 5 + 5
    assert report.frozen_params == sum(p.numel() for p in model.parameters()) - 325
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)


def _mini(per_class=8):
    return ClassificationData(
        "fashion-mnist-mini", classes=[5, 6, 7, 8, 9], per_class=per_class, val_fraction=0,
        batch_size=16, augment=False,
    )  # fmt: skip


def test_head_fine_tune_leaves_the_backbone_bit_identical():
    model = cnnzoo.create_model("resnet20", num_classes=5, in_channels=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = FineTunePlan("head")
    apply_plan(model, plan)
    task = ClassificationTask(model, num_classes=5, lr=0.1)
    fit_and_test(task, _mini(), max_steps=3, callbacks=[FineTuning(plan, model)])
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # BN running statistics included


def _top(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] == "stages" else parts[0]


def test_partial_fine_tune_changes_only_the_last_stage_and_head():
    model = cnnzoo.create_model("resnet20", num_classes=5, in_channels=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = FineTunePlan("partial", unfreeze=1)
    apply_plan(model, plan)
    fit_and_test(ClassificationTask(model, num_classes=5, lr=0.1), _mini(), max_steps=3,
                 callbacks=[FineTuning(plan, model)])  # fmt: skip
    after = model.state_dict()
    changed = {_top(k) for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"stages.2", "fc"}


def test_backbone_learning_rate_is_scaled():
    model = cnnzoo.create_model("resnet20", num_classes=5)
    task = ClassificationTask(model, num_classes=5, lr=0.1, backbone_lr_scale=0.1,
                              scheduler="none")  # fmt: skip
    optimizer = task.configure_optimizers()
    head_ids = {id(model.fc.weight), id(model.fc.bias)}
    for group in optimizer.param_groups:
        is_head = {id(p) for p in group["params"]} <= head_ids
        assert group["lr"] == pytest.approx(0.1 if is_head else 0.01)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_finetune_workflow_records_trainable_parameters(tiny_cfg, tmp_path):
    source = train(tiny_cfg(model="resnet20", model_kwargs={}, out=str(tmp_path / "src"),
                            classes=[0, 1, 2, 3, 4], subset=64, val_fraction=0.0))  # fmt: skip
    target = finetune(
        source.run_dir,
        tiny_cfg(model="", model_kwargs={}, out=str(tmp_path / "tgt"), classes=[5, 6, 7],
                 per_class=8, subset=None, val_fraction=0.0, strategy="head"),
    )  # fmt: skip
    trainable = json.loads((target.run_dir / "trainable.json").read_text())
    assert trainable["strategy"] == "head"
    assert trainable["trainable_params"] == 64 * 3 + 3
    assert trainable["stages"]["head"] is True and trainable["stages"]["stage3"] is False
    src = load_file(str(source.run_dir / "model.safetensors"))
    tgt, spec = RunDir.open(target.run_dir).load_model()
    assert spec["kwargs"]["num_classes"] == 3
    for key, value in src.items():
        if not key.startswith("fc."):
            assert torch.equal(tgt.state_dict()[key], value), key


def test_gradual_unfreezing_opens_one_stage_per_epoch():
    model = cnnzoo.create_model("resnet20", num_classes=5, in_channels=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = FineTunePlan("gradual", unfreeze_every=1)
    callback = FineTuning(plan, model)
    apply_plan(model, plan)
    data = _mini(per_class=8)  # 40 images, batch 16: 3 steps per epoch
    fit_and_test(ClassificationTask(model, num_classes=5, lr=0.01, scheduler="none"), data,
                 max_steps=6, callbacks=[callback])  # fmt: skip
    assert [sorted(s for s, on in r.stages.items() if on) for r in callback.history] == [
        ["head"],
        ["head", "stage3"],
    ]
    after = model.state_dict()
    changed = {_top(k) for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"stages.2", "fc"}  # stage3 = stages.2 learned in epoch 2 only
