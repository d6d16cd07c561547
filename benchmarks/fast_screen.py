"""Screen ingredients of the fast classifier recipe in a plain PyTorch loop (issue 21, item 5).

A single-seed, fixed-epoch screen, cheaper than ``benchmarks/fast_recipe.py`` (which trains
through cnnzoo for a time budget over several seeds): one thread per run, so two variants can
run side by side, one per core::

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/fast_screen.py --epochs 9 &
    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/fast_screen.py --epochs 14 --widths 16,64

Each run trains cnnzoo's ``convnet`` (hidden BatchNorm, PyTorch init) on Fashion-MNIST with the
recipe's data pipeline (2 px random crops, flips), SGD + Nesterov, ``OneCycleLR`` and bf16
autocast (``--precision fp32`` on a CPU without bf16 instructions), then scores the test set
with one view, flip TTA, flip TTA + diagonal ±1 px shifts and flip TTA + four ±1 px shifts
(probabilities averaged), and appends a JSON line to
``--out``. The rows of docs/benchmarks.md's screening table were made this way.

airbench's rungs, each a switch: ``--whiten`` (first convolution from 3x3 patch whitening),
``--identity-init`` (every 3x3 convolution's first ``in_channels`` filters start as the
identity), ``--bias-lr-scale K`` (BatchNorm biases learn K times faster, airbench: 64),
``--lookahead`` (from a quarter of the steps on, every 5 steps a running average of the
weights takes a step towards them and the weights jump to it; the average's own weight grows
from 0 to 0.77 as training ends), ``--alternate-flips``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.data.fashion_mnist import load_fashion_mnist
from cnnzoo.data.transforms import normalize_batch, random_crop_batch, random_hflip_batch
from cnnzoo.registry import create_model
from cnnzoo.tasks import optim

MEAN, STD = (0.2860,), (0.3530,)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--decay-norms", action="store_true", help="weight decay on 1-D tensors too")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--crop-padding", type=int, default=2)
    p.add_argument("--alternate-flips", action="store_true", help="airbench's alternating flip")
    p.add_argument("--whiten", action="store_true", help="first conv from patch whitening")
    p.add_argument("--identity-init", action="store_true", help="airbench's dirac init")
    p.add_argument("--bias-lr-scale", type=float, default=1.0, help="BatchNorm biases' lr x")
    p.add_argument("--lookahead", action="store_true", help="airbench's lookahead average")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--widths", default="32,64")
    p.add_argument("--tag", default="")
    p.add_argument("--out", default="runs/fast-screen.jsonl")
    return p.parse_args()


def whiten_first_conv(conv: nn.Conv2d, x: Tensor, eps: float = 5e-4) -> None:
    """Set the first filters of ``conv`` to the eigenvectors of the 3x3 patch covariance of
    ``x``, scaled by 1/sqrt(eigenvalue), and their negatives (airbench's whitening init)."""
    patches = F.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 9)
    values, vectors = torch.linalg.eigh(torch.cov(patches.T))
    filters = (vectors.T / torch.sqrt(values[:, None] + eps)).reshape(9, 1, 3, 3)
    filters = torch.cat([filters, -filters])
    with torch.no_grad():
        k = min(len(filters), conv.weight.shape[0])
        conv.weight[:k] = filters[:k]


def identity_init(model: nn.Module) -> int:
    """Start the first ``in_channels`` filters of every 3x3 convolution that has at least as
    many outputs as inputs as the identity (airbench's dirac init, an implicit residual).

    Returns:
        How many convolutions were changed.
    """
    changed = 0
    with torch.no_grad():
        for conv in model.modules():
            square = isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3)
            if square and conv.groups == 1 and conv.out_channels >= conv.in_channels:
                nn.init.dirac_(conv.weight[: conv.in_channels])
                changed += 1
    return changed


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, decay_norms: bool, bias_lr_scale: float
) -> list[dict[str, Any]]:
    """cnnzoo's optimiser groups (:func:`cnnzoo.tasks.optim.param_groups`: weight decay on
    tensors with ndim > 1 only) with BatchNorm biases at ``bias_lr_scale`` times the learning
    rate (airbench's scaled bias learning rate); with ``decay_norms`` every group decays.

    Returns:
        The non-empty groups, each with ``params``, ``lr`` and ``weight_decay``.
    """
    bn_biases = {
        f"{name}.bias": bias_lr_scale
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None
    }
    groups = optim.param_groups(model, weight_decay, lr, bn_biases)
    if decay_norms:
        for group in groups:
            group["weight_decay"] = weight_decay
    return groups


