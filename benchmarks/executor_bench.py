"""Executor overhead: the tiny depth/correlation grid run in-process, on a local process pool and on a local
Ray instance, wall time of each (including pool/Ray start-up), side by side in one run. Prints a table and
writes JSON. Not a test: numbers depend on the machine.

    python benchmarks/executor_bench.py [--grid tiny] [--workers 2] [--out benchmarks/results/executor_bench.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ffhw.executors import make_executor
from ffhw.files import code_version
from ffhw.records import load_cells
from ffhw.runner import StudyRunner
from ffhw.study import Study


def timed_run(study: Study, executor_name: str, workers: int, root: Path) -> dict:
    t0 = time.perf_counter()
    executor = make_executor(executor_name, workers)
    started = time.perf_counter()
    try:
        result = StudyRunner(study, root, executor, quiet=True).run()
    finally:
        executor.shutdown()
    end = time.perf_counter()
    return {"executor": executor_name, "workers": workers if executor_name == "process" else None,
            "startup_seconds": started - t0, "wall_seconds": end - t0, "cells": result["counts"],
            "cell_count": len(load_cells(root))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default="depth-correlation")
    p.add_argument("--grid", default="tiny")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/executor_bench.json")
    args = p.parse_args()
    study = Study.load(args.study, args.grid, "standard")
    scratch = Path(tempfile.mkdtemp(prefix="ffhw-executors-"))
    rows = []
    try:
        for name in ("in-process", "process", "ray"):
            try:
                rows.append(timed_run(study, name, args.workers, scratch / name))
            except Exception as exc:  # noqa: BLE001 - e.g. Ray not installed: report and go on
                rows.append({"executor": name, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    table = Table(title=f"{args.study} / {args.grid} grid, wall time per executor ({os.cpu_count()} cores)",
                  title_justify="left")
    for col in ("executor", "start-up s", "wall s (incl. start-up)", "cells"):
        table.add_column(col, justify="right")
    for r in rows:
        if "error" in r:
            table.add_row(r["executor"], "-", "-", r["error"])
        else:
            label = r["executor"] + (f" ({r['workers']} workers)" if r["workers"] else "")
            table.add_row(label, f"{r['startup_seconds']:.1f}", f"{r['wall_seconds']:.1f}", str(r["cells"]))
    Console().print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"code": code_version(), "command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
                               "cores": os.cpu_count(), "rows": rows}, indent=2) + "\n")
    Console().print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
