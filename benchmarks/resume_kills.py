"""Kill a training run at every mid-epoch checkpoint in turn and resume it: does each end
with the weights and metrics of the run that was never interrupted?

    python benchmarks/resume_kills.py            # the six mid-epoch checkpoints, ~3 minutes

The run is the one of ``tests/test_resume.py`` (ConvNet with BatchNorm, dropout and
augmentation, 2 epochs of 11 steps, a checkpoint every 3 steps); the test kills it at one
random checkpoint, this script at each. Prints one row per kill and exits 1 if any differs.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_resume import PER_EPOCH, _finish, _start, kill_after_checkpoint

STEPS = (3, 6, 9, 12, 15, 18)  # every checkpoint that falls inside an epoch


def main() -> int:
    """Run the kills; return 0 when every resumed run matches, else 1."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _finish(_start(root / "whole"))
        ref = load_file(str(root / "whole" / "model.safetensors"))
        ref_metrics = json.loads((root / "whole" / "metrics.json").read_text())["metrics"]
        print("| killed after step | epoch, batch | max abs weight difference | metrics equal |")
        print("|---|---|---|---|")
        failed = 0
        for step in STEPS:
            out = root / f"cut{step}"
            cut = _start(out)
            saved = kill_after_checkpoint(cut, out / "checkpoints" / "last.ckpt", step, PER_EPOCH)
            cut.wait()
            assert cut.returncode == -signal.SIGKILL
            done = saved["global_step"]
            _finish(_start(out, "--resume"))
            weights = load_file(str(out / "model.safetensors"))
            diff = max(float((weights[k] - ref[k]).abs().max()) for k in ref)
            metrics = json.loads((out / "metrics.json").read_text())["metrics"]
            same = metrics.keys() == ref_metrics.keys() and all(
                abs(metrics[k] - ref_metrics[k]) <= 1e-6 for k in ref_metrics
            )
            failed += diff > 1e-6 or not same
            print(f"| {done} | {done // PER_EPOCH + 1}, {done % PER_EPOCH} | {diff:.1e} | {same} |")
        print(f"{len(STEPS) - failed}/{len(STEPS)} resumed runs equal the uninterrupted one "
              f"(torch {torch.__version__}, CPU)")  # fmt: skip
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
