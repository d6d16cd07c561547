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


NEVER_UNPICKLE = "cnnzoo never unpickles untrusted files"
SAVE_INSTEAD = (
    "save a state dict instead (torch.save(model.state_dict(), PATH)) or a .safetensors file"
)


def load_error_line(err: BaseException, instead: str = SAVE_INSTEAD) -> str:
    """Say in one line why a weights or checkpoint file could not be read.

    ``err`` is what ``torch.load(weights_only=True)`` or safetensors raised. Torch's refusal
    of a pickle that would run code spans eight lines and suggests allow-listing it (or
    loading with ``weights_only=False``, i.e. running it); this says what the file asks for,
    that cnnzoo never unpickles untrusted files, and ``instead`` (what to do). Anything else
    (a truncated or damaged file) is named as damage with the loader's reason.

    Returns:
        E.g. ``"refused to unpickle it: it asks for posix.system, a call that unpickling would
        run; cnnzoo never unpickles untrusted files; save a state dict instead (...)"`` or
        ``"it is damaged (truncated: its zip directory is missing)"``.
    """
    import re

    text = str(err)
    asked = re.search(r"GLOBAL ([\w.]+)", text) or re.search(
        r"unrecognized function (.+?)(?: which belongs|$)", text, re.M
    )
    if "Weights only load failed" in text and "Unsupported operand" not in text:
        what = (f"it asks for {asked.group(1)}, a call that unpickling would run" if asked
                else "it holds more than plain tensors")  # fmt: skip
        return f"refused to unpickle it: {what}; {NEVER_UNPICKLE}; {instead}"
    if "failed finding central directory" in text:
        return "it is damaged (truncated: its zip directory is missing)"
    if isinstance(err, EOFError):
        return "it is damaged (empty or truncated)"
    if "Unsupported operand" in text:
        return "it is damaged (its pickle data is not valid)"
    if isinstance(err, KeyError) or "invalid load key" in text:
        return "it is damaged (not a file that torch.save wrote)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"it is damaged ({lines[0].split('. ')[0] if lines else type(err).__name__})"
