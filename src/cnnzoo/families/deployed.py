"""A deployed graph measured by its family's own evaluation code: an ONNX Runtime session as a
:data:`~cnnzoo.families.base.Graph`, and a graph as the module an evaluation takes in place of
the run's model (``compress --quantize int8`` and ``bench`` score fp32 and int8 exports so)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from cnnzoo.families.base import Graph


def ort_graph(path: str | Path, threads: int | None = 1) -> Graph:
    """Return the ONNX model at ``path`` as a graph: images -> its outputs as CPU tensors.

    Raises:
        CnnzooError: for a file ONNX Runtime cannot load (when called: for inputs it rejects).
    """
    from cnnzoo.compress.runtime import ort_outputs, ort_session

    session = ort_session(path, threads=threads)

    def run(x: Tensor) -> list[Tensor]:
        return [torch.from_numpy(o) for o in ort_outputs(session, x.detach().cpu().numpy())]

    return run


def torch_graph(module: nn.Module) -> Graph:
    """Return an export plan's module (eval mode, no gradients) as a graph."""

    def run(x: Tensor) -> list[Tensor]:
        with torch.inference_mode():
            out = module(x)
        return [out] if isinstance(out, Tensor) else list(out)

    return run


class GraphLogits(nn.Module):
    """A graph whose first output is logits, as a model: ``forward(x) -> logits``."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x: Tensor) -> Tensor:
        return self.graph(x)[0]
