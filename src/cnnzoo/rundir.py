"""The run directory, in one place.

Every ``cnnzoo train`` writes::

    RUN/config.yaml            the resolved configuration
    RUN/checkpoints/           best.ckpt and last.ckpt (Lightning, for --resume)
    RUN/model.safetensors      final weights, loadable without pickle
    RUN/model.json             the architecture spec to rebuild them (name, kwargs, data spec)
    RUN/metrics.csv            one row per epoch
    RUN/metrics.json           final: model, task, dataset, epochs, seconds, metrics
    RUN/plots/                 PNG figures
    RUN/logs/                  CSV + TensorBoard logs
    RUN/environment.json       versions, OS, CPU, GPUs, threads, precision, seed, determinism

``cnnzoo train --seeds N`` writes one such directory per seed, ``RUN/seed-S/``, and in ``RUN``
only ``config.yaml``, ``environment.json`` and a ``metrics.json`` of each metric's mean and
standard deviation (:mod:`cnnzoo.workflows.seeds`); :meth:`RunDir.open` refuses ``RUN``.

Every file is written to a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from torch import nn

from cnnzoo.documents import load_mapping
from cnnzoo.errors import CnnzooError, load_error_line
from cnnzoo.files import atomic_write_bytes, atomic_write_text, check_recorded_sha256

if TYPE_CHECKING:
    from cnnzoo.weights.entry import WeightSet

WEIGHTS = "model.safetensors"
SPEC = "model.json"
METRICS = "metrics.json"
INT8_FILE = "model.int8.onnx"
"""A quantized run's ONNX Runtime model (``cnnzoo compress --quantize int8``)."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


