"""A classifier's stage feature maps, without its head (timm's ``features_only``).

:class:`FeatureExtractor` works for every model that publishes ``feature_info`` and
``forward_features``: forward hooks on the ``feature_info`` modules collect their outputs
while ``forward_features`` runs. Nothing is special-cased per architecture.

At construction one probe pass on the meta device (shapes only, no arithmetic, no copy of the
weights) records which submodules ``forward_features`` calls, and in which order. Modules it
never calls (the classifier and the rest of the head) and modules first called after the
deepest selected stage (e.g. ResNet's ``stages.3`` when only strides 4-16 are wanted) are
replaced by ``nn.Identity``, so the extractor holds no parameters it does not use and spends
no time past the last map it returns.

The one assumption: a model runs its submodules by calling them (it does not read
``self.fc.weight`` inside ``forward_features``), which holds for every cnnzoo model.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.models.base import FeatureInfo
from cnnzoo.models.meta import shapes_only


def resolve_out_indices(out_indices: Sequence[int] | None, num_stages: int) -> tuple[int, ...]:
    """Return ``out_indices`` as non-negative stage indices (all stages for None).

    Negative indices count from the deepest stage, as in Python: ``-1`` is the last.

    Raises:
        CnnzooError: for an index outside ``-num_stages .. num_stages - 1``, a repeated
            stage, or an empty selection.
    """
    if out_indices is None:
        return tuple(range(num_stages))
    if isinstance(out_indices, int):
        out_indices = (out_indices,)
    resolved = []
    for index in out_indices:
        if not isinstance(index, int) or not -num_stages <= index < num_stages:
            raise CnnzooError(
                f"out_indices {tuple(out_indices)} has {index!r}, but this model has "
                f"{num_stages} stages: use indices 0..{num_stages - 1} "
                f"(or -{num_stages}..-1 from the deepest)"
            )
        resolved.append(index % num_stages)
    if not resolved:
        raise CnnzooError("out_indices is empty; select at least one stage")
    if len(set(resolved)) != len(resolved):
        raise CnnzooError(f"out_indices {tuple(out_indices)} selects a stage twice")
    return tuple(resolved)


class FeatureExtractor(nn.Module):
    """A classifier turned into a backbone: ``forward(x)`` returns its stage feature maps.

    Args:
        model: a built classifier with ``feature_info`` and ``forward_features`` (see
            :class:`cnnzoo.models.base.ImageClassifier`); it becomes ``self.model`` and is
            modified in place (unused modules replaced by ``nn.Identity``).
        out_indices: indices into ``model.feature_info`` of the maps to return, in the
            order returned; negative ones count from the deepest stage. None: every stage.
        probe_size: height and width of the meta-device input used to find unused modules;
            any size the model accepts will do (the modules called do not depend on it).
        prune: replace unused modules by ``nn.Identity`` (True), or keep the model whole.

    Attributes:
        feature_info: the selected stages only (channels and reduction of each output).
        out_indices: the selected indices into the model's ``feature_info``.
        pruned: dotted names of the modules replaced by ``nn.Identity``.

    Raises:
        CnnzooError: if ``model`` has no ``feature_info``, or for bad ``out_indices``.
    """

    def __init__(
        self,
        model: nn.Module,
        out_indices: Sequence[int] | None = None,
        probe_size: int = 224,
        prune: bool = True,
    ) -> None:
        super().__init__()
        stages = getattr(model, "feature_info", None)
        if not stages or not hasattr(model, "forward_features"):
            name = getattr(model, "model_name", type(model).__name__)
            raise CnnzooError(
                f"model {name!r} has no feature_info/forward_features, so it cannot return "
                "stage feature maps; use a classification backbone"
            )
        self.model = model
        self.out_indices = resolve_out_indices(out_indices, len(stages))
        self.feature_info = FeatureInfo(stages[i] for i in self.out_indices)
        self._maps: dict[int, Tensor] = {}
        for position, stage in enumerate(self.feature_info):
            module = model.get_submodule(stage.module)
            module.register_forward_hook(functools.partial(self._capture, position))
        self.pruned: list[str] = self._prune(probe_size) if prune else []
        self.train(model.training)

    def _capture(self, position: int, module: nn.Module, args: Any, output: Tensor) -> None:
        self._maps[position] = output

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return the selected stage maps, each (N, channels, H / reduction, W / reduction).

        The order is that of ``out_indices``; ``self.feature_info`` describes each map.
        """
        self._maps = {}
        try:
            self.model.forward_features(x)
            missing = [s.module for i, s in enumerate(self.feature_info) if i not in self._maps]
            if missing:
                raise CnnzooError(
                    f"forward_features never ran {', '.join(missing)}, listed in the model's "
                    "feature_info: its feature_info is wrong"
                )
            return [self._maps[i] for i in range(len(self.feature_info))]
        finally:
            self._maps = {}  # drop references, so the maps are freed with the caller's

    # -- removing what forward_features does not need -------------------------------------
    def _first_calls(self, probe_size: int) -> tuple[dict[str, int], int]:
        """Run ``forward_features`` once on the meta device, recording module call order.

        Returns:
            For each called submodule, the step at which it was first entered; and the
            step at which the deepest selected stage had returned.
        """
        first_call: dict[str, int] = {}
        step = itertools.count()
        deepest_done: list[int] = []

        def entered(name: str, module: nn.Module, args: Any) -> None:
            first_call.setdefault(name, next(step))

        deepest = max(self.out_indices)
        deepest_module = self.model.get_submodule(self.model.feature_info[deepest].module)
        handles = [
            m.register_forward_pre_hook(functools.partial(entered, name))
            for name, m in self.model.named_modules()
            if name
        ]
        handles.append(
            deepest_module.register_forward_hook(lambda *_: deepest_done.append(next(step)))
        )
        # Meta stand-ins for every weight: the probe costs shapes only and leaves the real
        # tensors untouched (BN running statistics included).
        state = {
            name: torch.empty_like(t, device="meta")
            for name, t in (*self.named_parameters(), *self.named_buffers())
        }
        x = torch.zeros(2, _in_channels(self.model), probe_size, probe_size, device="meta")
        modes = {m: m.training for m in self.modules()}
        try:
            # Training mode, so that a module called only in training is kept.
            self.train()
            with torch.no_grad(), shapes_only(build=False):
                torch.func.functional_call(self, state, (x,))
        except RuntimeError as err:
            raise CnnzooError(
                f"cannot trace forward_features on a {probe_size}x{probe_size} input to find "
                f"unused modules ({str(err).splitlines()[0]}); pass another probe_size or "
                "prune=False"
            ) from None
        finally:
            for handle in handles:
                handle.remove()
            for m, mode in modes.items():
                m.training = mode
        return first_call, deepest_done[0]

    def _prune(self, probe_size: int) -> list[str]:
        """Replace every module not needed for the selected maps by ``nn.Identity``.

        Returns:
            The dotted names of the replaced modules, outermost only.
        """
        first_call, deepest_done = self._first_calls(probe_size)
        needed = {name for name, step in first_call.items() if step < deepest_done}
        # A container the model never calls itself (a ModuleList it loops over) is needed
        # when one of its children is.
        needed |= {
            ".".join(name.split(".")[:depth])
            for name in needed
            for depth in range(1, name.count(".") + 1)
        }
        unused = {name for name, _ in self.model.named_modules() if name and name not in needed}
        # Outermost only: a module inside a replaced one goes with it.
        outermost = [n for n in unused if n.rpartition(".")[0] not in unused]
        for name in sorted(outermost):
            parent_name, _, attr = name.rpartition(".")
            parent = operator.attrgetter(parent_name)(self.model) if parent_name else self.model
            setattr(parent, attr, nn.Identity())
        return sorted(outermost)


def _in_channels(model: nn.Module) -> int:
    """Return the input channels of the model's first convolution (for the probe input)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise CnnzooError(f"{type(model).__name__} has no Conv2d; cannot tell its input channels")
