"""Model inspection: per-layer output shapes, parameters and multiply-accumulates (MACs).

MACs are counted by torch's own ``FlopCounterMode`` (convolutions, matrix products) and
halved, FLOPs being 2 x MACs; torchvision's "GFLOPS" column counts the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class LayerRow:
    """One module of the summary table."""

    name: str
    kind: str
    depth: int
    output_shape: tuple[int, ...] | None
    params: int
    macs: int


def _output_shape(output: object) -> tuple[int, ...] | None:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return tuple(output[0].shape)
    return None


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1) -> int:
    """Return the MACs of one forward pass in eval mode for a (C, H, W) input.

    The model is put back in its previous train/eval mode afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(batch_size, *input_size)
        with FlopCounterMode(display=False) as counter:
            model(x)
        return counter.get_total_flops() // 2
    finally:
        model.train(was_training)


@torch.no_grad()
def summarize(model: nn.Module, input_size: tuple[int, ...], max_depth: int = 2) -> list[LayerRow]:
    """Return one :class:`LayerRow` per module down to ``max_depth`` levels, in call order.

    Each row has the module's output shape for a batch of one ``input_size`` image, its own
    parameter count (including children) and its MACs (including children).
    """
    was_training = model.training
    model.eval()
    shapes: dict[str, tuple[int, ...] | None] = {}
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        depth = name.count(".") + 1 if name else 0
        if not name or depth > max_depth:
            continue

        def pre_hook(_m: nn.Module, _i: object, name: str = name) -> None:
            if name not in shapes:  # pre-order: a parent is listed before its children
                order.append(name)
                shapes[name] = None

        def hook(_m: nn.Module, _i: object, out: object, name: str = name) -> None:
            shapes[name] = _output_shape(out)

        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(hook))
    try:
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_size))
        flops = counter.get_flop_counts()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    modules = dict(model.named_modules())
    rows = []
    for name in order:
        module = modules[name]
        op_counts = flops.get(f"{type(model).__name__}.{name}", {})
        rows.append(
            LayerRow(
                name=name,
                kind=type(module).__name__,
                depth=name.count(".") + 1,
                output_shape=shapes[name],
                params=sum(p.numel() for p in module.parameters()),
                macs=int(sum(op_counts.values())) // 2,
            )
        )
    return rows


def model_cost(name: str) -> tuple[int, int]:
    """Return (parameters, MACs) of a registered model at its default input size.

    The model is built on the meta device, so no memory is allocated and no weights are
    initialised: fast enough to tabulate the whole registry. Models whose forward depends on
    data (Fast R-CNN's proposals) are built and run on the CPU with a zero image instead.
    """
    from cnnzoo.registry import create_model, model_info

    info = model_info(name)

    def measure(device: str) -> tuple[int, int]:
        with torch.device(device):
            model = create_model(name, in_channels=info.input_size[0])
            params = sum(p.numel() for p in model.parameters())
            model.eval()
            # a GAN's forward is its generator, which starts from a latent code
            shape = (model.latent,) if hasattr(model, "generator_step") and hasattr(
                model, "latent") else info.input_size  # fmt: skip
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(torch.zeros(1, *shape))
        return params, counter.get_total_flops() // 2

    try:
        return measure("meta")
    except (NotImplementedError, RuntimeError):  # data-dependent ops (NMS on proposals)
        return measure("cpu")
