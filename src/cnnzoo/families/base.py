"""What every task family shares: the training configuration, the job a family hands the
training loop, the result of a run, and :class:`Family`, the questions every workflow asks a
family (``train``, ``eval``, ``predict``, ``export``...). A family answers the ones it can;
the others are a one-line refusal that says what to use instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from cnnzoo.errors import CnnzooError

if TYPE_CHECKING:  # lightning costs ~1.8 s to import: predict and eval paths must not pay it
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from cnnzoo.rundir import RunDir


@dataclass
class TrainConfig:
    """Everything ``cnnzoo train`` can be told; saved as the run's ``config.yaml``."""

    model: str
    data: str = "fashion-mnist"
    out: str = "runs/run"
    data_dir: str | None = None
    epochs: int = 10
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float | None = None
    scheduler: str = "onecycle"
    loss: str = "cross_entropy"
    label_smoothing: float = 0.0
    aux_weight: float | None = None
    augment: bool = True
    val_fraction: float = 0.1
    subset: int | None = None
    image_size: int | None = None
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    precision: str = "32-true"
    channels_last: bool | None = None  # None: chosen with --precision auto, else off
    max_time_minutes: float | None = None
    time_minutes: float | None = None
    num_workers: int = 0
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    classes: list[int] | None = None
    per_class: int | None = None
    weights: str | None = None
    strategy: str | None = None
    unfreeze: int = 1
    backbone_lr_scale: float = 1.0
    unfreeze_every: int = 1
    resume: bool = False
    checkpoint_every: str | None = "10m"  # last.ckpt mid-epoch too: 10m, 500steps, off
    overwrite: bool = False
    progress: bool = True
    backbone: str | None = None
    backbone_weights: str | None = None
    input_size: list[int] | None = None
    dice_weight: float = 0.0
    class_weights: list[float] | None = None
    snapshots: int = 4
    images: str | None = None
    latent: int | None = None
    beta: float | None = None
    denoise: str | None = None
    decay_start: float = 1.0
    fid_samples: int = 2000
    recipe: str | None = None
    ema_decay: float = 0.0
    tta: bool = False
    tta_shift: int = 0
    crop_padding: int | None = None
    det_augment: str | None = None
    autoanchor: bool = True
    deterministic: bool = False
    seeds: int = 1

    def resolved(self, defaults: Mapping[str, Any]) -> TrainConfig:
        """Return a copy with the options left unset (None) filled from ``defaults`` (the
        model's task family's, :meth:`Family.defaults_for`)."""
        unset = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return replace(self, **unset)


SHARED_OPTIONS: frozenset[str] = frozenset({
    "model", "data", "out", "data_dir", "epochs", "batch_size", "optimizer", "lr", "momentum",
    "nesterov", "weight_decay", "scheduler", "augment", "val_fraction", "subset", "seed",
    "accelerator", "devices", "num_nodes", "precision", "channels_last", "max_time_minutes",
    "time_minutes", "num_workers", "model_kwargs", "resume", "checkpoint_every", "overwrite",
    "progress", "recipe", "ema_decay", "deterministic", "seeds",
})  # fmt: skip
"""The :class:`TrainConfig` fields every family takes; each of the others belongs to the
families that list it in :attr:`Family.options`, and a run of another family that sets it is
refused in one line (:func:`cnnzoo.families.registry.check_options`)."""


@dataclass
class Job:
    """What a task contributes to a training run."""

    task_name: str
    data: L.LightningDataModule
    model: torch.nn.Module
    module: L.LightningModule
    spec: Any  # DatasetSpec
    model_args: dict[str, Any]
    resize_to: Any
    monitor: str
    columns: tuple[str, ...]
    callbacks: list[Callback] = field(default_factory=list)
    train_columns: tuple[str, ...] | None = None  # metrics logged in training (None: columns)
    test: bool = True  # run the test loop after training
    trainable: Any = None
    notes: dict[str, Any] = field(default_factory=dict)
    spec_extra: dict[str, Any] = field(default_factory=dict)  # more of model.json (e.g. shapes)


@dataclass
class TrainResult:
    """What a finished training run reports (also in ``metrics.json``)."""

    run_dir: Path
    metrics: dict[str, float]
    seconds: float
    epochs: int
    params: int
    confusion: torch.Tensor | None = None
    class_names: list[str] = field(default_factory=list)
    class_iou: torch.Tensor | None = None
    steps: int = 0
    std: dict[str, float] = field(default_factory=dict)  # per metric, over --seeds runs


NOT_EXPORTED: dict[str, str] = {
    "export": "export works on classifiers, segmenters and one-stage detectors",
    "bench": "bench measures classifiers, segmenters and one-stage detectors",
    "compress": "cnnzoo compress works on classifiers (and int8 on segmenters and detectors)",
}
"""What families whose models do not export say to ``export``, ``bench`` and ``compress``."""


