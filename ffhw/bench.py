"""Latency benchmark of an export bundle: `python -m ffhw.bench BUNDLE` (or `python -m ffhw.run bench BUNDLE`).

Per layer and for the whole classifier, onnxruntime and torch eager on the same real test inputs: p50/p90/p99
latency at batch 1 and throughput at a large batch, with 1 thread and with all threads, after a warm-up;
file size and the op histogram of the graph onnxruntime runs. Prints a table and writes JSON (machine
and versions recorded). The bundle is verified (checksums, inputs) before anything is timed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from .errors import FFHWError
from .export import ClassifierGraph, LayerGraph, _versions, optimized_ops, verify_bundle
from .onnxrt import ort_session


def percentiles(fn, iterations: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "iterations": iterations}


def torch_graphs(manifest: dict):
    """The eager modules the bundle was exported from, rebuilt from the run (None if the run is gone)."""
    from .model import load_model

    run = Path(manifest["run"])
    if not (run / "model.pt").exists():
        return None
    model, cfg = load_model(run)
    index = model.seed_list.index(manifest["seed"])
    front = model.encoding.export_front(index)
    cores = [layer.export_module(index).eval() for layer in model.layers]
    graphs = [LayerGraph(core, cfg.model.goodness, front if "label" in e["inputs"] else None).eval()
              for core, e in zip(cores, manifest["layers"])]
    head = ((model.head_weight[index].detach(), model.head_bias[index].detach())
            if manifest["classifier"] == "head" else None)
    classifier = ClassifierGraph(front, cores, cfg.model.goodness, model.classifier_layers, head).eval()
    return graphs, classifier


def real_inputs(manifest: dict, batch: int):
    """Feeds for every model of the bundle from real test images, chained through the layers."""
    from .data import load as load_data

    d = load_data(manifest["dataset"], None, "cpu")
    images, labels = d.test.images(slice(0, batch)), d.test.y[:batch]
    feeds, x = [], None
    for e in manifest["layers"]:
        if "label" in e["inputs"]:
            feed = {"image": images.numpy(), "label": labels.numpy()}
        elif x is None:
            raise FFHWError("this bundle's layer 0 takes encoded spike trains; benchmark it with its own inputs")
        else:
            feed = {"x": x}
        feeds.append(feed)
        x = ort_session(Path(manifest["_dir"]) / e["file"]).run(None, feed)[0]
    return feeds, {"image": images.numpy()}


def bench_bundle(bundle: str | Path, batch: int = 256, iterations: int = 200, log=print) -> dict:
    bundle = Path(bundle)
    manifest = verify_bundle(bundle)
    manifest["_dir"] = str(bundle)
    all_threads = os.cpu_count() or 1
    feeds_large, clf_large = real_inputs(manifest, batch)
    eager = torch_graphs(manifest)
    models = [(e["file"], feeds_large[i], (eager[0][i] if eager else None)) for i, e in enumerate(manifest["layers"])]
    models.append(("classifier.onnx", clf_large, eager[1] if eager else None))
    results = []
    torch_threads = torch.get_num_threads()
    for name, feed, module in models:
        path = bundle / name
        one = {k: v[:1] for k, v in feed.items()}
        entry = {"model": name, "bytes": path.stat().st_size}
        for threads in sorted({1, all_threads}):
            sess = ort_session(path, threads=threads)
            entry[f"ort_b1_t{threads}"] = percentiles(lambda: sess.run(None, one), iterations, 20)
            big = percentiles(lambda: sess.run(None, feed), max(10, iterations // 10), 3)
            entry[f"ort_b{batch}_t{threads}"] = {**big, "samples_per_s": batch / (big["p50_ms"] / 1000)}
            if module is not None:
                torch.set_num_threads(threads)
                t_one = [torch.from_numpy(v) for v in one.values()]
                t_big = [torch.from_numpy(v) for v in feed.values()]
                with torch.inference_mode():
                    entry[f"torch_b1_t{threads}"] = percentiles(lambda: module(*t_one), iterations, 20)
                    big = percentiles(lambda: module(*t_big), max(10, iterations // 10), 3)
                entry[f"torch_b{batch}_t{threads}"] = {**big, "samples_per_s": batch / (big["p50_ms"] / 1000)}
        torch.set_num_threads(torch_threads)
        entry["optimized_ops"] = optimized_ops(path)
        results.append(entry)
        log(f"{name}: ort p50 {entry['ort_b1_t1']['p50_ms']:.3f} ms at batch 1, 1 thread")
    return {"bundle": str(bundle), "layer_type": manifest["layer_type"], "batch": batch, "threads": sorted({1, all_threads}),
            "results": results, "machine": {"platform": platform.platform(), "processor": platform.processor(),
                                            "cores": all_threads},
            "versions": _versions(), "ort_optimization": "ORT_ENABLE_ALL"}


def table(report: dict) -> Table:
    t = Table(title=f"{report['bundle']} ({report['layer_type']}): latency at batch 1 (p50 / p99 ms) and "
                    f"throughput at batch {report['batch']}", title_justify="left")
    threads = report["threads"]
    t.add_column("model")
    t.add_column("KiB", justify="right")
    for th in threads:
        t.add_column(f"ort b1 {th}t", justify="right")
        t.add_column(f"torch b1 {th}t", justify="right")
        t.add_column(f"ort/s {th}t", justify="right")
    t.add_column("ops (optimised)")
    b = report["batch"]
    for e in report["results"]:
        cells = [e["model"], f"{e['bytes'] / 1024:,.0f}"]
        for th in threads:
            o, p = e[f"ort_b1_t{th}"], e.get(f"torch_b1_t{th}")
            cells += [f"{o['p50_ms']:.3f} / {o['p99_ms']:.3f}", f"{p['p50_ms']:.3f} / {p['p99_ms']:.3f}" if p else "-",
                      f"{e[f'ort_b{b}_t{th}']['samples_per_s']:,.0f}"]
        cells.append(" ".join(f"{k}x{v}" for k, v in sorted(e["optimized_ops"].items(), key=lambda kv: -kv[1])[:6]))
        t.add_row(*cells)
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ffhw.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="an export bundle folder (holds manifest.json)")
    p.add_argument("--batch", type=int, default=256, help="batch size for throughput (default 256)")
    p.add_argument("--iterations", type=int, default=200, help="timed runs at batch 1 (default 200)")
    p.add_argument("--out", help="JSON path (default BUNDLE/bench.json)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    report = bench_bundle(args.bundle, args.batch, args.iterations)
    Console().print(table(report))
    out = Path(args.out or Path(args.bundle) / "bench.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    from .errors import run_cli
    sys.exit(run_cli(main, sys.argv[1:]))
