"""Image classification architectures; importing this registers them."""

from cnnzoo.models.classification import lenet  # noqa: F401
