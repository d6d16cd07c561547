"""The one exception type users see: a clear, one-line message, never a deep traceback."""

from __future__ import annotations


class CnnzooError(Exception):
    """A problem with the user's input (name, file, value), phrased as what to do instead.

    The CLI prints ``str(error)`` on one line and exits with status 2.
    """
