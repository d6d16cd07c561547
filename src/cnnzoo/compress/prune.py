"""Pruning: unstructured magnitude pruning and structured channel pruning.

**Unstructured** (Han, Pool, Tran, Dally, "Learning both Weights and Connections for
Efficient Neural Networks", NeurIPS 2015): the smallest-magnitude weights of the
convolutions and linear layers are set to zero, with :mod:`torch.nn.utils.prune`, globally
(one threshold over all pruned tensors) or per layer (the same fraction of each), and made
permanent (``prune.remove``: plain parameters, no masks). Iterative pruning keeps the
masks while fine-tuning (``permanent=False``), prunes further with a higher sparsity, and
folds the masks in at the end (:func:`make_permanent`). The zeros are stored
densely, so the model is exactly as large and as fast as before — a speed-up needs sparse
kernels or hardware, a smaller file needs compression. :class:`SparsityReport` says so.

**Structured** (Li, Kadav, Durdanovic, Samet, Graf, "Pruning Filters for Efficient
ConvNets", ICLR 2017; Liu et al., "Learning Efficient Convolutional Networks through
Network Slimming", ICCV 2017; Molchanov et al., "Importance Estimation for Neural Network
Pruning", CVPR 2019): whole channels are removed with torch-pruning, which traces the model
and removes each channel from every layer that shares it (the BN after a convolution, the
next layer's input, both sides of a residual addition), so the result is a smaller dense
model whose MACs and latency really drop. Channels are ranked by the L1 norm of their
weights (``l1``), by the BN scale gamma (``bn``), or by the first-order Taylor estimate
|w * dL/dw| of the loss change (``taylor``, which needs gradients from calibration data).

CIFAR ResNets' option-A shortcuts (:class:`~cnnzoo.layers.residual.ZeroPadShortcut`)
zero-pad the channels, which torch-pruning cannot trace: it takes the padding for an
element-wise operation, couples stages of different widths and resizes the classifier
wrongly. :func:`structured_prune` therefore swaps each for the equivalent
:class:`PrunableZeroPadShortcut`, whose channel map torch-pruning edits through a custom
pruner, so every stage's residual stream is pruned on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from cnnzoo.errors import CnnzooError
from cnnzoo.layers.residual import PrunableZeroPadShortcut

PRUNE_KINDS = ("structured", "unstructured", "unstructured-layer")
IMPORTANCES = ("l1", "bn", "taylor")

NO_SPEEDUP_NOTE = (
    "unstructured pruning stores zeros in dense tensors: the model has the same size, MACs "
    "and latency as before; only sparse kernels/hardware or compression turn zeros into savings"
)

_PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)


# -- the --prune option ------------------------------------------------------------------
@dataclass(frozen=True)
class PruneSpec:
    """A parsed ``--prune`` value.

    Attributes:
        kind: ``structured``, ``unstructured`` (global threshold) or ``unstructured-layer``.
        amount: MAC reduction fraction (structured) or weight sparsity (unstructured).
        importance: channel ranking for structured pruning: ``l1``, ``bn`` or ``taylor``.
    """

    kind: str
    amount: float
    importance: str = "l1"

    @property
    def structured(self) -> bool:
        return self.kind == "structured"

    @property
    def scope(self) -> Literal["global", "layer"]:
        """Scope of unstructured pruning: ``layer`` for ``unstructured-layer``."""
        return "layer" if self.kind == "unstructured-layer" else "global"


def parse_prune(text: str) -> PruneSpec:
    """Parse ``structured:R[:IMPORTANCE]``, ``unstructured:S`` or ``unstructured-layer:S``.

    R is the fraction of MACs to remove, S the fraction of weights to zero, both in (0, 1);
    IMPORTANCE is ``l1`` (default), ``bn`` or ``taylor``.

    Returns:
        The :class:`PruneSpec`.

    Raises:
        CnnzooError: for an unknown kind or importance, or an amount outside (0, 1).
    """
    usage = (
        "expected structured:R[:l1|bn|taylor] (R = MAC reduction), unstructured:S or "
        "unstructured-layer:S (S = sparsity), with R and S in (0, 1), e.g. structured:0.5"
    )
    parts = text.strip().split(":")
    if len(parts) not in (2, 3) or parts[0] not in PRUNE_KINDS:
        raise CnnzooError(f"--prune {text!r}: {usage}")
    kind, amount_text = parts[0], parts[1]
    try:
        amount = float(amount_text)
    except ValueError:
        raise CnnzooError(f"--prune {text!r}: {amount_text!r} is not a number; {usage}") from None
    if not 0.0 < amount < 1.0:
        raise CnnzooError(f"--prune {text!r}: {amount} is not in (0, 1); {usage}")
    importance = "l1"
    if len(parts) == 3:
        if kind != "structured":
            raise CnnzooError(
                f"--prune {text!r}: an importance ({parts[2]!r}) only applies to structured "
                "pruning; unstructured pruning always removes the smallest magnitudes"
            )
        importance = parts[2]
        if importance not in IMPORTANCES:
            raise CnnzooError(
                f"--prune {text!r}: unknown importance {importance!r}; expected one of "
                f"{', '.join(IMPORTANCES)}"
            )
    return PruneSpec(kind, amount, importance)


# -- unstructured ------------------------------------------------------------------------
@dataclass
class LayerSparsity:
    """Zeros among one layer's weights."""

    zeros: int
    total: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0


