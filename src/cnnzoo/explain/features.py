"""What a layer computes: its feature maps for one image, and the filters of a convolution.

Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014, look
inside a trained network two ways that need no extra machinery: the first layer's filters
are images (Fig. 2: oriented edges and colour blobs), and each channel of a deeper layer is
a map of where its pattern occurs in the input. :func:`feature_maps` reads one layer's
output with a forward hook; :func:`first_filters` returns a convolution's weights;
:meth:`FeatureMaps.channel_order` ranks the channels so that a grid shows the informative ones first
(after ReLU many channels are zero for a given image). Layers are found as in
:mod:`cnnzoo.explain.layers`: a stage name, a stage index or any module path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.explain.cam import check_input
from cnnzoo.explain.layers import resolve_layer

ORDERS = ("mean", "max", "std", "active")


@dataclass(frozen=True)
class ChannelStat:
    """Summary of one channel's map.

    Attributes:
        channel: the channel's index in the layer's output.
        mean: mean over the positions.
        std: standard deviation over the positions (population, ``unbiased=False``).
        max: largest value.
        active: fraction of positions whose value is above 0.
    """

    channel: int
    mean: float
    std: float
    max: float
    active: float


@dataclass
class FeatureMaps:
    """One layer's output for one image.

    Attributes:
        layer: the layer's module path.
        maps: ``(C, h, w)`` float tensor.
        stats: one :class:`ChannelStat` per channel, in channel order.
    """

    layer: str
    maps: Tensor
    stats: list[ChannelStat]

    def channel_order(self, by: str = "mean") -> list[int]:
        """Return the channels ranked by one statistic, largest first (ties: lower index first).

        Args:
            by: ``mean``, ``max``, ``std`` or ``active`` (see :class:`ChannelStat`).

        Returns:
            Channel indices.

        Raises:
            CnnzooError: for an unknown statistic.
        """
        if by not in ORDERS:
            raise CnnzooError(f"unknown channel order {by!r}: expected one of {', '.join(ORDERS)}")
        return [s.channel for s in sorted(self.stats, key=lambda s: -getattr(s, by))]


def channel_stats(maps: Tensor) -> list[ChannelStat]:
    """Return the per-channel statistics of ``(C, h, w)`` maps.

    Returns:
        One :class:`ChannelStat` per channel.
    """
    flat = maps.detach().float().flatten(1)
    mean, std = flat.mean(1), flat.std(1, unbiased=False)
    top, active = flat.max(1).values, (flat > 0).float().mean(1)
    return [
        ChannelStat(c, float(mean[c]), float(std[c]), float(top[c]), float(active[c]))
        for c in range(len(flat))
    ]


def feature_maps(model: nn.Module, x: Tensor, layer: str | None = None) -> FeatureMaps:
    """Run ``model`` on one image and return the output of one layer.

    The model runs in eval mode (BatchNorm uses its running statistics, which one image must
    not update) under ``torch.no_grad``; its mode is restored afterwards.

    Args:
        model: any model; its layer is found by
            :func:`~cnnzoo.explain.layers.resolve_layer`.
        x: the normalised image ``(1, C, H, W)``.
        layer: a stage name (``stages.2``), a stage index (``0``, ``-1``), any module path,
            or None for the deepest stage.

    Returns:
        The layer's :class:`FeatureMaps`.

    Raises:
        CnnzooError: for an input that is not one image, an unknown layer (the stages
            listed), a layer the forward pass does not run, or one whose output is not a
            ``(1, C, h, w)`` tensor.
    """
    check_input(model, x, None)
    name, module = resolve_layer(model, layer)
    seen: list[object] = []

    def keep(_module: nn.Module, _inputs: object, output: object) -> None:
        if not seen:  # a module run twice (shared weights): its first use
            seen.append(output)

    handle = module.register_forward_hook(keep)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
        model.train(was_training)
    if not seen:
        raise CnnzooError(f"layer {name!r} was not run by the model's forward pass")
    output = seen[0]
    if not isinstance(output, Tensor) or output.ndim != 4:
        found = (
            f"a {output.ndim}-D tensor {tuple(output.shape)}"
            if isinstance(output, Tensor)
            else f"a {type(output).__name__}"
        )
        raise CnnzooError(
            f"layer {name!r} returned {found}; feature maps need a 4-D (N, C, H, W) tensor: "
            "choose a convolutional stage"
        )
    if output.shape[0] != 1:
        raise CnnzooError(
            f"layer {name!r} ran on {output.shape[0]} crops of the one image, so its maps do "
            "not cover the image: choose a layer that sees the whole image"
        )
    maps = output[0].detach().float().clone()
    return FeatureMaps(name, maps, channel_stats(maps))


def first_filters(model: nn.Module, layer: str | None = None) -> tuple[str, Tensor]:
    """Return the weights of the first convolution in a layer (or in the model).

    "First" is the order in which the modules were registered (``model.named_modules()``),
    which for every cnnzoo model is the order they run in.

    Args:
        model: any model.
        layer: a stage name, stage index or module path (see
            :func:`~cnnzoo.explain.layers.resolve_layer`); None searches the whole model.

    Returns:
        ``(name, weights)``: the convolution's module path from the model's root and a copy
        of its weights ``(out, in / groups, kh, kw)``.

    Raises:
        CnnzooError: for an unknown layer, or a layer (model) without an ``nn.Conv2d``.
    """
    name, module = ("", model) if layer is None else resolve_layer(model, layer)
    for sub, child in module.named_modules():
        if isinstance(child, nn.Conv2d):
            path = ".".join(p for p in (name, sub) if p)
            return path, child.weight.detach().clone()
    where = f"layer {name!r}" if name else type(model).__name__
    raise CnnzooError(f"{where} has no nn.Conv2d, so it has no filters to show")