def input_shape(spec: dict[str, Any]) -> tuple[int, int, int]:
    """Return ``(C, H, W)`` of one input as a run's model sees it (after any resize)."""
    data = spec["data"]
    size = spec.get("resize_to") or data["image_size"]
    h, w = (size, size) if isinstance(size, int) else (size[0], size[-1])
    return (int(data["in_channels"]), int(h), int(w))


@dataclass
class ExportPlan:
    """What ``cnnzoo export`` turns into an ONNX graph for one run.

    Attributes:
        module: what the graph computes, ``forward(x)`` -> one tensor or a tuple.
        output_names: the graph's outputs, in that order.
        meanings: what each output is, for the device manifest.
        postprocessing: what an app does after the graph (a detector's thresholds and NMS),
            or None.
        finish: that post-processing as code, ``finish(outputs) -> predictions`` (``bench``
            times the graph and it together), or None when there is none.
        float_tail: int8 keeps the operators after the last convolutions in fp32 (a
            detector's box decoding and score products), and the last convolutions
            themselves (its prediction heads);
            :func:`~cnnzoo.compress.quantize.float_tail_nodes`.
    """

    module: torch.nn.Module
    output_names: tuple[str, ...]
    meanings: tuple[str, ...]
    postprocessing: dict[str, Any] | None = None
    finish: Callable[[Sequence[Tensor]], Any] | None = None
    float_tail: bool = False


Graph = Callable[[Tensor], Sequence[Tensor]]
"""A model as deployed: prepared images ``(N, C, H, W)`` -> the export plan's outputs (an
ONNX Runtime session, or the plan's module in PyTorch)."""


@dataclass
class EvalOptions:
    """What ``cnnzoo eval`` was told (each family reads the options it has)."""

    data: str | None = None
    data_dir: str | None = None
    split: str = "test"
    batch_size: int | None = None
    voc07: bool = False
    images: str | None = None
    fid_samples: int = 2000


@dataclass
class Evaluation:
    """What ``cnnzoo eval`` measured, in a form any family fills and the command line prints:
    a title, the metrics, notes on how they were measured, an optional per-class table and the
    files written."""

    title: str
    metrics: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    columns: tuple[str, ...] = ()
    rows: list[tuple[str, ...]] = field(default_factory=list)
    files: list[tuple[str, Path]] = field(default_factory=list)


@dataclass
class PredictOptions:
    """What ``cnnzoo predict`` was told (each family reads the options it has)."""

    topk: int = 3
    out: str | None = None
    overwrite: bool = False
    conf: float = 0.3
    iou: float = 0.5


