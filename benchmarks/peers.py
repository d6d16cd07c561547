"""cnnzoo against its peers: same data, same wall-clock budget, same threads, same scorer.

Examples::

    python benchmarks/peers.py setup                  # once: the peers' own venv
    python benchmarks/peers.py detection              # fast_rcnn + yolov3_tiny vs YOLOv8n, 15 min
    python benchmarks/peers.py segmentation --mode parallel --cores 0,1
    python benchmarks/peers.py detection --models yolov3 --data coco:/d/instances_train.json
    python benchmarks/peers.py detection --models fast_rcnn,yolov3,yolov3:modern --mode parallel
    python benchmarks/peers.py segmentation --data masks:/d/mine --minutes 30 --device cuda

Detection: cnnzoo's detectors (``cnnzoo train MODEL --time MIN``, recipes in
:data:`peerbench.cnnzoo_side.RECIPES`) against ultralytics YOLOv8n from scratch
(``yolov8n.yaml``, ``time=MIN/60``) on a YOLO copy of the same splits made by cnnzoo's
converter. Segmentation: cnnzoo's segmenters against segmentation_models_pytorch
``Unet("resnet18", encoder_weights=None)`` trained by the plain loop of
:mod:`peerbench.smp_peer` until the same budget is spent.

The peers live only in ``benchmarks/.peers-venv`` (``setup``) and run there as
subprocesses that write their test predictions to files; both sides' files are scored here
by cnnzoo's evaluation code (:mod:`peerbench.score`). Every training process gets
``OMP_NUM_THREADS=--threads`` (and ``torch.set_num_threads``); ``--mode sequential`` trains
one after the other, ``parallel`` side by side (two lanes taking the trainings in turn, the
peer first, each lane on its own core of ``--cores``). ``--models yolov3:modern`` trains a
model with ``--recipe modern``, ``yolov3_tiny+box_weight=5`` with ``--model-arg box_weight=5``.
Speed, measured afterwards one at a time:
the model's forward pass, fp32, batch 32, ``--speed-threads`` threads, on real test images,
and the ONNX export's (ONNX Runtime, same threads) where the model exports.

Default data: scenes nobody tuned for (:func:`peerbench.data.benchmark_scenes`: 1,500
training scenes incl. 5 % validation, 300 test, 96 px, 10 classes, seed 2121, items of the
full Fashion-MNIST). Writes ``--out/results.json`` and ``results.md`` (the command, machine,
threads, budget and mode with the table).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peerbench.cnnzoo_side import DEFAULT_MODELS  # noqa: E402
from peerbench.data import FASHION_MNIST_DIR, SCENES_SEED, SCENES_SETTINGS  # noqa: E402

VENV = HERE / ".peers-venv"
TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1"]
PEER_PACKAGES = ["ultralytics==8.4.190", "segmentation-models-pytorch==0.6.0", "onnx==1.23.2",
                 "onnxruntime==1.32.0", "onnxscript==0.7.2"]  # fmt: skip
"""What ``setup`` installs after torch (the versions the first measurement used)."""
PEER_SCRIPTS = {"detection": "yolo_peer.py", "segmentation": "smp_peer.py"}
TASKS = tuple(PEER_SCRIPTS)


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        fail(message)


def fail(message: str) -> NoReturn:
    """Print one line naming what was wrong and exit with status 2."""
    print(f"peers.py: {message}", file=sys.stderr)
    sys.exit(2)


def setup(venv: Path) -> None:
    """Create the peers' virtual environment and install them (and the pinned torch) in it."""
    python = shutil.which("python3") or sys.executable
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    for command in ([python, "-m", "venv", str(venv)], [*pip, *TORCH_PINS], [*pip, *PEER_PACKAGES]):
        print("+", shlex.join(command), flush=True)
        subprocess.run(command, check=True)
    check = "import ultralytics, segmentation_models_pytorch, onnxruntime; print('peers ready')"
    env = thread_env(1, peer=True) | {"YOLO_CONFIG_DIR": str(venv / "ultralytics-config")}
    subprocess.run([str(venv / "bin" / "python"), "-c", check], check=True, env=env)


