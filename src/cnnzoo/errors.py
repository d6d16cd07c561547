"""The one exception type users see: a clear, one-line message, never a deep traceback."""

from __future__ import annotations


class CnnzooError(Exception):
    """A problem with the user's input (name, file, value), phrased as what to do instead.

    The CLI prints ``str(error)`` on one line and exits with status 2.
    """


class NonFiniteLossError(CnnzooError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, epoch: int, value: float) -> None:
        super().__init__(f"loss became {value} at step {step} (epoch {epoch})")
        self.step = step
        self.epoch = epoch
