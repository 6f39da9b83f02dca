"""Regenerate the measured tables of HARDWARE.md from the runs of a comparison.

    python benchmarks/hardware_report.py experiments/results/compare-mnist-2x1000

For every variant run (standard, quantized-8, quantized-4, spiking; seed index 0): export a bundle under
export/ with its parity checks (QONNX files executed by qonnx where a layer has a QONNX form, NIR graphs read
back by NIR consumers where the network has a NIR form), benchmark it with onnxruntime and torch eager,
compute the cost model on the full test set and NeuroBench's metrics on 1,000 test images, and write
`<compare dir>/hardware.json` and the block between the markers in HARDWARE.md.
"""
from __future__ import annotations

import argparse
import re
import json
import shutil
import sys
from pathlib import Path

from ffhw import data as data_mod
from ffhw.bench import bench_bundle
from ffhw.compare import collect
from ffhw.deploy_nir import has_nir_form
from ffhw.export import describe_consumer, export_run
from ffhw.hardware import cost_model
from ffhw.model import load_model
from ffhw.neuro_metrics import neurobench_metrics

BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"


def kib(n):
    return f"{n / 1024:,.0f}"


def short(text: str) -> str:
    """A table cell: class reprs as their names, no pipes."""
    return re.sub(r"<class '[\w.]*?(\w+)'>", r"\1", text).replace("|", "/")


def render(compare_dir: Path, entries: list[dict], command: str) -> str:
    first = entries[0]
    bench0 = first["bench"]
    lines = [f"Regenerate with `{command}`. Runs: `{compare_dir}` (MNIST, hidden {first['hidden']}, "
             f"{first['epochs']} epochs, same data order for every type; accuracies are means over the runs' seeds, "
             f"everything else is of the exported seed {first['seed']}). Machine: "
             f"{bench0['machine']['processor'] or 'x86-64'}, {bench0['machine']['cores']} cores; onnxruntime "
             f"{bench0['versions']['onnxruntime']}, torch {bench0['versions']['torch']}.", ""]
    lines += ["### Accuracy and footprint", "",
              "| model | test acc (goodness) | test acc (head) | exported seed: classifier.onnx acc | weights deployed (KiB) | bits w/a | spike rate |",
              "|---|---:|---:|---:|---:|---|---:|"]
    for e in entries:
        bits = e["numbers"]
        rate = f"{e['spike_rate']:.3f}" if e["spike_rate"] is not None else "-"
        lines.append(f"| {e['variant']} | {e['test_acc_goodness']:.4f} | {e['test_acc_head']:.4f} | "
                     f"{e['manifest']['classifier_model']['test_accuracy_onnxruntime']:.4f} | "
                     f"{kib(e['cost']['deployed_weight_bytes'])} | {bits} | {rate} |")
    lines += ["", "### Cost per layer (one pass of one sample; energy is an estimate, memory access excluded)", "",
              "ffhw's cost model, then NeuroBench's definitions (NB, `ffhw/neuro_metrics.py`) on the same deployed "
              "graphs: effective MACs and ACs (non-zero input x non-zero weight), dense synaptic operations, "
              "connection sparsity (zero weights, quantized values for quantized layers).", "",
              "| model | layer | in x out | MACs | non-zero-input MACs | ACs (spikes) | BOPs | membrane updates | "
              "output sparsity | energy (nJ, est.) | NB eff. MACs | NB eff. ACs | NB dense | NB conn. sparsity |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in entries:
        for L, N in zip(e["cost"]["layers"], e["neurobench"]["layers"]):
            bops = f"{L['bops']:,.0f}" if L["bops"] else "-"
            lines.append(f"| {e['variant']} | {L['layer']} | {L['in']} x {L['out']} | {L['macs']:,} | "
                         f"{L['nonzero_macs']:,.0f} | {L['acs']:,.0f} | {bops} | {L['neuron_updates']:,} | "
                         f"{L['output_sparsity']:.3f} | {L['energy_pj_estimate'] / 1000:,.1f} | "
                         f"{N['effective_macs']:,.0f} | {N['effective_acs']:,.0f} | {N['dense_synops']:,.0f} | "
                         f"{N['connection_sparsity']:.3f} |")
    lines += ["", "NeuroBench, whole network per pass (1,000 test images x every label): "
              + "; ".join(f"{e['variant']}: footprint {kib(e['neurobench']['footprint_bytes'])} KiB (deployed "
                          f"{kib(e['cost']['deployed_weight_bytes'])}), activation sparsity "
                          f"{e['neurobench']['activation_sparsity']:.3f}" for e in entries) + "."]
    lines += ["", "Energy per classification (estimate, arithmetic only): "
              + "; ".join(f"{e['variant']} {e['cost']['energy_per_classification_pj_estimate']['goodness'] / 1e6:,.2f} uJ "
                          f"(goodness classifier, {e['cost']['energy_per_classification_pj_estimate']['head'] / 1e6:,.2f} uJ "
                          f"with the head)" for e in entries) + ".", ""]
    lines += ["### Deployment checks (seed 0; every file run by its consumer on real test images)", "",
              "| model | ONNX (onnxruntime) per layer, worst | QONNX (qonnx executor), worst | NIR network: snnTorch importer | "
              "NIR network: nirtorch executor |", "|---|---|---|---|---|"]
    for e in entries:
        m = e["manifest"]
        worst = max(m["layers"], key=lambda L: L["parity"]["value"])["parity"]
        q = [L["qonnx_parity"] for L in m["layers"] if "qonnx_parity" in L]
        qtext = f"{max(p['value'] for p in q):.3g} {q[0]['metric'].replace('max abs error in ', '')}" if q else "-"
        nir = m.get("nir", {}).get("network", {}).get("consumers", {})
        cells = [short(f"{worst['value']:.3g} ({worst['metric']})"), qtext,
                 *(short(describe_consumer(nir[c])) if nir else "-" for c in ("snntorch", "nirtorch"))]
        lines.append(f"| {e['variant']} | " + " | ".join(cells) + " |")
    lines.append("")
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
    p.add_argument("--variants", default="standard,quantized-8,quantized-4,spiking",
                   help="comma-separated variants of the comparison to report (default: the four types)")
    args = p.parse_args()
    compare_dir = Path(args.compare_dir)
    wanted = args.variants.split(",")
    entries = sorted((e for e in collect(compare_dir) if e["variant"] in wanted), key=lambda e: wanted.index(e["variant"]))
    d = data_mod.load("mnist", None, "cpu")
    for e in entries:
        run = compare_dir / e["variant"]
        name = f"{compare_dir.name}-{e['variant']}"
        shutil.rmtree(Path(args.export_root) / name, ignore_errors=True)
        model, _ = load_model(run)
        bundle = export_run(run, args.export_root, name=name, qonnx=True, nir=has_nir_form(model))
        e["manifest"] = json.loads((bundle / "manifest.json").read_text())
        e["bench"] = bench_bundle(bundle)
        e["cost"] = cost_model(model, d.test.images(slice(None)))
        e["neurobench"] = neurobench_metrics(model, d.test.images(slice(0, 1000)))
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
