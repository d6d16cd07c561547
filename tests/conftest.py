"""Shared fixtures: tiny training configurations and image folders written by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings
from PIL import Image

# `make fuzz` runs the fuzz tests (test_fuzz_*.py) under this profile: each takes its
# max_examples (the ordinary run gives each a small, derandomized budget; see fuzzing.py).
settings.register_profile("fuzz", max_examples=2000)

# One intra-op thread: the tests' models are tiny, and two threads spin-waiting on a busy
# 2-core machine are up to 100x slower. Tests that need more set it themselves.
torch.set_num_threads(1)
# Under pytest-xdist (`make test`: one worker per core) the cores are already busy: the
# commands the tests start get one thread too.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def restore_denormals():
    """Workflows flush subnormal floats to zero (a process-wide CPU flag); give the next
    test the IEEE default back (hypothesis refuses to draw floats without subnormals)."""
    yield
    torch.set_flush_denormal(False)


@pytest.fixture
def tiny_cfg(tmp_path: Path):
    """Factory of a fast TrainConfig: the bundled mini set, a few hundred images, no progress."""
    from cnnzoo.workflows.train import TrainConfig

    def make(**overrides) -> TrainConfig:
        base = dict(
            model="convnet",
            data="fashion-mnist-mini",
            out=str(tmp_path / "run"),
            epochs=1,
            batch_size=32,
            subset=128,
            val_fraction=0.25,
            model_kwargs={"widths": [8, 16], "hidden": 16},
            progress=False,
            accelerator="cpu",
        )
        base.update(overrides)
        return TrainConfig(**base)

    return make


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three classes of 6 small RGB/gray/RGBA images each, of different sizes."""
    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog", "owl")):
        (root / name).mkdir(parents=True)
        for i in range(6):
            size = (20 + 4 * i, 24 + 2 * c)
            arr = (rng.random((size[1], size[0], 3)) * 60 + 80 * c).astype(np.uint8)
            img = Image.fromarray(arr)
            if i % 3 == 1:
                img = img.convert("L")
            elif i % 3 == 2:
                img = img.convert("RGBA")
            img.save(root / name / f"{i}.png")
    return root