class RunDir:
    """A run directory (see the module docstring for its layout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path, overwrite: bool = False, resume: bool = False) -> RunDir:
        """Create a new run directory.

        Args:
            overwrite: delete an existing directory first (the user asked for it).
            resume: reuse an existing directory that has ``checkpoints/last.ckpt``.

        Returns:
            The run directory.

        Raises:
            CnnzooError: if it exists and neither flag allows reusing it, or ``resume`` finds
                no checkpoint, or a damaged or unsafe one (see
                :meth:`check_resume_checkpoint`).
        """
        run = cls(path)
        if resume:
            if not run.last_checkpoint.is_file():
                raise CnnzooError(f"cannot resume: {run.last_checkpoint} does not exist")
            run.check_resume_checkpoint()
            return run
        if run.path.exists() and any(run.path.iterdir()):
            if not overwrite:
                raise CnnzooError(
                    f"run directory {run.path} already exists; choose another --out, "
                    "pass --resume to continue it, or --overwrite to replace it"
                )
            shutil.rmtree(run.path)
        run.plots.mkdir(parents=True, exist_ok=True)
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        return run

    def check_resume_checkpoint(self) -> None:
        """Make sure ``checkpoints/last.ckpt`` can be resumed from before training starts.

        It is read as Lightning will read it (``torch.load(weights_only=True)``: tensors and
        plain values only, never code), so a truncated or damaged file, or one holding a
        pickle that would run code, stops here with one line instead of a traceback. The
        message offers ``best.ckpt`` when that one is sound.

        Raises:
            CnnzooError: naming the file, what is wrong with it, and what to do instead.
        """
        last = self.last_checkpoint
        best = self.checkpoints / "best.ckpt"
        failure = _checkpoint_failure(last)
        if failure is None:
            return
        if best.is_file() and _checkpoint_failure(best) is None:
            advice = (
                f"to continue from {best} instead, copy it over last.ckpt (cp {best} {last}) "
                "and --resume again; or start again with --overwrite"
            )
        else:
            advice = "there is no sound best.ckpt to fall back on: start again with --overwrite"
        problem = load_error_line(failure, instead=advice)
        if not problem.startswith("refused"):  # damage: the loader's reason, then the way out
            problem = f"{failure if isinstance(failure, CnnzooError) else problem}; {advice}"
        raise CnnzooError(f"cannot resume from {last}: {problem}")

    def discard_if_empty(self) -> None:
        """Remove the directory when it holds nothing but the empty folders ``create`` made
        (a run that failed before it wrote anything); never removes a file."""
        for folder in (self.plots, self.checkpoints, self.path):
            try:
                folder.rmdir()  # only succeeds for an empty folder
            except OSError:
                return

    @classmethod
    def open(cls, path: str | Path | RunDir) -> RunDir:
        """Open an existing run directory, the folder of a ``model.safetensors`` file, or a
        named weight set (``resnet20.fmnist``: a :class:`WeightsRun`); a run already opened is
        returned as it is.

        Raises:
            CnnzooError: if there are no weights and spec to rebuild the model, or the name
                is not a weight set.
        """
        if isinstance(path, RunDir):
            return path
        p = Path(path)
        if not p.exists():
            from cnnzoo.weights.catalog import get, looks_like_weight_name

            if looks_like_weight_name(str(path)):
                return WeightsRun(get(str(path), as_path=True))
        if p.is_file() and p.suffix == ".safetensors":
            run = cls(p.parent)
            run._weights = p  # type: ignore[attr-defined]
        else:
            run = cls(p)
        seeds = sorted(q.parent for q in run.path.glob(f"seed-*/{WEIGHTS}"))
        if not run.weights.is_file() and seeds:  # a `cnnzoo train --seeds N` run
            raise CnnzooError(
                f"{path} is a multi-seed run (cnnzoo train --seeds) with no one model: name "
                f"one seed's run, e.g. {seeds[0]} ({len(seeds)} seeds: "
                f"{', '.join(q.name for q in seeds)})"
            )
        if not run.weights.is_file() or not run.spec_file.is_file():
            raise CnnzooError(
                f"{path} is not a cnnzoo run: expected {WEIGHTS} and {SPEC} "
                "(written at the end of `cnnzoo train`)"
            )
        return run

    # -- paths ---------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def weights(self) -> Path:
        return getattr(self, "_weights", self.path / WEIGHTS)

    @property
    def spec_file(self) -> Path:
        return self.weights.with_name(SPEC)

    @property
    def int8_file(self) -> Path:
        """The run's int8 ONNX model (it may not exist)."""
        return self.path / INT8_FILE

    @property
    def predictions(self) -> Path:
        """Where ``cnnzoo predict`` writes by default."""
        return self.path / "predictions"

    @property
    def explanations(self) -> Path:
        """Where ``cnnzoo explain`` writes by default."""
        return self.path / "explain"

    @property
    def label(self) -> str:
        """How messages name the run: its folder."""
        return str(self.path)

    # -- writing -------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.yaml``."""
        text = yaml.safe_dump(_jsonable(config), sort_keys=False)
        atomic_write_text(self.path / "config.yaml", text)

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        """Write ``name`` (a JSON file in the run directory) and return its path."""
        path = self.path / name
        atomic_write_text(path, json.dumps(_jsonable(data), indent=2) + "\n")
        return path

    def save_model(self, model: nn.Module, spec: dict[str, Any]) -> None:
        """Write ``model.safetensors`` and ``model.json`` (the spec to rebuild the model).

        A pruned model's spec carries ``"shapes"`` (see
        :func:`cnnzoo.models.shapes.module_shapes`), applied by :meth:`load_model`. The
        spec also records the weights file's SHA-256 (``"sha256": {"model.safetensors":
        ...}``), which :meth:`load_model` checks.

        Raises:
            CnnzooError: if the disk is full (the previous files are left as they were).
        """
        from safetensors.torch import save

        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        data = save(state)
        atomic_write_bytes(self.weights, data)
        digest = hashlib.sha256(data).hexdigest()
        self.write_json(SPEC, {**spec, "sha256": {self.weights.name: digest}})

    # -- reading -------------------------------------------------------------------------
    def read_spec(self) -> dict[str, Any]:
        """Return the parsed ``model.json``.

        Raises:
            CnnzooError: naming the file if it is unreadable, malformed or not a mapping.
        """
        return load_mapping(self.spec_file, "run spec")

    def load_model(self) -> tuple[nn.Module, dict[str, Any]]:
        """Rebuild the model from ``model.json`` and load ``model.safetensors`` into it.

        A spec with ``"shapes"`` (a pruned model) has those layers resized first.

        Returns:
            The model in eval mode, and the spec.

        Raises:
            CnnzooError: if the weights file was changed after training (its SHA-256 differs
                from the one ``model.json`` records), ``model.json`` is malformed or
                describes a model its options cannot build or far larger than the weights
                file, the weights do not fit the architecture, or the shapes do not fit the
                model.
        """
        from cnnzoo.weights.storage import read_state_dict

        spec = self.read_spec()
        name, kwargs = spec.get("model"), spec.get("kwargs", {})
        if not isinstance(name, str) or not isinstance(kwargs, dict):
            raise CnnzooError(
                f"run spec {self.spec_file} has model {name!r:.40} and kwargs of type "
                f"{type(kwargs).__name__}: expected a model name and a mapping of its options"
            )
        check_recorded_sha256(self.weights, spec.get("sha256"), str(self.spec_file))
        _check_model_size(self.spec_file, self.weights, spec)
        model = _build(self.spec_file, spec)
        state = read_state_dict(self.weights)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise CnnzooError(f"{self.weights} does not fit {spec['model']}: {first}") from None
        return model.eval(), spec

    def read_metrics(self) -> dict[str, Any]:
        """Return the parsed ``metrics.json`` (empty when absent, e.g. a lone weights file).

        Raises:
            CnnzooError: naming the file if it is unreadable, malformed or not a mapping.
        """
        path = self.path / METRICS
        return load_mapping(path, "run metrics file") if path.is_file() else {}

    def read_config(self) -> dict[str, Any]:
        """Return the parsed ``config.yaml`` (empty when absent, e.g. a lone weights file).

        Raises:
            CnnzooError: naming the file if it is unreadable, malformed (a YAML bomb
                included) or not a mapping.
        """
        path = self.path / "config.yaml"
        return load_mapping(path, "run configuration") if path.is_file() else {}


