"""Architectures only. Importing this package registers every model."""

from cnnzoo.models import classification, detection, generative, segmentation  # noqa: F401
