"""Reproducibility: ``--deterministic``, the recorded environment, ``--seeds N`` (mean ± std)."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
import yaml
from safetensors.torch import load_file

from cnnzoo import CnnzooError
from cnnzoo.rundir import RunDir
from cnnzoo.workflows.environment import (
    ENVIRONMENT_FILE,
    collect_environment,
    deterministic_mode,
    nondeterministic_op,
)
from cnnzoo.workflows.train import TrainConfig, train

ENVIRONMENT_FIELDS = {
    "python", "os", "cpu", "cpu_count", "packages", "device", "cuda", "cudnn", "gpus",
    "torch_threads", "precision", "deterministic", "deterministic_algorithms",
    "cudnn_benchmark", "cublas_workspace_config", "seed", "world_size", "recorded",
}  # fmt: skip


def _flags() -> tuple[bool, bool, bool]:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )


def test_the_same_seed_trains_bit_identical_runs_and_records_its_environment(tiny_cfg, tmp_path):
    before = _flags()
    runs = [
        train(tiny_cfg(out=str(tmp_path / name), seed=3, deterministic=True)).run_dir
        for name in ("a", "b")
    ]
    assert _flags() == before  # the process-wide flags are given back
    summaries = [json.loads((r / "metrics.json").read_text()) for r in runs]
    assert summaries[0]["metrics"] == summaries[1]["metrics"]  # bit-equal floats
    weights = [load_file(str(r / "model.safetensors")) for r in runs]
    assert weights[0].keys() == weights[1].keys()
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
    config = yaml.safe_load((runs[0] / "config.yaml").read_text())
    assert config["deterministic"] is True and config["seed"] == 3 and config["seeds"] == 1
    env = json.loads((runs[0] / ENVIRONMENT_FILE).read_text())
    assert env.keys() >= ENVIRONMENT_FIELDS
    assert env["deterministic"] is True and env["deterministic_algorithms"] is True
    assert env["cudnn_benchmark"] is False and env["cublas_workspace_config"] == ":4096:8"
    assert env["seed"] == 3 and env["precision"] == "32-true" and env["world_size"] == 1
    assert env["device"] == "cpu" and env["torch_threads"] == torch.get_num_threads()
    assert env["packages"]["torch"] and env["packages"]["lightning"]
    assert env["packages"]["torchvision"] and env["packages"]["cnnzoo"]
    assert env["python"].count(".") == 2 and env["cpu"]


def test_the_environment_without_determinism():
    env = collect_environment(TrainConfig(model="convnet", seed=7, precision="bf16-mixed"), 2)
    assert env.keys() >= ENVIRONMENT_FIELDS
    assert env["deterministic"] is False and env["seed"] == 7 and env["world_size"] == 2
    assert env["precision"] == "bf16-mixed"
    json.dumps(env)  # JSON-ready


def test_an_op_without_a_deterministic_implementation_is_named_in_one_line(tiny_cfg):
    """put_ (accumulate=False) has no deterministic implementation, on CPU too: the run
    stops with cnnzoo's one line naming it, and the flags are given back."""
    before = _flags()

    def add_put(job):
        def hook(module, args, output):
            output.new_zeros(4).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))

        job.model.register_forward_hook(hook)
        return job

    with pytest.raises(CnnzooError) as err:
        train(tiny_cfg(deterministic=True), adapt=add_put)
    message = str(err.value)
    assert message.startswith("--deterministic: put_ has no deterministic implementation")
    assert "\n" not in message
    assert _flags() == before

    with pytest.raises(CnnzooError, match="put_"), deterministic_mode(True):
        torch.zeros(3).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))
    assert nondeterministic_op(RuntimeError("other")) is None
    with deterministic_mode(True), pytest.raises(RuntimeError, match="other"):
        raise RuntimeError("other")  # anything else passes through as it is


def test_seeds_writes_mean_and_std_of_its_runs_and_resume_adds_seeds(tmp_path):
    from typer.testing import CliRunner

    from cnnzoo.cli import app
    from cnnzoo.workflows.report import write_report

    out = tmp_path / "multi"
    quick = ["--data", "fashion-mnist-mini", "--subset", "64", "--epochs", "1", "--no-progress",
             "--accelerator", "cpu", "--batch-size", "32", "--model-arg", "widths=[8,16]",
             "--model-arg", "hidden=16", "--out", str(out)]  # fmt: skip
    runner = CliRunner()
    done = runner.invoke(app, ["train", "convnet", *quick, "--seed", "4", "--seeds", "2",
                               "--deterministic"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "±" in done.output and "4..5" in done.output
    summary = json.loads((out / "metrics.json").read_text())
    seeds = summary["multi_seed"]
    assert seeds["seeds"] == [4, 5] and seeds["runs"] == ["seed-4", "seed-5"]
    per_seed = [
        json.loads((out / r / "metrics.json").read_text())["metrics"] for r in seeds["runs"]
    ]
    assert per_seed[0] != per_seed[1]  # the seeds differ
    assert set(summary["metrics"]) == set(per_seed[0]) and "test/accuracy" in summary["metrics"]
    for key, mean in summary["metrics"].items():
        values = [m[key] for m in per_seed]
        assert seeds["values"][key] == values
        assert mean == statistics.fmean(values)
        assert seeds["std"][key] == statistics.stdev(values)
    for seed, folder in zip((4, 5), seeds["runs"], strict=True):
        config = yaml.safe_load((out / folder / "config.yaml").read_text())
        assert config["seed"] == seed and config["seeds"] == 1 and config["deterministic"]
    assert yaml.safe_load((out / "config.yaml").read_text())["seeds"] == 2
    assert json.loads((out / ENVIRONMENT_FILE).read_text())["seed"] == 4
    assert not (out / "model.safetensors").exists()

    # no one model stands for the run: commands that load one name a seed's run instead
    with pytest.raises(CnnzooError, match="multi-seed run .* e.g. .*seed-4"):
        RunDir.open(out)
    refused = runner.invoke(app, ["eval", str(out), "--data", "fashion-mnist-mini"])
    assert refused.exit_code == 2 and "seed-4" in refused.output
    assert "Traceback" not in refused.output
    RunDir.open(out / "seed-5").load_model()  # each seed is an ordinary run

    page = write_report([out], tmp_path / "report.html", top_losses=0).read_text()
    accuracy = summary["metrics"]["test/accuracy"]
    assert f"{accuracy:.4f} ± " in page and "seed 5" in page and "seed-4/plots/curves.png" in page

    # --resume keeps the finished seeds and trains the new one
    stamp = (out / "seed-4" / "metrics.json").stat().st_mtime_ns
    more = runner.invoke(app, ["train", "convnet", *quick, "--seed", "4", "--seeds", "3",
                               "--resume"])  # fmt: skip
    assert more.exit_code == 0, more.output
    assert (out / "seed-4" / "metrics.json").stat().st_mtime_ns == stamp
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["multi_seed"]["seeds"] == [4, 5, 6]
    assert summary["multi_seed"]["values"]["test/accuracy"][:2] == seeds["values"]["test/accuracy"]


def test_seeds_below_one_and_resuming_a_single_run_as_seeds_are_refused(tiny_cfg, tmp_path):
    with pytest.raises(CnnzooError, match="--seeds must be 1 or more"):
        train(tiny_cfg(seeds=0))
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "config.yaml").write_text("seeds: 1\n")
    with pytest.raises(CnnzooError, match="not a multi-seed run"):
        train(tiny_cfg(seeds=2, resume=True, out=str(tmp_path / "single")))