def _build(spec_file: Path, spec: dict[str, Any]) -> nn.Module:
    """The model ``spec`` describes (``model``, ``kwargs``, a pruned model's ``shapes``).

    Raises:
        CnnzooError: naming ``spec_file`` when its options cannot build the model.
    """
    from cnnzoo.registry import create_model

    try:
        model = create_model(spec["model"], **spec.get("kwargs", {}))
        if spec.get("shapes"):  # a pruned model: resize its layers before loading the weights
            from cnnzoo.models.shapes import apply_module_shapes

            apply_module_shapes(model, spec["shapes"])
    except CnnzooError as err:
        raise CnnzooError(f"run spec {spec_file}: {err}") from None
    except Exception as err:  # a builder refusing its options (a hand-edited spec)
        first = (str(err).splitlines() or [""])[0][:200]
        raise CnnzooError(
            f"run spec {spec_file}: its kwargs cannot build {spec['model']} "
            f"({type(err).__name__}: {first})"
        ) from None
    return model


def _check_model_size(spec_file: Path, weights: Path, spec: dict[str, Any]) -> None:
    """Refuse a spec whose model would hold far more than ``weights`` can fill (the model is
    first built on the meta device, which allocates nothing), so that a hand-edited
    ``num_classes: 1000000000`` never allocates gigabytes. Up to 4x the file is allowed
    (int8 storage expands to float32).

    Raises:
        CnnzooError: naming both files and both sizes.
    """
    import torch

    from cnnzoo.registry import create_model

    try:
        with torch.device("meta"):
            probe = create_model(spec["model"], **spec.get("kwargs", {}))
            if spec.get("shapes"):
                from cnnzoo.models.shapes import apply_module_shapes

                apply_module_shapes(probe, spec["shapes"])
    except Exception:  # options that do not build (the real build says why), or a model
        return  # that cannot be built on meta (built for real, unchecked)
    need = sum(t.numel() * t.element_size() for t in probe.state_dict().values())
    have = weights.stat().st_size
    if need > 4 * have + (1 << 20):
        raise CnnzooError(
            f"run spec {spec_file} describes a model of {need / 2**20:.1f} MB, but {weights} "
            f"holds {have / 2**20:.1f} MB: they do not belong together"
        )


def _checkpoint_failure(path: Path) -> Exception | None:
    """Read the Lightning checkpoint at ``path`` as Lightning would (tensors and plain values
    only) and return what went wrong, or None when it reads as a checkpoint."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any parse failure is reported, never raised from here
        return err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return CnnzooError("it is not a Lightning checkpoint (it has no state_dict)")
    return None


class WeightsRun(RunDir):
    """A named weight set seen as a run: its spec, metrics and training configuration come
    from the catalog entry, its weights from the verified shipped or cached file (fetched on
    first use). What a workflow writes "into the run" (``eval``'s plots) goes to
    ``$CNNZOO_HOME/runs/NAME``; the package and the cache are never written to.
    """

    def __init__(self, weight_set: WeightSet) -> None:
        from cnnzoo.weights.cache import cnnzoo_home

        super().__init__(cnnzoo_home() / "runs" / weight_set.name)
        self.weight_set = weight_set

    @property
    def weights(self) -> Path:
        from cnnzoo.weights.cache import local_file

        return local_file(self.weight_set)

    @property
    def int8_file(self) -> Path:
        ws = self.weight_set
        return self.weights if ws.storage == "onnx" else self.path / INT8_FILE

    @property
    def label(self) -> str:
        return self.weight_set.name

    @property
    def predictions(self) -> Path:
        return Path("predictions") / self.weight_set.name

    @property
    def explanations(self) -> Path:
        return Path("explain") / self.weight_set.name

    @property
    def plots(self) -> Path:
        """``$CNNZOO_HOME/runs/NAME/plots``, made on first use.

        Raises:
            CnnzooError: if it cannot be made.
        """
        folder = self.path / "plots"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CnnzooError(
                f"cannot write {self.weight_set.name}'s plots to {folder} "
                f"({err.strerror or err}): set CNNZOO_HOME to a writable folder"
            ) from None
        return folder

    def read_spec(self) -> dict[str, Any]:
        return dict(self.weight_set.spec)

    def read_config(self) -> dict[str, Any]:
        return dict(self.weight_set.config)

    def read_metrics(self) -> dict[str, Any]:
        ws = self.weight_set
        return {"model": ws.model, "task": ws.task, "dataset": ws.dataset,
                "metrics": dict(ws.metrics)}  # fmt: skip

    def load_model(self) -> tuple[nn.Module, dict[str, Any]]:
        """Build the model and load the weight set (an int8 ONNX set: the float model it
        was quantized from, named by its spec's ``source``).

        Returns:
            The model in eval mode, and the spec.

        Raises:
            CnnzooError: if the file cannot be fetched or verified.
        """
        from cnnzoo.models.weights import load_weights
        from cnnzoo.registry import create_model
        from cnnzoo.weights.cache import load_state_dict

        spec = self.read_spec()
        source = spec.get("source") if self.weight_set.storage == "onnx" else None
        model = create_model(spec["model"], **spec.get("kwargs", {}))
        load_weights(model, load_state_dict(source or self.weight_set))
        return model.eval(), spec
