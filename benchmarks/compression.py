"""The embedded targets of issue 7, measured: run the compression experiment, check each target.

    python benchmarks/compression.py [--quick] [--out DIR] [--docs]

Runs ``cnnzoo experiment compression`` (ResNet-20 on Fashion-MNIST and every compressed
variant; about 12 minutes on 2 CPU cores), prints its table, then one line per target with
the measured numbers and whether it is met. ``--docs`` copies the Pareto plot to
``docs/img/compression-pareto.png`` and the results to ``docs/compression-results.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any


def _rows(out: Path) -> dict[str, list[dict[str, Any]]]:
    """bench.json rows grouped by run folder name."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for r in json.loads((out / "bench" / "bench.json").read_text())["rows"]:
        rows.setdefault(r["run"], []).append(r)
    return rows


def _latency(row: dict[str, Any], batch: int) -> float:
    return row["latency_ms"][str(batch)]  # JSON keys are strings


def _find(rows: dict[str, list[dict[str, Any]]], suffix: str) -> list[dict[str, Any]]:
    """The rows of the run whose folder name ends with ``suffix`` (e.g. ``-int8``)."""
    return next(r for name, r in rows.items() if name.endswith(suffix))


def targets(out: Path) -> list[tuple[str, str, bool]]:
    """Return ``(target, measured, met)`` for each target of the issue."""
    rows = _rows(out)
    base_name = next(n for n in rows if n.startswith("base-"))
    base_torch, base_ort = rows[base_name][0], rows[base_name][1]
    acc = base_torch["accuracy"]
    result = []

    int8 = _find(rows, "-int8")[0]
    speed_torch = [_latency(base_torch, b) / _latency(int8, b) for b in (1, 32)]
    speed_ort = [_latency(base_ort, b) / _latency(int8, b) for b in (1, 32)]
    drop = 100 * (acc - int8["accuracy"])
    result.append((
        "int8 >= 2x faster than PyTorch fp32 eager, faster than ORT fp32, <= 0.5 pt drop",
        f"{speed_torch[0]:.2f}x / {speed_torch[1]:.2f}x vs PyTorch (b1/b32), "
        f"{speed_ort[0]:.2f}x / {speed_ort[1]:.2f}x vs ORT fp32, drop {drop:+.2f} pt",
        min(speed_torch) >= 2 and min(speed_ort) > 1 and drop <= 0.5,
    ))  # fmt: skip

    structured = _find(rows, "-structured")[0]
    mac_ratio = base_torch["macs"] / structured["macs"]
    gain = [_latency(base_torch, b) / _latency(structured, b) for b in (1, 32)]
    drop = 100 * (acc - structured["accuracy"])
    result.append((
        "structured pruning >= 2x fewer MACs, <= 1 pt drop, measured latency gain",
        f"{mac_ratio:.2f}x fewer MACs, drop {drop:+.2f} pt, PyTorch latency "
        f"{gain[0]:.2f}x (b1) / {gain[1]:.2f}x (b32)",
        mac_ratio >= 2 and drop <= 1 and gain[1] > 1,
    ))  # fmt: skip

    ternary = _find(rows, "-ternary")[0]
    drop = 100 * (acc - ternary["accuracy"])
    result.append(("ternary within 2 pt of full precision", f"drop {drop:+.2f} pt", drop <= 2))

    alone = next(r for n, r in rows.items() if n.startswith("student-") and n.count("-") == 1)
    kd = _find(rows, "-kd")
    gain_pt = 100 * (kd[0]["accuracy"] - alone[0]["accuracy"])
    result.append((
        "KD student >= +0.5 pt over the same student alone",
        f"{alone[0]['accuracy']:.4f} -> {kd[0]['accuracy']:.4f} ({gain_pt:+.2f} pt, one seed)",
        gain_pt >= 0.5,
    ))  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the few-minute version")
    parser.add_argument("--out", default=None, help="output folder (must not exist)")
    parser.add_argument("--docs", action="store_true", help="copy figure and results to docs/")
    args = parser.parse_args()

    from cnnzoo.experiments import run_experiment

    out = Path(args.out or f"runs/bench/compression{'-quick' if args.quick else ''}")
    result = run_experiment("compression", out=out, quick=args.quick)
    print(result.markdown())
    lines = ["| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in targets(out)]
    table = "\n".join(lines) + "\n"
    print(table)
    (out / "targets.md").write_text(table)
    if args.docs:
        root = Path(__file__).resolve().parents[1] / "docs"
        shutil.copyfile(out / "pareto.png", root / "img" / "compression-pareto.png")
        payload = json.loads((out / "results.json").read_text())
        payload["bench"] = json.loads((out / "bench" / "bench.json").read_text())
        payload["targets"] = [{"target": t, "measured": m, "met": ok} for t, m, ok in targets(out)]
        (root / "compression-results.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
