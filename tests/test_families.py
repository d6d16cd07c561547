"""Every command works or refuses, in one line, on every task family (runs of the shipped
weight sets stand for each family); workflows find the family by the model's task."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import cnnzoo
from cnnzoo.cli import app
from cnnzoo.errors import CnnzooError
from cnnzoo.families import family_for, register_family
from cnnzoo.families.base import Family, PredictOptions
from cnnzoo.registry import TASKS
from cnnzoo.rundir import RunDir

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "img" / "examples"
RUNS = {
    "classification": "convnet.fmnist",
    "segmentation": "unet.scenes",
    "detection": "yolov3.scenes",
    "reconstruction": "conv_ae.fmnist",
    "generation": "vae.fmnist",
    "translation": "pix2pix.fmnist_edges",
}
"""A shipped weight set of each task."""
IMAGE = {"classification": "shirt.png", "segmentation": "scene.png", "detection": "scene.png",
         "reconstruction": "shirt.png", "generation": "shirt.png",
         "translation": "ankle_boot_edges.png"}  # fmt: skip


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNZOO_HOME", str(tmp_path / "home"))


def test_every_task_has_a_family_that_serves_it():
    for task in TASKS:
        assert task in family_for(task).tasks
    assert family_for("generation") is family_for("translation")  # one generative family
    with pytest.raises(CnnzooError, match="no task family serves 'keypoints'"):
        family_for("keypoints")


def test_each_shipped_run_stands_for_its_task():
    for task, name in RUNS.items():
        assert cnnzoo.weights.get(name).task == task


@pytest.mark.parametrize("task", sorted(RUNS))
def test_predict_works_or_refuses_in_one_line(task, tmp_path):
    name = RUNS[task]
    done = CliRunner().invoke(
        app, ["predict", name, str(EXAMPLES / IMAGE[task]), "--out", str(tmp_path / "p")]
    )
    if task in ("classification", "segmentation", "detection"):
        assert done.exit_code == 0, done.output
        line = done.output.strip()
        assert line.startswith(str(EXAMPLES / IMAGE[task])) and "\t" in line
        if task != "classification":
            assert sorted(p.suffix for p in (tmp_path / "p").iterdir())  # files were written
    else:
        assert done.exit_code == 2
        assert done.output.count("\n") == 1 and "`cnnzoo predict` does not apply" in done.output
        assert "cnnzoo sample" in done.output and not (tmp_path / "p").exists()


EXPORTS = {"classification", "segmentation", "detection"}  # export, bench, int8 take these
REFUSALS = [
    (task, command)
    for task in sorted(set(RUNS) - EXPORTS)
    for command in ("export", "bench", "compress")
]


@pytest.mark.parametrize(("task", "command"), REFUSALS)
def test_export_bench_compress_refuse_what_they_do_not_take_in_one_line(task, command, tmp_path):
    name = RUNS[task]
    args = {
        "export": ["export", name, "--out", str(tmp_path / "m.onnx")],
        "bench": ["bench", name],
        "compress": ["compress", name, "--quantize", "int8", "--out", str(tmp_path / "c")],
    }[command]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2, done.output
    assert done.output.count("\n") == 1
    assert f"{name} is a {task} model: `cnnzoo {command}` does not apply" in done.output
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "c").exists()


def test_a_registered_family_is_asked_by_the_workflows():
    """A family registered for a task replaces the built-in one: the command line asks it."""

    class Quiet(Family):
        name = "quiet"
        tasks = ("classification",)

        def predict(self, run: RunDir, files: list[str], options: PredictOptions) -> list[str]:
            return [f"{run.label} saw {len(files)} file(s), top {options.topk}"]

    builtin = family_for("classification")
    register_family(Quiet())
    try:
        done = CliRunner().invoke(app, ["predict", "convnet.fmnist", "a.png", "--topk", "2"])
        assert done.output.strip() == "convnet.fmnist saw 1 file(s), top 2"
        refused = CliRunner().invoke(app, ["export", "convnet.fmnist", "--out", "x.onnx"])
        assert refused.exit_code == 2 and "`cnnzoo export` does not apply" in refused.output
    finally:
        register_family(builtin)


def test_every_training_option_is_shared_or_owned_by_a_family():
    import dataclasses

    from cnnzoo.families.base import SHARED_OPTIONS, TrainConfig

    families = {family_for(task) for task in TASKS}
    owned = set().union(*(f.options for f in families))
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields == SHARED_OPTIONS | owned  # no option nobody checks, none that does not exist
    assert not SHARED_OPTIONS & owned


# A value other than the default for each family-owned option, to set on a foreign model.
_SET = {"loss": "mse", "label_smoothing": 0.1, "aux_weight": 0.7, "image_size": 32,
        "classes": [0, 1], "per_class": 5, "weights": "convnet.fmnist", "strategy": "head",
        "unfreeze": 2, "backbone_lr_scale": 0.5, "unfreeze_every": 2, "backbone": "resnet18",
        "backbone_weights": "convnet.fmnist", "input_size": [64, 64], "dice_weight": 0.5,
        "class_weights": [1.0, 2.0], "snapshots": 1, "images": "x.json", "latent": 8,
        "beta": 2.0, "denoise": "gaussian:0.1", "decay_start": 0.5, "fid_samples": 10,
        "det_augment": "mosaic", "autoanchor": False, "tta": True, "tta_shift": 1,
        "crop_padding": 2}  # fmt: skip
_MODEL = {"classification": "convnet", "segmentation": "unet", "detection": "yolov3",
          "reconstruction": "conv_ae", "generation": "dcgan", "translation": "pix2pix"}  # fmt: skip


@pytest.mark.parametrize("task", sorted(_MODEL))
def test_an_option_of_another_family_is_refused_in_one_line(task):
    from cnnzoo.families.base import TrainConfig
    from cnnzoo.families.registry import check_options

    family = family_for(task)
    foreign = [name for name in _SET if name not in family.options]
    assert foreign  # every family lacks some option of another
    for name in foreign:
        cfg = TrainConfig(model=_MODEL[task], **{name: _SET[name]})
        with pytest.raises(CnnzooError) as err:
            check_options(cfg, task)
        flag = "--" + name.replace("_", "-")
        message = str(err.value)
        assert (
            message.startswith(f"{flag} is a ") and f"; {_MODEL[task]} is a {task} model" in message
        )
        assert "\n" not in message
    for name in family.options:  # its own options pass
        check_options(TrainConfig(model=_MODEL[task], **{name: _SET[name]}), task)
