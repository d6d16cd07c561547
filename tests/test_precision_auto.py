"""``--precision auto``: bf16 autocast only on CPUs with native bf16, resolved in the run."""

from __future__ import annotations

import pytest
import yaml

from cnnzoo.tasks import precision
from cnnzoo.tasks.precision import cpu_has_fast_bf16, resolve_precision

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
ZEN2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c\n"
SAPPHIRE = "flags\t\t: avx2 avx512f amx_bf16 amx_tile\n"


def test_bf16_is_fast_only_with_its_instructions() -> None:
    assert cpu_has_fast_bf16(ZEN4) and cpu_has_fast_bf16(SAPPHIRE)
    assert not cpu_has_fast_bf16(ZEN2) and not cpu_has_fast_bf16("")
    assert not cpu_has_fast_bf16("model name : avx512_bf16 in the name only\n")


@pytest.mark.parametrize(("fast", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_the_cpu_follows_the_instructions(monkeypatch, fast: bool, expected: str) -> None:
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast)
    assert resolve_precision("auto", "cpu") == expected
    # An explicit choice is kept, whatever the CPU.
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    assert resolve_precision("32-true", "cpu") == "32-true"


def test_a_run_records_the_precision_it_trained_with(tiny_cfg) -> None:
    from cnnzoo.workflows.train import train

    result = train(tiny_cfg(precision="auto", accelerator="cpu"))
    config = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert config["precision"] == ("bf16-mixed" if cpu_has_fast_bf16() else "32-true")
