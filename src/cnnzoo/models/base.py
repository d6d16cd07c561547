"""The interface every classification model answers (after timm): features, head, classifier.

Downstream code (tasks, transfer learning, segmentation encoders) never special-cases an
architecture: it asks ``feature_info`` where the stage outputs are and ``forward_features``
for the last feature map.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class FeatureStage:
    """One tap point: the module whose output is a stage's feature map.

    Attributes:
        module: dotted attribute path of the module inside the model, e.g. ``"layer2"``.
        channels: number of channels of its output.
        reduction: total stride of its output relative to the input.
    """

    module: str
    channels: int
    reduction: int


class FeatureInfo(list):
    """The list of a model's :class:`FeatureStage`, shallow to deep."""

    def channels(self) -> list[int]:
        """Return the channel count of each stage."""
        return [s.channels for s in self]

    def reduction(self) -> list[int]:
        """Return the stride of each stage relative to the input."""
        return [s.reduction for s in self]

    def module_names(self) -> list[str]:
        """Return the dotted module path of each stage."""
        return [s.module for s in self]


class AuxOutput(NamedTuple):
    """Training-mode output of a model with auxiliary classifiers (GoogLeNet).

    ``aux`` holds the auxiliary logits, shallowest first; the classification task adds
    their losses at the weight the paper uses.
    """

    logits: Tensor
    aux: tuple[Tensor, ...]


class ImageClassifier(nn.Module):
    """Base class of cnnzoo's classifiers.

    Subclasses set ``feature_info`` and ``classifier_name`` (dotted path of the final
    ``nn.Linear``) and implement :meth:`forward_features` and :meth:`forward_head`.
    """

    feature_info: FeatureInfo
    classifier_name: str = "fc"
    num_classes: int

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the last feature map (before global pooling) for input ``x``."""
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Return logits (or the pooled features when ``pre_logits``) from a feature map."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor | AuxOutput:
        """Return class logits of shape (N, num_classes)."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Linear:
        """Return the final linear layer."""
        return operator.attrgetter(self.classifier_name)(self)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final linear layer by a fresh one with ``num_classes`` outputs."""
        old = self.get_classifier()
        parent_name, _, attr = self.classifier_name.rpartition(".")
        parent = operator.attrgetter(parent_name)(self) if parent_name else self
        new = nn.Linear(old.in_features, num_classes)
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        setattr(parent, attr, new)
        self.num_classes = num_classes

    @staticmethod
    def torchvision_key(key: str) -> str | None:
        """Map a key of the torchvision twin's state dict to this model's key.

        Returns:
            The cnnzoo key, or None for a key cnnzoo drops. Models without a torchvision
            twin keep this default, which raises.
        """
        raise NotImplementedError("this model has no torchvision counterpart")


def init_weights_kaiming(module: nn.Module, linear_std: float | None = 0.01) -> None:
    """He-normal convolutions (fan_out), unit BN, normal(0, ``linear_std``) linears.

    This is torchvision's ResNet/VGG initialisation; ``linear_std=None`` keeps PyTorch's
    default (uniform) for linears, better for small heads of stacked linears.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def count_params(model: nn.Module) -> int:
    """Return the number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
