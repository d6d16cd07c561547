"""Which pruning fine-tune and which distillation recipe meet issue 7's targets? A sweep.

    python benchmarks/compression_sweep.py --accelerator gpu --parallel 12      # everything
    python benchmarks/compression_sweep.py prune-l1-ft5 --accelerator cpu       # one, on the CPU

The base and the students are trained with the recipe of the compression experiment
(``cnnzoo.experiments.compression``: 5 epochs, batch 256, SGD lr 0.1 one-cycle, bf16), then
every variant below is made from them with ``cnnzoo compress``'s code path. An epoch gives
the same accuracy wherever it runs, so a GPU can try all of them in the time one CPU run
takes; the chosen recipe is then confirmed on the CPU by ``benchmarks/compression.py``.

- ``prune-*``: structured pruning of the ResNet-20 base to half its MACs, with the channel
  importance, fine-tuning epochs and learning rate in the name (``rounds2``: prune 30 %, fine-tune
  one epoch, prune the rest, fine-tune the remaining epochs);
- ``kd-*``: a student trained with the ResNet-20 as teacher at T and alpha, compared with the
  same student trained alone at the same learning rate (``alone-*``). ``--per-class N`` and
  ``--no-augment`` give the students (alone and distilled alike) N training images per class
  and no augmentation — Hinton et al.'s "soft targets as regularizers" setting, where the
  teacher has seen all the data and the student only a part.

Results (markdown and JSON) go to --runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STUDENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "lenet5": ("lenet5", {}),
    "conv8": ("convnet", {"widths": [8, 16], "hidden": 64}),
    "conv4": ("convnet", {"widths": [4, 8], "hidden": 32}),
}
"""Student name -> (model, model kwargs)."""

PRUNE: dict[str, dict[str, Any]] = {
    "prune-l1-ft3-lr01": {"prune": "structured:0.5:l1", "finetune_epochs": 3, "lr": 0.01},
    "prune-l1-ft3-lr02": {"prune": "structured:0.5:l1", "finetune_epochs": 3, "lr": 0.02},
    "prune-l1-ft3-lr03": {"prune": "structured:0.5:l1", "finetune_epochs": 3, "lr": 0.03},
    "prune-bn-ft3-lr01": {"prune": "structured:0.5:bn", "finetune_epochs": 3, "lr": 0.01},
    "prune-taylor-ft3-lr01": {"prune": "structured:0.5:taylor", "finetune_epochs": 3,
                              "lr": 0.01},
    "prune-l1-ft5-lr01": {"prune": "structured:0.5:l1", "finetune_epochs": 5, "lr": 0.01},
    "prune-l1-ft5-lr02": {"prune": "structured:0.5:l1", "finetune_epochs": 5, "lr": 0.02},
    "prune-l1-rounds2-ft3-lr01": {"prune": "structured:0.5:l1", "finetune_epochs": 3, "lr": 0.01,
                                  "rounds": 2},
}  # fmt: skip
STUDENT_LRS = {"lenet5": [0.1, 0.05, 0.03], "conv8": [0.1, 0.05], "conv4": [0.1]}
KD = [(4.0, 0.9), (4.0, 0.5), (2.0, 0.5)]
RECIPE = {"batch_size": 256, "precision": "bf16-mixed", "val_fraction": 0.0, "progress": False}


def _jobs() -> dict[str, dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = {"base": {"kind": "train", "model": "resnet20",
                                                "lr": 0.1}}  # fmt: skip
    for student, lrs in STUDENT_LRS.items():
        for lr in lrs:
            jobs[f"alone-{student}-lr{lr}"] = {"kind": "train", "student": student, "lr": lr}
            for t, a in KD:
                jobs[f"kd-{student}-lr{lr}-T{t:g}-a{a:g}"] = {
                    "kind": "kd", "student": student, "lr": lr, "temperature": t, "alpha": a,
                }  # fmt: skip
    for name, options in PRUNE.items():
        jobs[name] = {"kind": "prune", **options}
    return jobs


JOBS = _jobs()


def _train(name: str, job: dict[str, Any], args: argparse.Namespace) -> None:
    from cnnzoo.workflows.train import TrainConfig, train

    model, kwargs = (job["model"], {}) if "model" in job else STUDENTS[job["student"]]
    epochs = 5 if "model" in job else args.student_epochs  # the base: always 5
    # the students' data: all of it with augmentation, or --per-class / --no-augment
    data = {} if "model" in job else {"per_class": args.per_class, "augment": args.augment}
    quick = {"data": "fashion-mnist-mini", "epochs": 1, "subset": 512} if args.quick else {}
    cfg = TrainConfig(model=model, model_kwargs=kwargs, **{"data": "fashion-mnist",
                      "epochs": epochs, **data, **quick}, out=str(args.runs / name),
                      lr=job["lr"], accelerator=args.accelerator, **RECIPE)  # fmt: skip
    train(cfg)


def _compress(name: str, job: dict[str, Any], args: argparse.Namespace) -> None:
    from cnnzoo.workflows.compress import CompressConfig, compress

    common = {"progress": False, "accelerator": args.accelerator}
    base = str(args.runs / "base")
    if job["kind"] == "kd":
        source = args.runs / f"alone-{job['student']}-lr{job['lr']}"
        compress(CompressConfig(source=str(source), out=str(args.runs / name), distill_from=base,
                                temperature=job["temperature"], alpha=job["alpha"],
                                **common))  # fmt: skip
        return
    if job.get("rounds") == 2:  # 30 % of the MACs, one epoch, then the rest
        first = args.runs / f"{name}-round1"
        compress(CompressConfig(source=base, out=str(first), prune="structured:0.3:l1",
                                finetune_epochs=1, lr=job["lr"], **common))  # fmt: skip
        info = json.loads((first / "metrics.json").read_text())["compression"]
        rest = 1 - 0.5 * info["macs_before"] / info["macs_after"]  # half the base's MACs
        compress(CompressConfig(source=str(first), out=str(args.runs / name),
                                prune=f"structured:{rest:.4f}:l1",
                                finetune_epochs=job["finetune_epochs"] - 1, lr=job["lr"],
                                **common))  # fmt: skip
        return
    compress(CompressConfig(source=base, out=str(args.runs / name), prune=job["prune"],
                            finetune_epochs=job["finetune_epochs"], lr=job["lr"],
                            **common))  # fmt: skip


def _accuracy(run: Path) -> float | None:
    path = run / "metrics.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())["metrics"].get("test/accuracy")


def _collect(runs: Path) -> None:
    base = _accuracy(runs / "base")
    rows, lines = [], ["| job | test acc | vs reference (pt) | reference |", "|---|---|---|---|"]
    for name, job in JOBS.items():
        acc = _accuracy(runs / name)
        if acc is None:
            continue
        ref_name = (
            "base" if job["kind"] == "prune"
            else f"alone-{job['student']}-lr{job['lr']}" if job["kind"] == "kd" else None
        )  # fmt: skip
        ref = _accuracy(runs / ref_name) if ref_name else None
        delta = 100 * (acc - ref) if ref is not None else None
        rows.append({"job": name, "options": job, "accuracy": acc, "reference": ref_name,
                     "delta_pt": delta})  # fmt: skip
        lines.append(f"| {name} | {acc:.4f} | {'' if delta is None else f'{delta:+.2f}'} | "
                     f"{ref_name or ''} |")  # fmt: skip
    print("\n".join(lines))
    (runs / "results.md").write_text("\n".join(lines) + "\n")
    (runs / "results.json").write_text(json.dumps({"base": base, "rows": rows}, indent=1) + "\n")


def _spawn(names: list[str], args: argparse.Namespace) -> None:
    pending, running = list(names), []
    base = [sys.executable, __file__, "--one", "--accelerator", args.accelerator,
            "--runs", str(args.runs), "--student-epochs", str(args.student_epochs),
            *(["--per-class", str(args.per_class)] if args.per_class else []),
            *([] if args.augment else ["--no-augment"]),
            *(["--quick"] if args.quick else [])]  # fmt: skip
    while pending or running:
        while pending and len(running) < args.parallel:
            name = pending.pop(0)
            log = open(args.runs / f"{name}.log", "w")  # noqa: SIM115 (closed when done)
            running.append((subprocess.Popen([*base, name], stdout=log, stderr=log), log))
        time.sleep(1)
        for proc, log in [r for r in running if r[0].poll() is not None]:
            log.close()
            running.remove((proc, log))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", nargs="*", default=list(JOBS), help="names in JOBS")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--parallel", type=int, default=1, help="jobs run at once")
    parser.add_argument("--runs", type=Path, default=Path("runs/compression-sweep"))
    parser.add_argument("--student-epochs", type=int, default=5, help="alone and KD")
    parser.add_argument("--per-class", type=int, help="students: this many training images "
                        "per class (the teacher keeps all)")  # fmt: skip
    parser.add_argument("--no-augment", dest="augment", action="store_false",
                        help="students: no random crop/flip")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="mini set, 1 epoch: mechanics only")
    parser.add_argument("--collect", action="store_true", help="only tabulate finished jobs")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = sorted(set(args.jobs) - set(JOBS))
    if unknown:
        parser.error(f"unknown jobs {unknown}; expected names from {list(JOBS)}")
    if args.one:  # a child process: one job
        name = args.jobs[0]
        job = JOBS[name]
        (_train if job["kind"] == "train" else _compress)(name, job, args)
        return
    if args.collect:
        _collect(args.runs)
        return
    args.runs.mkdir(parents=True, exist_ok=True)
    start = time.time()
    wanted = set(args.jobs)
    # what the chosen jobs need: the base for pruning and KD, the student alone for KD
    for name in list(wanted):
        job = JOBS[name]
        if job["kind"] != "train":
            wanted.add("base")
        if job["kind"] == "kd":
            wanted.add(f"alone-{job['student']}-lr{job['lr']}")
    trains = [n for n in JOBS if n in wanted and JOBS[n]["kind"] == "train"]
    _spawn([n for n in trains if not (args.runs / n / "metrics.json").is_file()], args)
    _spawn([n for n in JOBS if n in wanted and JOBS[n]["kind"] != "train"], args)
    print(f"ran in {time.time() - start:.0f} s")
    _collect(args.runs)


if __name__ == "__main__":
    main()
