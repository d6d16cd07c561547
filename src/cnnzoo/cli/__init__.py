"""The ``cnnzoo`` command line: one thin function per command; the work is in workflows/.

One module per command family; importing this package registers every command on ``app``,
in the order ``cnnzoo --help`` lists them.
"""

from __future__ import annotations

# isort: off
from cnnzoo.cli import terminal  # noqa: F401  --verbose, what the terminal shows
from cnnzoo.cli import models  # noqa: F401  models, info
from cnnzoo.cli import weights  # noqa: F401  weights list/info/download/verify
from cnnzoo.cli import training  # noqa: F401  train, finetune
from cnnzoo.cli import evaluation  # noqa: F401  eval, predict
from cnnzoo.cli import generative  # noqa: F401  sample, translate
from cnnzoo.cli import detection  # noqa: F401  anchors, data convert
from cnnzoo.cli import compress  # noqa: F401  compress, export, bench
from cnnzoo.cli import explain  # noqa: F401  explain
from cnnzoo.cli import report  # noqa: F401  report
from cnnzoo.cli import experiments  # noqa: F401  experiment, demo

# isort: on
from cnnzoo.cli.common import app

__all__ = ["app"]
