"""Image classification architectures; importing this registers them."""

from cnnzoo.models.classification import (  # noqa: F401
    alexnet,
    googlenet,
    lenet,
    mobilenet,
    plain,
    resnet,
    resnet_cifar,
    shufflenet,
    squeezenet,
    vgg,
)
