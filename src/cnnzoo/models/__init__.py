"""Architectures only. Importing this package registers every model."""

from cnnzoo.models import classification, segmentation  # noqa: F401
