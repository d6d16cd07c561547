"""Elastic multi-process training on CPU (gloo): ``torchrun --max-restarts`` restarts a killed
worker and the group continues from the last checkpoint by itself; and the README's
multi-node command, as two "nodes" on one machine, computes what one process computes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for workers"),
]

# LeNet-5 (no BatchNorm, no dropout), no augmentation: averaged gradients over the same global
# batch make N processes take the step one process takes. 256 images in batches of 16: 16
# steps an epoch; a checkpoint every 4 steps.
COMMON = ["lenet5", "--data", "fashion-mnist-mini", "--subset", "256", "--batch-size", "16",
          "--epochs", "2", "--no-augment", "--val-fraction", "0", "--no-progress",
          "--accelerator", "cpu", "--lr", "0.05", "--checkpoint-every", "4steps"]  # fmt: skip
PER_EPOCH = 16
# torchrun's default shares its rendezvous store with the workers, and a restarted group can
# then read the killed workers' addresses and fail to connect (pytorch/pytorch#135712; here 5
# restarts in 6 failed or hung without it, 0 in 6 with it): the README launches with this
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
CLI = ["-m", "cnnzoo.cli", "train", *COMMON]


def _popen(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
            for c in (t / "children").read_text().split()]  # fmt: skip


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], atol=1e-5, rtol=1e-4, msg=key)
    ma = json.loads((a / "metrics.json").read_text())["metrics"]
    mb = json.loads((b / "metrics.json").read_text())["metrics"]
    assert mb == pytest.approx(ma, abs=1e-4)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted one-process run both tests compare with."""
    out = tmp_path_factory.mktemp("one") / "run"
    _finish(_popen([sys.executable, *CLI, "--out", str(out)]))
    return out


def test_torchrun_restarts_a_killed_worker_and_the_run_resumes(
    one_process: Path, tmp_path: Path
) -> None:
    run = tmp_path / "elastic"
    group = _popen([*TORCHRUN, "--nnodes", "1", "--nproc-per-node", "2", "--max-restarts", "1",
                    "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}",
                    *CLI, "--devices", "2", "--out", str(run)])  # fmt: skip
    last = run / "checkpoints" / "last.ckpt"
    saved = None
    while group.poll() is None and saved is None:  # kill rank 1 after a mid-epoch checkpoint
        if last.is_file():
            ckpt = torch.load(last, weights_only=True, map_location="cpu")
            if ckpt["global_step"] % PER_EPOCH and len(workers := _children(group.pid)) == 2:
                os.kill(workers[-1], signal.SIGKILL)
                saved = ckpt
        time.sleep(0.01)
    out = _finish(group)
    assert saved is not None, "the run ended before a mid-epoch checkpoint"
    assert "exitcode: -9" in out  # torchrun saw the worker die, and restarted the group
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["resume"] is True  # the restarted group resumed without being told
    assert len(saved["cnnzoo"]["rng"]) == 2  # both processes' generators were kept
    _same_weights(one_process, run)
    seconds = json.loads((run / "metrics.json").read_text())["seconds"]
    assert seconds >= saved["cnnzoo"]["seconds"]


def test_two_nodes_on_one_machine_match_one_process(one_process: Path, tmp_path: Path) -> None:
    # README, "Many GPUs, many nodes": the same command on every node
    run = tmp_path / "two-nodes"
    node = [*TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--rdzv-id", "cnnzoo-test",
            "--max-restarts", "1", *CLI, "--devices", "1", "--num-nodes", "2",
            "--out", str(run)]  # fmt: skip
    nodes = [_popen(node), _popen(node)]
    for proc in nodes:
        _finish(proc)
    _same_weights(one_process, run)
