"""``python -m cnnzoo.cli``."""

from cnnzoo.cli import app

app()