def check_options(task: str, args: argparse.Namespace) -> list[str]:
    """Validate a comparison's options; return the cnnzoo models to train.

    Raises:
        CnnzooError: naming the first bad value.
    """
    from cnnzoo import list_models
    from cnnzoo.errors import CnnzooError

    if not args.minutes > 0:
        raise CnnzooError(f"--minutes {args.minutes}: expected a positive number of minutes")
    if getattr(args, "peer_lr", None) is not None and not args.peer_lr > 0:
        raise CnnzooError(f"--peer-lr {args.peer_lr}: expected a positive learning rate")
    for name in ("threads", "speed_threads", "speed_repeats", "batch_size"):
        if getattr(args, name) < 1:
            raise CnnzooError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected >= 1")
    if not 0 < args.val_fraction < 1:
        raise CnnzooError(f"--val-fraction {args.val_fraction}: expected a number in (0, 1)")
    from cnnzoo.families.registry import family_for

    models = args.models.split(",") if args.models else DEFAULT_MODELS[task]
    known = list_models(task=task)
    recipes = list(family_for(task).recipes)
    for entry in models:
        model, *model_args = entry.split("+")
        model, _, recipe = model.partition(":")
        for arg in model_args:
            if not arg.partition("=")[0] or "=" not in arg:
                raise CnnzooError(f"--models: {entry!r}: expected +KEY=VALUE, got +{arg!r}")
        if model not in known:
            raise CnnzooError(f"--models: {model!r} is no {task} model: expected some of {known}")
        if recipe and recipe not in recipes:
            raise CnnzooError(
                f"--models: {entry!r} names recipe {recipe!r}: {task} recipes are "
                f"{', '.join(recipes) or 'none'}"
            )
    if len(set(models)) < len(models):
        raise CnnzooError(f"--models {args.models}: a model is named twice")
    if args.cores:
        allowed = os.sched_getaffinity(0)
        for core in args.cores:
            if core not in allowed:
                raise CnnzooError(f"--cores: core {core} is not available here: {sorted(allowed)}")
    if args.device not in ("auto", "cpu", "cuda"):
        raise CnnzooError(f"--device {args.device!r}: expected auto, cpu or cuda")
    return models


def parse_cores(text: str) -> list[int]:
    """``"0,1"`` -> ``[0, 1]`` (for ``--cores``)."""
    try:
        return [int(c) for c in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of cores"
        ) from None


def thread_env(threads: int, peer: bool) -> dict[str, str]:
    """The environment of a training process: ``threads`` for every thread pool; the peers'
    without cnnzoo's PYTHONPATH and with ultralytics offline."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    if peer:
        env.pop("PYTHONPATH", None)
        env["YOLO_OFFLINE"] = "true"
    return env


@dataclass
class Step:
    """One subprocess of the benchmark, its log, and what happened."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    core: int | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def run(self) -> None:
        """Run it (pinned to ``core`` if set), output to ``log``; record seconds and status."""
        pin = (lambda: os.sched_setaffinity(0, {self.core})) if self.core is not None else None
        start = time.perf_counter()
        with open(self.log, "w") as log:
            log.write("+ " + shlex.join(self.command) + "\n")
            log.flush()
            code = subprocess.run(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                  preexec_fn=pin).returncode  # fmt: skip
        self.result = {"seconds": round(time.perf_counter() - start, 1), "exit": code}
        print(f"{self.name}: exit {code} after {self.result['seconds']} s ({self.log})", flush=True)


