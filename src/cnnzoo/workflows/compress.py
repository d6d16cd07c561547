"""``cnnzoo compress``: a smaller or faster model from a trained classifier, as a new run.

Four techniques of the lecture's "Optimizing for embedded", one per option:

- ``--prune structured:R`` removes whole channels (torch-pruning) until the MACs drop by R,
  then fine-tunes; ``--prune unstructured:S`` zeroes the fraction S of the weights with the
  smallest magnitude and fine-tunes with those zeros held (sparsity alone is no speed-up);
- ``--quantize int8`` exports to ONNX and quantizes it statically for ONNX Runtime (QDQ,
  per-channel weights, activations calibrated on training images); no training, unless
  ``--qat`` asks to fine-tune with simulated int8 first (quantization-aware training);
- ``--quantize ternary|binary`` fine-tunes with low-bit weights (straight-through
  estimator), then stores the quantized values;
- ``--distill-from TEACHER`` trains the source run's architecture afresh with the source's
  recipe, learning from the teacher's soft targets (Hinton et al. 2015).

Every variant is an ordinary run directory (``model.safetensors``, ``model.json``,
``metrics.json``, ``plots/``) that ``eval``, ``predict``, ``export`` and ``bench`` accept;
``metrics.json`` also holds a ``compression`` entry with what was done and its cost.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from cnnzoo.errors import CnnzooError
from cnnzoo.families.base import Family, input_shape
from cnnzoo.families.registry import family_for
from cnnzoo.rundir import INT8_FILE, RunDir
from cnnzoo.summary import count_macs
from cnnzoo.workflows.train import Job, TrainConfig, TrainResult, train

if TYPE_CHECKING:
    from cnnzoo.compress.qat import QATState

QUANTIZE_MODES = ("int8", "ternary", "binary")
FP32_ONNX_FILE = "model.onnx"
DATA_KEYS = ("data", "data_dir", "val_fraction", "seed", "images")
"""The source's training options an int8 run keeps at the top of its config.yaml: where its
data is and how it was split."""


@dataclass
class CompressConfig:
    """What ``cnnzoo compress`` was asked to do (saved in the new run's ``config.yaml``)."""

    source: str
    out: str
    prune: str | None = None
    prune_rounds: int = 1
    quantize: str | None = None
    calibration: int = 512
    qat: bool = False
    distill_from: str | None = None
    temperature: float = 4.0
    alpha: float = 0.9
    finetune_epochs: int = 3
    epochs: int | None = None  # distillation: default the source run's epochs
    lr: float | None = None
    batch_size: int | None = None
    data_dir: str | None = None
    accelerator: str = "auto"
    precision: str | None = None
    seed: int = 0
    overwrite: bool = False
    progress: bool = True


@dataclass
class CompressResult:
    """A finished compression: the new run and what it measured."""

    run_dir: Path
    metrics: dict[str, float]
    compression: dict[str, Any]
    seconds: float


def _check(cfg: CompressConfig) -> None:
    chosen = [o for o in ("prune", "quantize", "distill_from") if getattr(cfg, o)]
    if len(chosen) != 1:
        raise CnnzooError(
            "give exactly one of --prune, --quantize or --distill-from "
            f"(got {', '.join('--' + c.replace('_', '-') for c in chosen) or 'none'}); "
            "chain runs to combine them, e.g. prune, then quantize the pruned run"
        )
    if cfg.quantize and cfg.quantize not in QUANTIZE_MODES:
        raise CnnzooError(
            f"--quantize {cfg.quantize!r}: expected one of {', '.join(QUANTIZE_MODES)}"
        )
    if cfg.qat and cfg.quantize != "int8":
        raise CnnzooError("--qat applies to --quantize int8 (ternary/binary always train)")
    if cfg.finetune_epochs < 0 or cfg.prune_rounds < 1:
        raise CnnzooError("--finetune-epochs must be >= 0 and --prune-rounds >= 1")


def _method(cfg: CompressConfig) -> tuple[str, str]:
    """The technique asked for (a :attr:`Family.compress_methods` name) and its flag."""
    if cfg.prune:
        return "prune", f"--prune {cfg.prune}"
    if cfg.distill_from:
        return "distill", "--distill-from"
    if cfg.quantize == "int8":
        return ("qat", "--quantize int8 --qat") if cfg.qat else ("int8", "--quantize int8")
    return "lowbit", f"--quantize {cfg.quantize}"


def _source(path: str, cfg: CompressConfig) -> tuple[RunDir, nn.Module, dict[str, Any], dict]:
    """Open a run to compress; its family must take the techniques ``cfg`` asks for."""
    run = RunDir.open(path)
    task = run.read_spec().get("task", "classification")
    family_for(task).check_compress(run.label, task, *_method(cfg))
    model, spec = run.load_model()
    return run, model, spec, run.read_config()


def _train_config(cfg: CompressConfig, config: dict[str, Any], epochs: int) -> TrainConfig:
    """The source run's training recipe, re-targeted at the new run."""
    names = {f.name for f in fields(TrainConfig)}
    base = {k: v for k, v in config.items() if k in names}
    if not base.get("model"):
        raise CnnzooError(
            f"{cfg.source} has no config.yaml with its training recipe; compress a run "
            "directory made by `cnnzoo train`"
        )
    out = replace(
        TrainConfig(**base),
        out=cfg.out,
        epochs=epochs,
        weights=None,
        strategy=None,
        resume=False,
        overwrite=cfg.overwrite,
        progress=cfg.progress,
        accelerator=cfg.accelerator,
        devices=1,
        num_nodes=1,
        max_time_minutes=None,
        seed=cfg.seed,
        data_dir=cfg.data_dir or base.get("data_dir"),
    )
    overrides = {"lr": cfg.lr, "batch_size": cfg.batch_size, "precision": cfg.precision}
    return replace(out, **{k: v for k, v in overrides.items() if v is not None})


class KeepZeros(Callback):
    """Hold pruned weights at zero while fine-tuning: re-apply the masks of the ``layers``'
    weights after every step.

    With a ``schedule`` (sparsity per epoch, iterative pruning), the weights are pruned
    further at the start of those epochs, then held there.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: list[str],
        schedule: list[float] | None = None,
        scope: str = "global",
    ) -> None:
        self.model = model
        modules = dict(model.named_modules())
        self.weights = [modules[name].weight for name in layers]
        self.schedule = schedule or []
        self.scope = scope
        self._update_masks()

    def _update_masks(self) -> None:
        self.masks = [w != 0 for w in self.weights]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from cnnzoo.compress.prune import unstructured_prune

        if trainer.current_epoch < len(self.schedule):
            unstructured_prune(self.model, self.schedule[trainer.current_epoch], self.scope)
            self._update_masks()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        with torch.no_grad():
            for weight, mask in zip(self.weights, self.masks, strict=True):
                weight.mul_(mask.to(weight.device))


class BakeLowBit(Callback):
    """When training ends, replace the low-bit parametrizations by the quantized weights."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from cnnzoo.compress.lowbit import bake_lowbit

        bake_lowbit(self.model)


class RemoveQAT(Callback):
    """When training ends, leave the int8-grid weights and drop the activation simulation."""

    def __init__(self, model: nn.Module, state: QATState) -> None:
        self.model = model
        self.state = state

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from cnnzoo.compress.qat import remove_qat

        remove_qat(self.model, self.state)


def _finetune(
    cfg: CompressConfig,
    config: dict[str, Any],
    model: nn.Module,
    epochs: int,
    callbacks: list[Callback],
    spec_extra: dict[str, Any],
) -> TrainResult:
    """Train ``model`` (already compressed) with the source's recipe into ``cfg.out``."""
    tcfg = _train_config(cfg, config, epochs)
    if cfg.lr is None:  # fine-tuning: a tenth of the source's peak learning rate
        tcfg = replace(tcfg, lr=(config.get("lr") or 0.05) * 0.1)

    def adapt(job: Job) -> Job:
        job.model = model
        job.module.model = model
        job.callbacks.extend(callbacks)
        job.spec_extra.update(spec_extra)
        return job

    return train(tcfg, adapt=adapt)


def _record(result: TrainResult, compression: dict[str, Any]) -> CompressResult:
    """Add ``compression`` and ``result.metrics`` (new or changed values) to the run's
    ``metrics.json``; return the run with all its metrics."""
    run = RunDir(result.run_dir)
    metrics = run.path / "metrics.json"
    data = json.loads(metrics.read_text())
    data["metrics"] = {**data["metrics"], **result.metrics}
    data["compression"] = compression
    run.write_json("metrics.json", data)
    return CompressResult(result.run_dir, data["metrics"], compression, result.seconds)


def _prune(cfg: CompressConfig) -> CompressResult:
    from cnnzoo.compress.prune import (
        parse_prune,
        sparsity_report,
        structured_prune,
        unstructured_prune,
    )
    from cnnzoo.models.shapes import module_shapes
    from cnnzoo.registry import create_model

    plan = parse_prune(cfg.prune or "")
    run, model, spec, config = _source(cfg.source, cfg)
    shape = input_shape(spec)
    example = torch.randn(2, *shape)
    macs_before = count_macs(model, shape)
    params_before = sum(p.numel() for p in model.parameters())
    info: dict[str, Any] = {"method": f"prune {cfg.prune}", "source": run.label}
    callbacks: list[Callback] = []
    spec_extra: dict[str, Any] = {}
    pruned_layers: list[str] = []
    if plan.structured:
        loss_fn = _taylor_loss(run, spec) if plan.importance == "taylor" else None
        report = structured_prune(
            model, example, plan.amount, importance=plan.importance, loss_fn=loss_fn
        )
        reference = create_model(spec["model"], **spec.get("kwargs", {}))
        spec_extra["shapes"] = module_shapes(model, reference)
        info["structured"] = report.to_dict()
    else:
        rounds = min(cfg.prune_rounds, max(cfg.finetune_epochs, 1))
        schedule = [plan.amount * (i + 1) / rounds for i in range(rounds)]
        pruned_layers = list(unstructured_prune(model, schedule[0], scope=plan.scope).layers)
        callbacks.append(
            KeepZeros(model, pruned_layers, schedule if rounds > 1 else None, plan.scope)
        )
        info["sparsity_schedule"] = schedule
    result = _finetune(cfg, config, model, cfg.finetune_epochs, callbacks, spec_extra)
    info.update(
        params_before=params_before,
        params_after=sum(p.numel() for p in model.parameters()),
        macs_before=macs_before,
        macs_after=count_macs(model, shape),
        finetune_epochs=cfg.finetune_epochs,
        source_accuracy=_source_metric(run),
    )
    if not plan.structured:
        info["sparsity"] = sparsity_report(model, pruned_layers).to_dict()
        info["note"] = info["sparsity"].pop("note")
    return _record(result, info)


def _taylor_loss(run: RunDir, spec: dict[str, Any]) -> Any:
    """A loss on a few training batches, for Taylor (gradient x weight) channel importance."""
    from cnnzoo.families.classification.evaluate import prepared_batches, run_data

    dm, _ = run_data(run, spec, split="train", batch_size=64)
    batches = []
    for i, batch in enumerate(prepared_batches(dm, "train")):
        if i == 4:
            break
        batches.append(batch)

    def loss_fn(model: nn.Module) -> torch.Tensor:
        model.train()
        total = sum(nn.functional.cross_entropy(model(x), y) for x, y in batches)
        return total / len(batches)

    return loss_fn


def _source_metric(run: RunDir, metric: str = "accuracy") -> float | None:
    return run.read_metrics().get("metrics", {}).get(f"test/{metric}")


def _lowbit(cfg: CompressConfig) -> CompressResult:
    from cnnzoo.compress.lowbit import apply_lowbit, packed_size_bytes, weight_levels

    mode = cfg.quantize or ""
    run, model, _, config = _source(cfg.source, cfg)
    layers = apply_lowbit(model, mode)
    result = _finetune(cfg, config, model, cfg.finetune_epochs, [BakeLowBit(model)],
                       {"lowbit": {"mode": mode, "layers": layers}})  # fmt: skip
    size = packed_size_bytes(model, mode, layers)
    levels = weight_levels(model)
    info = {
        "method": f"quantize {mode}",
        "source": run.label,
        "layers": layers,
        "levels": {k: levels[k] for k in layers if k in levels},
        "packed_size": size,
        "finetune_epochs": cfg.finetune_epochs,
        "source_accuracy": _source_metric(run),
    }
    return _record(result, info)


def _distill(cfg: CompressConfig) -> CompressResult:
    from cnnzoo.tasks.distillation import DistillationTask

    run, _, spec, config = _source(cfg.source, cfg)
    teacher_run, teacher, teacher_spec, _ = _source(cfg.distill_from or "", cfg)
    if teacher_spec["data"]["class_names"] != spec["data"]["class_names"]:
        raise CnnzooError(
            f"teacher {cfg.distill_from} was trained on other classes than {cfg.source}"
        )
    if input_shape(teacher_spec) != input_shape(spec):
        raise CnnzooError(
            f"teacher {cfg.distill_from} takes {input_shape(teacher_spec)} inputs, the student "
            f"{input_shape(spec)}; distil between models that see the same input"
        )
    epochs = cfg.epochs or int(config.get("epochs", 10))
    tcfg = _train_config(cfg, config, epochs)
    if tcfg.label_smoothing:
        tcfg = replace(tcfg, label_smoothing=0.0)  # the teacher's soft targets replace it

    def adapt(job: Job) -> Job:
        hp = dict(job.module.hparams)
        hp.pop("num_classes", None)
        hp.update(label_smoothing=0.0)
        job.module = DistillationTask(
            job.model, teacher, num_classes=job.spec.num_classes,
            temperature=cfg.temperature, alpha=cfg.alpha, **hp,
        )  # fmt: skip
        return job

    result = train(tcfg, adapt=adapt)
    info = {
        "method": f"distill from {teacher_run.label}",
        "source": run.label,
        "teacher": teacher_spec["model"],
        "teacher_accuracy": _source_metric(teacher_run),
        "student_alone_accuracy": _source_metric(run),
        "temperature": cfg.temperature,
        "alpha": cfg.alpha,
        "alpha_convention": "alpha weights the soft (teacher) term: "
        "alpha * T^2 * KL + (1 - alpha) * CE",
        "epochs": epochs,
    }
    return _record(result, info)


def _int8_record(family: Family, fp32: dict[str, float], int8: dict[str, float]) -> dict:
    """Whether int8 holds accuracy: the headline metric of both graphs, the drop and the
    family's tolerance (the manifest's and ``metrics.json``'s record)."""
    metric = family.metrics[0]
    drop = fp32[metric] - int8[metric]
    return {"metric": metric, "fp32_onnx": fp32[metric], "int8": int8[metric], "drop": drop,
            "tolerance": family.int8_tolerance,
            "holds": drop <= family.int8_tolerance}  # fmt: skip


def _int8(cfg: CompressConfig) -> CompressResult:
    import time

    from cnnzoo.compress.export import device_manifest, export_onnx
    from cnnzoo.compress.quantize import quantize_int8
    from cnnzoo.families.deployed import ort_graph

    if cfg.calibration < 1:
        raise CnnzooError(f"--calibration must be at least 1 image, got {cfg.calibration}")
    start = time.perf_counter()
    run, model, spec, config = _source(cfg.source, cfg)
    family = family_for(spec.get("task", "classification"))
    plan = family.export_plan(model, spec, run.label)
    trained: TrainResult | None = None
    if cfg.qat:
        from cnnzoo.compress.qat import prepare_qat

        state = prepare_qat(model)
        callbacks: list[Callback] = [RemoveQAT(model, state)]
        trained = _finetune(cfg, config, model, cfg.finetune_epochs, callbacks, {})
        out = RunDir(trained.run_dir)
    else:
        out = RunDir.create(cfg.out, overwrite=cfg.overwrite)
    try:
        calibration = family.calibration_images(run, spec, cfg.calibration).numpy()
        fp32 = export_onnx(plan.module, out.path / FP32_ONNX_FILE, input_shape(spec),
                           output_names=plan.output_names)  # fmt: skip
        int8 = quantize_int8(fp32, out.path / INT8_FILE, calibration,
                             float_tail=plan.float_tail, float_heads=plan.float_tail)  # fmt: skip
    except CnnzooError:
        if trained is None:
            out.discard_if_empty()
        raise
    scores = {label: family.score(run, ort_graph(path, threads=None), data_dir=cfg.data_dir)
              for label, path in (("fp32", fp32), ("int8", int8))}  # fmt: skip
    record = _int8_record(family, scores["fp32"], scores["int8"])
    metric = record["metric"]
    data = spec["data"]
    manifest = device_manifest(
        int8, model_name=spec["model"], class_names=data["class_names"], mean=data["mean"],
        std=data["std"], image_size=data["image_size"], resize_to=spec.get("resize_to"),
        quantization="int8", meanings=plan.meanings, postprocessing=plan.postprocessing,
    )  # fmt: skip
    manifest["measured"] = {**record, "split": "test", "fp32_tail": plan.float_tail}
    out.write_json(Path(INT8_FILE).with_suffix(".json").name, manifest)
    info: dict[str, Any] = {
        "method": "quantize int8 (ONNX Runtime static, QDQ, per-channel weights)"
        + (", prediction heads and decoding in fp32" if plan.float_tail else ""),
        "source": run.label,
        "calibration_images": len(calibration),
        "onnx_fp32_bytes": fp32.stat().st_size,
        "onnx_int8_bytes": int8.stat().st_size,
        f"onnx_fp32_{metric}": scores["fp32"][metric],
        f"source_{metric}": _source_metric(run, metric),
        "int8": record,
    }
    if not record["holds"]:
        info["note"] = (
            f"int8 does not hold accuracy here: {metric} {record['int8']:.4f} vs "
            f"{record['fp32_onnx']:.4f} fp32 ({record['drop']:+.4f} drop, tolerance "
            f"{record['tolerance']}); deploy the fp32 export (`cnnzoo export`)"
        )
    metrics = {f"test/{k}": v for k, v in scores["int8"].items()}
    metrics.update({f"test/{k}_fp32_onnx": v for k, v in scores["fp32"].items()})
    if trained is not None:  # the run directory is train()'s; add the int8 model to it
        info["method"] = "quantization-aware training, then " + info["method"]
        info["finetune_epochs"] = cfg.finetune_epochs
        out.write_json("model.json", {**out.read_spec(), "int8_onnx": INT8_FILE})
        metrics[f"test/{metric}_qat_fp32"] = trained.metrics[f"test/{metric}"]
        seconds = time.perf_counter() - start
        return _record(replace(trained, metrics=metrics, seconds=seconds), info)
    shutil.copyfile(run.weights, out.weights)  # the fp32 reference, for eval and bench
    out.write_json("model.json", {**spec, "int8_onnx": INT8_FILE})
    seconds = time.perf_counter() - start
    data_keys = {k: config[k] for k in DATA_KEYS if k in config}  # eval/bench find the data
    out.write_config({"compress": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                      **data_keys, "source_config": config})  # fmt: skip
    out.write_json(
        "metrics.json",
        {"model": spec["model"], "task": spec.get("task", family.name), "dataset": data["name"],
         "seconds": round(seconds, 2), "metrics": metrics, "compression": info},
    )  # fmt: skip
    return CompressResult(out.path, metrics, info, seconds)


def compress(cfg: CompressConfig) -> CompressResult:
    """Compress the classifier of run ``cfg.source`` into the new run ``cfg.out``.

    Returns:
        The new run directory, its test metrics (``test/accuracy``) and the ``compression``
        record (method, MACs/params/sizes before and after, source accuracy).

    Raises:
        CnnzooError: for no or several techniques at once, a source that is not a classifier
            run, bad option values, or an existing ``out`` (without ``overwrite``).
    """
    _check(cfg)
    if cfg.prune:
        return _prune(cfg)
    if cfg.distill_from:
        return _distill(cfg)
    if cfg.quantize == "int8":
        return _int8(cfg)
    return _lowbit(cfg)