class Family:
    """A task family: how its runs are trained, evaluated and used.

    Subclasses set :attr:`name`, :attr:`tasks` and :attr:`defaults` and override the
    operations they support; the others refuse with a one-line :class:`CnnzooError` naming
    the run and what to use instead (:attr:`instead`).

    Attributes:
        name: the family's name, e.g. ``"segmentation"``.
        tasks: the registry tasks it serves (``ModelInfo.task``).
        defaults: per task, the training options left unset take these values.
        options: the :class:`TrainConfig` fields it takes beyond :data:`SHARED_OPTIONS`.
        option_hints: per option of another family, what to do instead (added to the error).
        exports: its models can be exported to ONNX, quantized to int8 and benchmarked.
        compress_methods: what ``cnnzoo compress`` does to its runs, of ``"prune"``,
            ``"distill"``, ``"lowbit"`` (ternary, binary), ``"int8"`` and ``"qat"``.
        metrics: what :meth:`score` measures on the test split, the headline first
            (``bench`` and int8 report it).
        int8_tolerance: int8 *holds accuracy* when its headline metric is at most this much
            below the fp32 graph's (absolute); ``compress`` says so when it is not.
        instead: per command it does not support, what to use instead.
        recipes: named sets of training options (``--recipe NAME``); the first is the default.
    """

    name: str = ""
    tasks: tuple[str, ...] = ()
    defaults: Mapping[str, Mapping[str, Any]] = {}
    options: frozenset[str] = frozenset()
    option_hints: Mapping[str, str] = {}
    exports: bool = False
    compress_methods: frozenset[str] = frozenset()
    metrics: tuple[str, ...] = ()
    int8_tolerance: float = 0.01
    instead: Mapping[str, str] = {}
    recipes: Mapping[str, Mapping[str, Any]] = {}

    def apply_recipe(self, cfg: TrainConfig) -> TrainConfig:
        """Return ``cfg`` with its recipe's options filled in where ``cfg`` left them at their
        defaults (an option the user set wins), and ``recipe`` named (the family's first
        recipe when none was asked for; unchanged for a family without recipes). The
        recipe's ``model_kwargs`` are given to the models whose builders take them.

        Raises:
            CnnzooError: for a recipe this family does not have.
        """
        if not self.recipes:
            if cfg.recipe is not None:
                raise CnnzooError(
                    f"--recipe {cfg.recipe}: {self.name} models have no training recipes "
                    "to choose from; set the options themselves"
                )
            return cfg
        name = cfg.recipe or next(iter(self.recipes))
        if name not in self.recipes:
            raise CnnzooError(
                f"unknown recipe {name!r} for {self.name} models; expected one of "
                f"{', '.join(self.recipes)}"
            )
        recipe = dict(self.recipes[name])
        model_options = recipe.pop("model_kwargs", {})
        defaults = {f.name: f.default for f in fields(TrainConfig)}
        chosen = {k: v for k, v in recipe.items() if getattr(cfg, k) == defaults[k]}
        if model_options:  # the model options of the recipe go to the models that take them
            from cnnzoo.registry import model_info

            takes = inspect.signature(model_info(cfg.model).builder).parameters
            extra = {k: v for k, v in model_options.items() if k in takes}
            chosen["model_kwargs"] = {**extra, **cfg.model_kwargs}
        return replace(cfg, recipe=name, **chosen)

    def defaults_for(self, task: str) -> Mapping[str, Any]:
        """The training defaults of ``task`` (one of :attr:`tasks`)."""
        return self.defaults.get(task, {})

    def refusal(self, command: str, label: str, task: str) -> CnnzooError:
        """The one-line error of a command this family does not support."""
        hint = self.instead.get(command)
        return CnnzooError(
            f"{label} is a {task} model: `cnnzoo {command}` does not apply to it"
            + (f"; {hint}" if hint else "")
        )

    def check_exports(self, label: str, task: str, command: str) -> None:
        """Refuse ``command`` (export, bench, compress) for models that do not export.

        Raises:
            CnnzooError: unless :attr:`exports`.
        """
        if not self.exports:
            raise self.refusal(command, label, task)

    def check_compress(self, label: str, task: str, method: str, flag: str) -> None:
        """Refuse a ``cnnzoo compress`` technique (``method``, asked for by ``flag``) that
        this family's runs do not take.

        Raises:
            CnnzooError: naming the run, the flag and the techniques it does take.
        """
        self.check_exports(label, task, "compress")
        if method not in self.compress_methods:
            takes = ", ".join(sorted(self.compress_methods)) or "nothing"
            raise CnnzooError(
                f"{label} is a {task} model: `cnnzoo compress {flag}` does not apply to it "
                f"(it takes: {takes}; e.g. --quantize int8)"
            )

    def calibration_images(self, run: RunDir, spec: dict[str, Any], n: int) -> Tensor:
        """Return ``n`` training images of the run as the model sees them (int8 calibration).

        Raises:
            CnnzooError: when the training data is not on this machine, or a family whose
                models do not quantize.
        """
        raise self.refusal("compress", run.label, spec.get("task", self.name))

    def score(
        self, run: RunDir, graph: Graph | None = None, data_dir: str | None = None
    ) -> dict[str, float]:
        """Return :attr:`metrics` on the run's test split, measured by the family's own
        evaluation code: of the run's PyTorch model, or of ``graph`` (its export, computing
        what the export plan's module computes) in its place.

        Raises:
            CnnzooError: for missing test data, or a family without it.
        """
        raise self.refusal("bench", run.label, run.read_spec().get("task", self.name))

    def export_plan(self, model: torch.nn.Module, spec: dict[str, Any], label: str) -> ExportPlan:
        """Return what ``cnnzoo export`` exports of a run's ``model`` (its ``spec`` is the
        run's ``model.json``).

        Raises:
            CnnzooError: for a family, or a model of it, that does not export.
        """
        raise self.refusal("export", label, spec.get("task", self.name))

    def check_images(self, run: RunDir, spec: dict[str, Any], n: int) -> tuple[Tensor, str]:
        """Return up to ``n`` test images as the model sees them (an export is checked on
        them), and what they are; standard-normal noise (seed 0) where the run's data is not
        on this machine."""
        noise = torch.randn(n, *input_shape(spec), generator=torch.Generator().manual_seed(0))
        return noise, "standard-normal noise (the training data was not found)"

    def job(self, cfg: TrainConfig) -> Job:
        """Data, model and LightningModule of a training run.

        Raises:
            CnnzooError: for bad data or options (those of other families included).
        """
        raise self.refusal("train", cfg.model, self.name)

    def write_plots(self, run: RunDir, cfg: TrainConfig, result: TrainResult, job: Job) -> None:
        """Write the family's figures of a finished run into ``run.plots`` (default: none)."""

    def evaluate(self, run: RunDir, options: EvalOptions) -> Evaluation:
        """Measure a run on a split of its data (or ``options.data``).

        Raises:
            CnnzooError: for data that do not fit the model, or a family without evaluation.
        """
        raise self.refusal("eval", run.label, run.read_spec().get("task", self.name))

    def predict(self, run: RunDir, files: list[str], options: PredictOptions) -> list[str]:
        """Apply the run's model to image files; return one tab-separated line per image.

        Raises:
            CnnzooError: for a missing or unreadable image, existing outputs (without
                ``overwrite``), or a family without prediction.
        """
        raise self.refusal("predict", run.label, run.read_spec().get("task", self.name))