@dataclass
class SparsityReport:
    """Zero weights per layer and over all the layers listed.

    Attributes:
        layers: module name -> zeros/total of its ``weight``.
        note: why the zeros give no speed-up by themselves.
    """

    layers: dict[str, LayerSparsity] = field(default_factory=dict)
    note: str = NO_SPEEDUP_NOTE

    @property
    def zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers.values())

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers.values())

    @property
    def sparsity(self) -> float:
        """Fraction of zeros over all listed weights together."""
        return self.zeros / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: overall zeros/total/sparsity, per-layer ones, the note."""
        return {
            "zeros": self.zeros,
            "total": self.total,
            "sparsity": self.sparsity,
            "layers": {
                name: {**asdict(layer), "sparsity": layer.sparsity}
                for name, layer in self.layers.items()
            },
            "note": self.note,
        }


def _weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, _PRUNABLE) and isinstance(getattr(m, "weight", None), Tensor)
    ]


def sparsity_report(model: nn.Module, layers: Iterable[str] | None = None) -> SparsityReport:
    """Count the zero weights of the model's convolutions and linear layers.

    Args:
        model: any model.
        layers: names of the modules to count; default: every Conv/Linear layer.

    Returns:
        The :class:`SparsityReport` (biases are not counted).
    """
    wanted = None if layers is None else set(layers)
    report = SparsityReport()
    for name, m in _weighted_layers(model):
        if wanted is None or name in wanted:
            w = m.weight.detach()
            report.layers[name] = LayerSparsity(int((w == 0).sum()), w.numel())
    return report


def _classifier(model: nn.Module) -> nn.Module | None:
    """The final classifier: ``get_classifier()`` of cnnzoo classifiers, else the last Linear."""
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        try:
            return getter()
        except AttributeError:
            pass
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def make_permanent(model: nn.Module) -> int:
    """Fold the pruning masks into the weights (``prune.remove``): plain parameters, no hooks.

    Returns:
        The number of weight tensors that had a mask.
    """
    count = 0
    for m in model.modules():
        if isinstance(m, _PRUNABLE) and torch_prune.is_pruned(m) and hasattr(m, "weight_mask"):
            torch_prune.remove(m, "weight")  # weight = weight_orig * weight_mask
            count += 1
    return count


def unstructured_prune(
    model: nn.Module,
    sparsity: float,
    scope: Literal["global", "layer"] = "global",
    include_first_last: bool = False,
    permanent: bool = True,
) -> SparsityReport:
    """Zero the smallest-magnitude weights of the Conv/Linear layers, in place.

    By default the first convolution and the final classifier stay dense: the first holds
    few weights that every later feature depends on, the classifier one row per class; both
    are a tiny share of the weights (``include_first_last=True`` prunes them too). Biases and
    BN parameters are never pruned.

    Exactly ``round(sparsity * n)`` weights are zero afterwards, where ``n`` counts the
    pruned tensors' weights together (``scope="global"``: one magnitude threshold, so layers
    lose different fractions) or each tensor alone (``scope="layer"``).

    Iterative pruning: prune with ``permanent=False`` (torch's masks stay, so fine-tuning
    cannot regrow the zeros), fine-tune, call again with a higher sparsity (earlier masks
    are folded in first; their zeros have the smallest magnitude, so the new pruning extends
    them), and finish with :func:`make_permanent`. With ``permanent=True`` (default) the
    masks are folded in at once: plain parameters, no ``weight_orig``/``weight_mask``, but
    later training would move the zeros.

    Returns:
        The :class:`SparsityReport` over the pruned layers.

    Raises:
        CnnzooError: for a sparsity outside (0, 1), an unknown scope, a model without
            prunable layers, or a model already sparser than requested.
    """
    if not 0.0 < sparsity < 1.0:
        raise CnnzooError(f"sparsity must be in (0, 1), got {sparsity!r}")
    if scope not in ("global", "layer"):
        raise CnnzooError(f"pruning scope must be 'global' or 'layer', got {scope!r}")
    layers = _weighted_layers(model)
    if not include_first_last and layers:
        classifier = _classifier(model)
        first = next((i for i, (_, m) in enumerate(layers) if isinstance(m, nn.Conv2d)), None)
        layers = [
            (name, m) for i, (name, m) in enumerate(layers) if i != first and m is not classifier
        ]
    if not layers:
        raise CnnzooError(
            f"{type(model).__name__} has no convolution or linear layer to prune "
            "(besides the first convolution and the classifier, which stay dense)"
        )
    names = [name for name, _ in layers]
    make_permanent(model)
    groups = [layers] if scope == "global" else [[layer] for layer in layers]
    for group in groups:
        total = sum(m.weight.numel() for _, m in group)
        zeros = sum(int((m.weight == 0).sum()) for _, m in group)
        amount = round(sparsity * total)
        if zeros > amount:
            where = "the pruned layers" if scope == "global" else f"layer {group[0][0]}"
            raise CnnzooError(
                f"{where} already have {zeros / total:.1%} zero weights, more than the "
                f"requested sparsity {sparsity:.1%}; ask for a higher one"
            )
    if scope == "global":
        params = [(m, "weight") for _, m in layers]
        amount = round(sparsity * sum(m.weight.numel() for _, m in layers))
        torch_prune.global_unstructured(
            params, pruning_method=torch_prune.L1Unstructured, amount=amount
        )
    else:
        for _, m in layers:
            torch_prune.l1_unstructured(m, "weight", amount=round(sparsity * m.weight.numel()))
    if permanent:
        make_permanent(model)
    return sparsity_report(model, names)


# -- structured --------------------------------------------------------------------------
def _shortcut_pruner() -> Any:
    """torch-pruning's custom pruner for :class:`PrunableZeroPadShortcut`."""
    import torch_pruning as tp

    class ShortcutPruner(tp.pruner.function.BasePruningFunc):
        def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
            removed = set(idxs)
            keep = [j for j in range(layer.out_channels) if j not in removed]
            layer.source = layer.source[keep].clone()
            layer.out_channels = len(keep)
            return layer

        def prune_in_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
            removed = set(idxs)
            new_in = layer.in_channels - len(removed)
            new_index = torch.full((layer.in_channels + 1,), new_in, dtype=torch.long)
            kept = [i for i in range(layer.in_channels) if i not in removed]
            new_index[kept] = torch.arange(len(kept))
            layer.source = new_index[layer.source.cpu()].to(layer.source.device)
            layer.in_channels = new_in
            return layer

        def get_out_channels(self, layer: nn.Module) -> int:
            return layer.out_channels

        def get_in_channels(self, layer: nn.Module) -> int:
            return layer.in_channels

    return ShortcutPruner()


