"""cnnzoo: every architecture of the lecture "CNN Architectures", by name."""

from cnnzoo import weights
from cnnzoo.errors import CnnzooError
from cnnzoo.models.torchvision_compat import load_torchvision_weights
from cnnzoo.models.weights import LoadReport, load_weights
from cnnzoo.registry import ModelInfo, create_model, list_models, model_info, register_model

__all__ = [
    "CnnzooError",
    "LoadReport",
    "ModelInfo",
    "create_model",
    "list_models",
    "load_torchvision_weights",
    "load_weights",
    "model_info",
    "register_model",
    "weights",
]
__version__ = "0.1.0"