def plan_lanes(steps: list[Step], mode: str) -> list[list[Step]]:
    """The lanes of a comparison: one lane in ``sequential`` mode; in ``parallel`` mode two
    lanes taking the steps in turn (the peer first), so two trainings always share the machine
    and the wall clock is ``ceil(len(steps) / 2)`` budgets."""
    if mode != "parallel":
        return [steps]
    return [lane for lane in (steps[0::2], steps[1::2]) if lane]


def run_lanes(lanes: list[list[Step]]) -> None:
    """Run each lane's steps in order, the lanes at the same time."""
    workers = [threading.Thread(target=lambda lane=lane: [s.run() for s in lane]) for lane in lanes]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def compare(task: str, args: argparse.Namespace) -> int:
    """Train both sides, score both, print and write the table; return the exit status."""
    import torch

    from classification import machine
    from cnnzoo.data.folder import load_image
    from cnnzoo.errors import CnnzooError
    from cnnzoo.workflows.demo import free_run_dir
    from peerbench import cnnzoo_side, data, score

    try:
        models = check_options(task, args)
    except CnnzooError as error:
        fail(str(error))
    python = args.venv / "bin" / "python"
    if not python.is_file():
        fail(f"--venv {args.venv}: no peers' environment there: run `python {sys.argv[0]} setup`")
    device = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    job: dict[str, Any] = {"minutes": args.minutes, "threads": args.threads, "device": device,
                           "speed_threads": args.speed_threads, "speed_repeats": args.speed_repeats,
                           "seed": args.seed, "batch_size": args.batch_size}  # fmt: skip
    try:  # resolve the data before anything is written, so a bad --data leaves nothing behind
        scenes = (args.train_scenes, args.test_scenes, args.scenes_seed, args.fashion_mnist)
        spec = args.data or data.benchmark_scenes(Path(args.data_dir), *scenes)
        if task == "detection":
            splits = data.detection_splits(spec, args.val_fraction, args.seed)
            first = splits.splits["train"][0]
            test_paths = [str(r.path) for r in splits.splits["test"]]
            truth = data.detection_truth(splits.splits["test"])
            side = args.size or -(-max(first.width, first.height) // 32) * 32
            # ultralytics' default epochs: with time= it refits them after each epoch, and the
            # initial value picks its optimizer (10,000 epochs would choose MuSGD, whose
            # Newton-Schulz steps cost ~7 s per batch on one CPU thread; 100 gives AdamW)
            job |= {"max_epochs": 100, "imgsz": side}
        else:
            splits = data.segmentation_splits(spec, args.val_fraction, args.seed)
            test_paths = [image for image, _ in splits.splits["test"]]
            truth = splits.test_masks
            h, w = load_image(splits.splits["train"][0][0], 3).shape[-2:]
            job |= {"train": splits.splits["train"], "num_classes": len(splits.class_names),
                    "loop": args.peer_loop, "precision": args.peer_precision,
                    "lr": args.peer_lr,
                    "crop": args.size or -(-max(h, w) // 32) * 32}  # fmt: skip
    except CnnzooError as error:
        fail(str(error))
    out = Path(free_run_dir(args.out)).resolve()
    peer_dir = out / "peer"
    peer_dir.mkdir(parents=True)
    if task == "detection":
        job["data_yaml"] = str(data.yolo_layout(splits, out / "yolo"))
    job["test_images"] = test_paths
    job_file = peer_dir / "job.json"
    job_file.write_text(json.dumps(job, indent=1) + "\n")

    script = str(HERE / "peerbench" / PEER_SCRIPTS[task])
    ours = []
    for m in models:
        name = m.replace(":", "-")
        run_dir = out / f"cnnzoo-{name}"
        command = cnnzoo_side.train_command(
            m, spec, run_dir, args.minutes, args.val_fraction, args.seed, device, args.train_arg
        )
        ours.append(Step(f"cnnzoo {m}", command, thread_env(args.threads, False),
                         out / f"cnnzoo-{name}.log"))  # fmt: skip
    peer = Step("peer", [str(python), script, "train", str(job_file)],
                thread_env(args.threads, True), out / "peer-train.log")  # fmt: skip
    lanes = plan_lanes([peer, *ours], args.mode)
    for index, lane in enumerate(lanes):
        for step in lane:
            step.core = args.cores[index % len(args.cores)] if args.cores else None
    print(f"training {', '.join(models)} and the peer for {args.minutes} min each, {args.mode}, "
          f"{args.threads} thread(s); logs in {out}", flush=True)  # fmt: skip
    run_lanes(lanes)
    evaluate = Step("peer evaluate", [str(python), script, "evaluate", str(job_file)],
                    thread_env(args.threads, True), out / "peer-evaluate.log")  # fmt: skip
    if peer.result["exit"] == 0:
        evaluate.run()

    images = [load_image(p, 3) for p in test_paths]
    n = len(test_paths)
    read = score.read_box_predictions if task == "detection" else score.read_mask_predictions

    def scored(folder: Path) -> dict[str, float]:
        if task == "detection":
            return score.score_detection(read(folder / "predictions.json", n), truth)
        return score.score_segmentation(read(folder / "predictions.npz", n), truth,
                                        len(splits.class_names))  # fmt: skip

    sides = []
    torch.set_num_threads(args.speed_threads)
    for model, step in zip(models, ours, strict=True):
        run_dir = out / f"cnnzoo-{model.replace(':', '-')}"
        side: dict[str, Any] = {"model": model, "metrics": {}, "command": shlex.join(step.command)}
        if step.result["exit"] == 0:
            metrics = json.loads((run_dir / "metrics.json").read_text())
            side |= cnnzoo_side.run_summary(metrics)
            if task == "detection":
                score.write_box_predictions(run_dir / "predictions.json",
                                            cnnzoo_side.predict_boxes(run_dir, images))  # fmt: skip
            else:
                masks = cnnzoo_side.predict_masks(run_dir, images)
                score.np.savez_compressed(run_dir / "predictions.npz",
                                          **{str(i): m for i, m in enumerate(masks)})  # fmt: skip
            side["metrics"] = scored(run_dir)
            side |= cnnzoo_side.speed(
                run_dir, images, args.speed_threads, args.speed_repeats, run_dir
            )
        else:
            side["error"] = f"training failed, see {step.log}"
        sides.append(side)
    rival: dict[str, Any] = {"model": task + " peer", "metrics": {}}
    if evaluate.result.get("exit") == 0:
        rival = json.loads((peer_dir / "peer_train.json").read_text())
        rival |= json.loads((peer_dir / "peer_speed.json").read_text())
        rival["metrics"] = scored(peer_dir)
    else:
        rival["error"] = f"failed, see {evaluate.log if evaluate.result else peer.log}"

    gpu = f", GPU {torch.cuda.get_device_name()}" if device == "cuda" else ""
    header = (f"{task}: {spec} (train {len(splits.splits['train'])}, val "
              f"{len(splits.splits['val'])}, test {n}); budget {args.minutes} min per side; "
              f"{args.threads} training thread(s) each, {args.mode}"
              f"{' on cores ' + ','.join(map(str, args.cores)) if args.cores else ''}; device "
              f"{device}{gpu}; speed: forward, fp32, batch 32, {args.speed_threads} thread(s); "
              f"{machine()}")  # fmt: skip
    table = score.comparison_table(task, sides, rival)
    text = f"`{shlex.join([sys.executable, *sys.argv])}`\n\n{header}\n\n{table}\n"
    print("\n" + text)
    results = {"task": task, "command": shlex.join(sys.argv), "machine": machine() + gpu,
               "data": spec, "sizes": {k: len(v) for k, v in splits.splits.items()},
               "minutes": args.minutes, "threads": args.threads, "mode": args.mode,
               "cores": args.cores, "device": device, "speed_threads": args.speed_threads,
               "cnnzoo": sides, "peer": rival,
               "ratios": {s["model"]: score.ratios(task, s, rival) for s in sides},
               "steps": {s.name: s.result for s in [*ours, peer, evaluate]}}  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(text)
    print(f"written: {out / 'results.json'}, {out / 'results.md'}")
    return 0 if all("error" not in s for s in [*sides, rival]) else 1


def build_parser() -> Parser:
    """The command line: ``setup``, ``detection``, ``segmentation``."""
    parser = Parser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    setup_cmd = commands.add_parser("setup", help="create the peers' virtual environment")
    setup_cmd.add_argument("--venv", type=Path, default=VENV)
    for task in TASKS:
        sub = commands.add_parser(task, help=f"compare on {task}")
        sub.add_argument(
            "--models",
            default=None,
            help=f"cnnzoo models, comma-separated, each MODEL[:RECIPE][+KEY=VALUE...] (default "
            f"{','.join(DEFAULT_MODELS[task])})",
        )
        sub.add_argument("--minutes", type=float, default=15.0, help="training budget per side")
        sub.add_argument("--threads", type=int, default=1, help="training threads per side")
        sub.add_argument("--mode", choices=("sequential", "parallel"), default="sequential")
        sub.add_argument(
            "--cores",
            type=parse_cores,
            default=None,
            help="pin lane i to core i (parallel) or every step to the first core",
        )
        sub.add_argument("--device", default="auto", help="auto, cpu or cuda (training)")
        sub.add_argument(
            "--data",
            default=None,
            help="a cnnzoo --data spec (default: the "
            "benchmark's scenes); detection: scenes:PATH, coco:ANN.json, "
            "yolo:DATA.yaml, voc:PATH; segmentation: scenes:PATH, masks:PATH",
        )
        sub.add_argument("--data-dir", default="runs/peers-data", help="where scenes are made")
        sub.add_argument("--train-scenes", type=int, default=SCENES_SETTINGS["n_train"])
        sub.add_argument("--test-scenes", type=int, default=SCENES_SETTINGS["n_test"])
        sub.add_argument("--scenes-seed", type=int, default=SCENES_SEED)
        sub.add_argument(
            "--fashion-mnist",
            default=FASHION_MNIST_DIR,
            help="the full Fashion-MNIST folder, or 'mini' (the bundled subset)",
        )
        sub.add_argument("--val-fraction", type=float, default=0.05)
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--batch-size", type=int, default=16, help="the peer's")
        sub.add_argument(
            "--size",
            type=int,
            default=None,
            help="the peer's training size (default: image side rounded up to 32)",
        )
        if task == "segmentation":
            sub.add_argument(
                "--peer-loop",
                choices=("matched", "plain"),
                default="matched",
                help="the smp training loop: matched (cnnzoo's segmentation recipe) or plain",
            )
            sub.add_argument(
                "--peer-lr",
                type=float,
                default=None,
                help="the smp loop's peak learning rate (default: the --peer-loop's own)",
            )
            sub.add_argument(
                "--peer-precision",
                choices=("fp32", "bf16"),
                default="fp32",
                help="the smp loop's training precision (bf16: autocast, as cnnzoo's "
                "--precision auto on a CPU with bf16 instructions)",
            )
        sub.add_argument(
            "--train-arg",
            action="append",
            default=[],
            metavar="OPTION",
            help="one more `cnnzoo train` option for every cnnzoo model, after the recipe's "
            "(the last value wins), e.g. --train-arg=--lr=1e-2; repeatable",
        )
        sub.add_argument("--speed-threads", type=int, default=1)
        sub.add_argument("--speed-repeats", type=int, default=5)
        sub.add_argument("--venv", type=Path, default=VENV)
        sub.add_argument("--out", default=f"runs/peers-{task}")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.command == "setup":
        setup(args.venv)
        return
    sys.exit(compare(args.command, args))


if __name__ == "__main__":
    main()
