"""A run resumed with another schedule than it started with is refused in one line, before
anything of the run is rewritten."""

from __future__ import annotations

import pytest
import yaml

from cnnzoo.errors import CnnzooError


@pytest.mark.parametrize(
    ("changed", "flag"),
    [({"epochs": 2}, "--epochs 1, not 2"), ({"batch_size": 16}, "--batch-size 32, not 16"),
     ({"scheduler": "cosine"}, "--scheduler onecycle, not cosine")],
)  # fmt: skip
def test_resuming_with_another_schedule_is_refused(tiny_cfg, changed: dict, flag: str) -> None:
    from cnnzoo.workflows.train import train

    run = train(tiny_cfg()).run_dir
    config = (run / "config.yaml").read_text()
    with pytest.raises(CnnzooError, match=f"was started with {flag}; ") as err:
        train(tiny_cfg(resume=True, **changed))
    assert "\n" not in str(err.value) and f"--weights {run}" in str(err.value)
    assert (run / "config.yaml").read_text() == config  # nothing rewritten
    # The same options resume.
    assert yaml.safe_load(config)["epochs"] == 1
    train(tiny_cfg(resume=True))


def test_a_constant_learning_rate_may_go_on_for_more_epochs(tiny_cfg) -> None:
    from cnnzoo.workflows.train import train

    train(tiny_cfg(scheduler="none"))
    assert train(tiny_cfg(scheduler="none", epochs=2, resume=True)).epochs == 2