def _make_shortcuts_prunable(model: nn.Module, example_input: Tensor) -> int:
    """Swap every ZeroPadShortcut of ``model`` for a PrunableZeroPadShortcut; return how many."""
    from cnnzoo.layers.residual import ZeroPadShortcut

    found = [(n, m) for n, m in model.named_modules() if isinstance(m, ZeroPadShortcut)]
    if not found:
        return 0
    in_channels: dict[str, int] = {}
    hooks = [
        m.register_forward_pre_hook(
            lambda mod, args, name=name: in_channels.__setitem__(name, args[0].shape[1])
        )
        for name, m in found
    ]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
    for name, m in found:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        new = PrunableZeroPadShortcut.from_zero_pad(m, in_channels[name])
        setattr(parent, attr, new.to(example_input.device))
    return len(found)


@dataclass
class StructuredReport:
    """What structured pruning did.

    Attributes:
        importance: the channel ranking used.
        target: the requested MAC reduction.
        pruning_ratio: fraction of the channels removed from each prunable group.
        macs_before, macs_after, params_before, params_after: counted by torch-pruning
            on the example input.
        layers: module name -> ``{"before": [in, out], "after": [in, out]}`` channels (or
            features) of every convolution / linear layer whose size changed.
    """

    importance: str
    target: float
    pruning_ratio: float
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    layers: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    @property
    def mac_reduction(self) -> float:
        """Fraction of MACs removed, ``1 - after / before``."""
        return 1.0 - self.macs_after / self.macs_before

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the fields and the achieved ``mac_reduction``."""
        return {**asdict(self), "mac_reduction": self.mac_reduction}


def _channels(m: nn.Module) -> list[int]:
    if isinstance(m, nn.Linear):
        return [m.in_features, m.out_features]
    return [m.in_channels, m.out_channels]


def _count(model: nn.Module, example_input: Tensor) -> tuple[int, int]:
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model, example_input)
    return int(macs), int(params)


def _importance(name: str) -> Any:
    import torch_pruning as tp

    if name == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if name == "bn":
        return tp.importance.BNScaleImportance()
    if name == "taylor":
        return tp.importance.TaylorImportance()
    raise CnnzooError(f"unknown importance {name!r}; expected one of {', '.join(IMPORTANCES)}")


def structured_prune(
    model: nn.Module,
    example_input: Tensor,
    mac_reduction: float,
    importance: str = "l1",
    loss_fn: Callable[[nn.Module], Tensor] | None = None,
    steps: int = 40,
    max_ratio: float = 0.9,
    round_to: int | None = None,
) -> StructuredReport:
    """Remove whole channels, in place, until the MACs drop by at least ``mac_reduction``.

    The same fraction of channels is removed from every prunable group (a set of layers
    that share channels); the fraction grows in ``steps`` equal steps up to ``max_ratio``
    and stops at the first step whose MACs (torch-pruning's count on ``example_input``) are
    at most ``(1 - mac_reduction)`` times the original. The final classifier keeps its
    outputs (the number of classes). With ``importance="taylor"`` the ranking is
    recomputed at every step from the gradients of ``loss_fn(model)``, a loss on
    calibration data. The model is pruned in eval mode (tracing must not update BN
    statistics) and given back in the mode it came in.

    Args:
        model: the model, modified in place.
        example_input: an input batch for tracing and counting MACs, e.g. (1, 1, 28, 28).
        mac_reduction: fraction of MACs to remove, in (0, 1).
        importance: ``l1`` (L1 norm of the weights), ``bn`` (BN scale; groups without BN
            are not pruned) or ``taylor`` (|w * grad|).
        loss_fn: computes a scalar loss of the model on calibration data (``taylor`` only).
        steps: number of steps of the ratio schedule (finer steps overshoot less).
        max_ratio: largest fraction of any group's channels that may be removed.
        round_to: keep channel counts multiples of this (friendlier to vectorised kernels).

    Returns:
        The :class:`StructuredReport`.

    Raises:
        CnnzooError: for a reduction outside (0, 1), an unknown importance, ``taylor``
            without ``loss_fn``, a model torch-pruning cannot trace, or a target that
            ``max_ratio`` cannot reach (the model is then left at ``max_ratio``).
    """
    import torch_pruning as tp

    if not 0.0 < mac_reduction < 1.0:
        raise CnnzooError(f"MAC reduction must be in (0, 1), got {mac_reduction!r}")
    if importance == "taylor" and loss_fn is None:
        raise CnnzooError(
            "taylor importance needs gradients: pass loss_fn (a loss on calibration data)"
        )
    imp = _importance(importance)
    if steps < 1 or not 0.0 < max_ratio < 1.0:
        raise CnnzooError(f"need steps >= 1 and max_ratio in (0, 1), got {steps}, {max_ratio}")
    was_training = model.training
    model.eval()
    try:
        before = {name: _channels(m) for name, m in _weighted_layers(model)}
        macs_before, params_before = _count(model, example_input)
        classifier = _classifier(model)
        _make_shortcuts_prunable(model, example_input)
        try:
            pruner = tp.pruner.BasePruner(
                model,
                example_input,
                importance=imp,
                pruning_ratio=max_ratio,
                max_pruning_ratio=max_ratio,
                iterative_steps=steps,
                ignored_layers=[classifier] if classifier is not None else [],
                round_to=round_to,
                customized_pruners={PrunableZeroPadShortcut: _shortcut_pruner()},
            )
        except Exception as err:  # torch-pruning fails on graphs it cannot trace
            raise CnnzooError(
                f"torch-pruning cannot trace {type(model).__name__}: {err}; structured "
                "pruning supports the convolutional classifiers (convnet, ResNets, "
                "MobileNets, VGG)"
            ) from err
        target = macs_before * (1.0 - mac_reduction)
        macs_after, ratio = macs_before, 0.0
        for step in range(1, steps + 1):
            if importance == "taylor":
                model.zero_grad()
                with torch.enable_grad():
                    loss_fn(model).backward()
            pruner.step()
            ratio = max_ratio * step / steps
            macs_after, _ = _count(model, example_input)
            if macs_after <= target:
                break
        if importance == "taylor":
            model.zero_grad(set_to_none=True)
        if macs_after > target:
            raise CnnzooError(
                f"removing {max_ratio:.0%} of the channels of every prunable group cuts the "
                f"MACs of {type(model).__name__} by only {1 - macs_after / macs_before:.1%}, "
                f"less than the requested {mac_reduction:.1%}; ask for less "
                "(the model is left pruned that far)"
            )
        macs_after, params_after = _count(model, example_input)
    finally:
        model.train(was_training)
    changed = {}
    for name, m in _weighted_layers(model):
        now = _channels(m)
        if before.get(name) != now:
            changed[name] = {"before": before[name], "after": now}
    return StructuredReport(
        importance=importance,
        target=mac_reduction,
        pruning_ratio=ratio,
        macs_before=macs_before,
        macs_after=macs_after,
        params_before=params_before,
        params_after=params_after,
        layers=changed,
    )
