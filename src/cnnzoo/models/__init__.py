"""Architectures only. Importing this package registers every model."""

from cnnzoo.models import classification  # noqa: F401