class Lookahead:
    """airbench's lookahead: every ``every`` steps a running average of the model's floating
    state moves towards the weights by ``1 - rho`` and the weights jump to the average;
    ``rho = base**every * progress**power`` grows from 0 (no averaging) as training ends."""

    def __init__(self, model: nn.Module, every: int = 5, base: float = 0.95, power: float = 3.0):
        self.model, self.every, self.base, self.power = model, every, base, power
        self.average: list[Tensor] | None = None

    def _state(self) -> list[Tensor]:
        return [t for t in self.model.state_dict().values() if t.is_floating_point()]

    @torch.no_grad()
    def step(self, step: int, total: int) -> None:
        """After optimiser step ``step`` of ``total``: average every ``every`` steps."""
        if step % self.every:
            return
        if self.average is None:
            self.average = [t.clone() for t in self._state()]
            return
        rho = self.base**self.every * (step / total) ** self.power
        for average, weights in zip(self.average, self._state(), strict=True):
            average.lerp_(weights, 1 - rho)
            weights.copy_(average)


def shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """``x`` moved by (dy, dx) pixels, the border filled with zeros (the normalised mean)."""
    return torch.roll(F.pad(x, (1, 1, 1, 1)), (dy, dx), (2, 3))[:, :, 1:-1, 1:-1]


@torch.no_grad()
def evaluate(model: nn.Module, x_test: Tensor, y_test: Tensor, bf16: bool) -> dict[str, float]:
    """Test accuracy under four test-time views (see the module docstring)."""
    model.eval()
    hits = dict.fromkeys(("one view", "flip", "flip + 2 shifts", "flip + 4 shifts"), 0)
    for i in range(0, len(y_test), 1000):
        x, y = x_test[i : i + 1000], y_test[i : i + 1000]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            prob: Callable[[Tensor], Tensor] = lambda z: (  # noqa: E731
                model(z.contiguous(memory_format=torch.channels_last)).float().softmax(1)
            )
            one, mirrored = prob(x), prob(x.flip(3))
            flip = (one + mirrored) / 2
            two = [prob(shift(z, d, d)) for z in (x, x.flip(3)) for d in (1, -1)]
            four = [
                prob(shift(z, dy, dx))
                for z in (x, x.flip(3))
                for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))
            ]
        for name, p in (
            ("one view", one),
            ("flip", flip),
            ("flip + 2 shifts", flip / 2 + sum(two) / 8),
            ("flip + 4 shifts", flip / 2 + sum(four) / 16),
        ):
            hits[name] += int((p.argmax(1) == y).sum())
    return {k: v / len(y_test) for k, v in hits.items()}


def main() -> None:
    a = parse()
    torch.manual_seed(a.seed)
    x_train, y_train = load_fashion_mnist("train")
    x_test, y_test = load_fashion_mnist("test")
    x_train, x_test = normalize_batch(x_train, MEAN, STD), normalize_batch(x_test, MEAN, STD)
    widths = tuple(int(w) for w in a.widths.split(","))
    model = create_model(
        "convnet", head_norm=True, init="pytorch", dropout=a.dropout, widths=widths
    )
    if a.identity_init:
        identity_init(model)
    if a.whiten:
        whiten_first_conv(model.stages[0][0].conv, x_train[:5000])
    model = model.to(memory_format=torch.channels_last)
    groups = param_groups(model, a.lr, a.weight_decay, a.decay_norms, a.bias_lr_scale)
    opt = torch.optim.SGD(groups, lr=a.lr, momentum=0.9, nesterov=True, weight_decay=0.0)
    steps = math.ceil(len(y_train) / a.batch_size)
    total = steps * a.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in groups], total_steps=total, pct_start=0.25
    )
    lookahead = Lookahead(model) if a.lookahead else None
    bf16 = a.precision == "bf16"
    loss_fn = nn.CrossEntropyLoss(label_smoothing=a.label_smoothing)
    g = torch.Generator().manual_seed(a.seed)
    start = time.perf_counter()
    for epoch in range(a.epochs):
        model.train()
        order = torch.randperm(len(y_train), generator=g)
        for i in range(steps):
            idx = order[i * a.batch_size : (i + 1) * a.batch_size]
            x = random_crop_batch(x_train[idx], a.crop_padding, g)
            if a.alternate_flips and epoch > 0:  # half the images flipped, the other half next
                x = torch.where(((idx + epoch) % 2 == 0)[:, None, None, None], x.flip(3), x)
            else:
                x = random_hflip_batch(x, 0.5, g)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(x.contiguous(memory_format=torch.channels_last))
                loss = loss_fn(out.float(), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done = epoch * steps + i + 1
            if lookahead is not None and done >= total // 4:  # airbench: after 3 of 12 epochs
                lookahead.step(done, total)
    row = {
        "tag": a.tag,
        "args": vars(a),
        "threads": torch.get_num_threads(),
        "train_s": round(time.perf_counter() - start, 1),
        **evaluate(model, x_test, y_test, bf16),
    }
    print(json.dumps(row))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
