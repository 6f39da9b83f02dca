"""Regenerate the measured tables of HARDWARE.md from the runs of a comparison.

    python benchmarks/hardware_report.py experiments/results/compare-mnist-2x1000

For every variant run (standard, quantized-8, quantized-4, spiking): export a bundle under export/ (with
its parity checks), benchmark it with onnxruntime and torch eager, compute the cost model on the full
test set, and write `<compare dir>/hardware.json` and the block between the markers in HARDWARE.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from ffhw import data as data_mod
from ffhw.bench import bench_bundle
from ffhw.compare import collect
from ffhw.export import export_run
from ffhw.hardware import cost_model
from ffhw.model import load_model

BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"


def kib(n):
    return f"{n / 1024:,.0f}"


def render(compare_dir: Path, entries: list[dict], command: str) -> str:
    first = entries[0]
    bench0 = first["bench"]
    lines = [f"Regenerate with `{command}`. Runs: `{compare_dir}` (MNIST, hidden {first['hidden']}, "
             f"{first['epochs']} epochs, seed {first['seed']}, same data order for every type). Machine: "
             f"{bench0['machine']['processor'] or 'x86-64'}, {bench0['machine']['cores']} cores; onnxruntime "
             f"{bench0['versions']['onnxruntime']}, torch {bench0['versions']['torch']}.", ""]
    lines += ["### Accuracy and footprint", "",
              "| model | test acc (goodness) | test acc (head) | weights deployed (KiB) | bits w/a | spike rate |",
              "|---|---:|---:|---:|---|---:|"]
    for e in entries:
        bits = e["numbers"]
        rate = f"{e['spike_rate']:.3f}" if e["spike_rate"] is not None else "-"
        lines.append(f"| {e['variant']} | {e['test_acc_goodness']:.4f} | {e['test_acc_head']:.4f} | "
                     f"{kib(e['cost']['deployed_weight_bytes'])} | {bits} | {rate} |")
    lines += ["", "### Cost per layer (one pass of one sample; energy is an estimate, memory access excluded)", "",
              "| model | layer | in x out | MACs | non-zero-input MACs | ACs (spikes) | BOPs | membrane updates | "
              "output sparsity | energy (nJ, est.) |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for e in entries:
        for L in e["cost"]["layers"]:
            bops = f"{L['bops']:,.0f}" if L["bops"] else "-"
            lines.append(f"| {e['variant']} | {L['layer']} | {L['in']} x {L['out']} | {L['macs']:,} | "
                         f"{L['nonzero_macs']:,.0f} | {L['acs']:,.0f} | {bops} | {L['neuron_updates']:,} | "
                         f"{L['output_sparsity']:.3f} | {L['energy_pj_estimate'] / 1000:,.1f} |")
    lines += ["", "Energy per classification (estimate, arithmetic only): "
              + "; ".join(f"{e['variant']} {e['cost']['energy_per_classification_pj_estimate']['goodness'] / 1e6:,.2f} uJ "
                          f"(goodness classifier, {e['cost']['energy_per_classification_pj_estimate']['head'] / 1e6:,.2f} uJ "
                          f"with the head)" for e in entries) + ".", ""]
    threads = bench0["threads"]
    lines += [f"### Latency (onnxruntime vs torch eager, p50 ms at batch 1; throughput at batch {bench0['batch']})", "",
              "| model | file | KiB | " + " | ".join(f"ort {t}t | torch {t}t | ort/torch {t}t" for t in threads)
              + f" | ort samples/s ({threads[-1]}t) |",
              "|---|---|---:|" + "---:|" * (3 * len(threads) + 1)]
    for e in entries:
        for r in e["bench"]["results"]:
            cells = []
            for t in threads:
                o, p = r[f"ort_b1_t{t}"]["p50_ms"], r.get(f"torch_b1_t{t}", {}).get("p50_ms")
                cells += [f"{o:.3f}", f"{p:.3f}" if p else "-", f"{o / p:.2f}" if p else "-"]
            throughput = r[f"ort_b{bench0['batch']}_t{threads[-1]}"]["samples_per_s"]
            lines.append(f"| {e['variant']} | {r['model']} | {kib(r['bytes'])} | " + " | ".join(cells)
                         + f" | {throughput:,.0f} |")
    # the two targets, stated from the numbers above
    std = next(e for e in entries if e["layer_type"] == "standard")
    q8 = next((e for e in entries if e["variant"] == "quantized-8"), None)
    lines += ["", "### Targets", ""]
    if q8:
        for i, (rs, rq) in enumerate(zip(std["bench"]["results"], q8["bench"]["results"])):
            if rs["model"].startswith("layer") and q8["cost"]["layers"][i]["out"] >= 1000:
                ratio = rq["ort_b1_t1"]["p50_ms"] / rs["ort_b1_t1"]["p50_ms"]
                lines.append(f"- 8-bit {rq['model']} (width {q8['cost']['layers'][i]['out']}) at batch 1, 1 thread: "
                             f"{rq['ort_b1_t1']['p50_ms']:.3f} ms vs float {rs['ort_b1_t1']['p50_ms']:.3f} ms = "
                             f"**{ratio:.2f}x** (target <= 0.6x: {'met' if ratio <= 0.6 else 'missed'}).")
    for r in std["bench"]["results"]:
        o, p = r["ort_b1_t1"]["p50_ms"], r["torch_b1_t1"]["p50_ms"]
        lines.append(f"- float {r['model']} at batch 1, 1 thread: onnxruntime {o:.3f} ms vs torch eager {p:.3f} ms "
                     f"({'met' if o <= p else 'missed'}: onnxruntime <= torch).")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("compare_dir")
    p.add_argument("--export-root", default="export")
    p.add_argument("--hardware-md", default="HARDWARE.md")
    args = p.parse_args()
    compare_dir = Path(args.compare_dir)
    entries = collect(compare_dir)
    d = data_mod.load("mnist", None, "cpu")
    for e in entries:
        run = compare_dir / e["variant"]
        name = f"{compare_dir.name}-{e['variant']}"
        shutil.rmtree(Path(args.export_root) / name, ignore_errors=True)
        bundle = export_run(run, args.export_root, name=name)
        e["bench"] = bench_bundle(bundle)
        model, _ = load_model(run)
        e["cost"] = cost_model(model, d.test.images(slice(None)))
        print(f"{e['variant']}: exported, benchmarked, costed")
    (compare_dir / "hardware.json").write_text(json.dumps(entries, indent=2) + "\n")
    command = "python benchmarks/hardware_report.py " + str(compare_dir)
    block = render(compare_dir, entries, command)
    md = Path(args.hardware_md)
    text = md.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    md.write_text(text[:start] + "\n" + block + "\n" + text[end:])
    print(f"updated {md} and {compare_dir / 'hardware.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
