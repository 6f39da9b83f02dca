"""The training benchmark's output: a table per section measured, and the JSON file that keeps every section's
last numbers with the code and command that made them."""
from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

SECTIONS = ("training", "compile", "seed_batching", "quick", "device", "deep_compile", "targets")  # result keys


def table(title: str, columns: tuple[str, ...], rows: list[tuple]) -> Table:
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, justify="right")
    for row in rows:
        t.add_row(*row)
    return t


def print_training(console: Console, rows: list[dict]) -> None:
    console.print(table(
        "ffhw training benchmark (CPU): step time against its matrix products alone",
        ("config", "compiled", "epoch s", "eval s", "eval share", "step ms", "executed products ms", "fraction",
         "textbook products ms", "textbook fraction"),
        [(r["config"], ("yes" if r["compiled"] else "no") + (" (auto)" if r["compiled"] == r["auto_compiles"] else ""),
          f"{r['epoch_seconds']:.2f}", f"{r['eval_seconds']:.2f}", f"{r['eval_share']:.1%}",
          f"{1e3 * r['step_seconds']:.1f}", f"{1e3 * r['executed_matmul_seconds']:.1f}",
          f"{r['fraction_of_matmul']:.1%}", f"{1e3 * r['textbook_matmul_seconds']:.1f}", f"{r['textbook_fraction']:.1%}")
         for r in rows]))


def print_compile(console: Console, rows: list[dict]) -> None:
    console.print(table(
        "torch.compile (train.compile) vs eager: median training step",
        ("config", "eager (ms)", "compiled (ms)", "speedup", "compile + warm-up (s)"),
        [(r["config"], f"{1e3 * r['eager_step_seconds']:.1f}", f"{1e3 * r['compiled_step_seconds']:.1f}",
          f"{r['speedup']:.2f}x", f"{r['compile_and_warmup_seconds']:.0f}") for r in rows]))


def print_deep(console: Console, r: dict) -> None:
    rows = []
    for mode in ("eager", "compiled", "compiled_bf16"):
        m = r.get(mode)
        if m is None:  # a record from before the bf16 row
            continue
        acc = (f"{m['test_acc_goodness_mean']:.4f} +/- {m['test_acc_goodness_std'] or 0:.4f}"
               if "test_acc_goodness_mean" in m else "")
        rows.append((mode, f"{m['train_seconds']:.1f}", f"{m['eval_seconds']:.1f}", f"{m['epoch_seconds']:.1f}",
                     str(m["compiled_frames"]), str(m["graph_breaks"]), acc))
    console.print(table(f"deep narrow epoch ({r['config']}), epoch {r['epochs']}",
                        ("mode", "training s", "evaluation s", "epoch s", "compiled frames", "graph breaks", "test acc"),
                        rows))
    console.print(f"compiled / eager epoch: {r['speedup']:.2f}x; "
                  f"bf16 / float32 compiled: {r.get('bf16_speedup', 0):.2f}x")
    if "products" in r:
        p = r["products"]
        console.print(f"its matrix products alone (the floor on this machine): float32 {p['train_seconds_float32']:.1f} s "
                      f"training + {p['eval_seconds_float32']:.1f} s evaluation = {p['epoch_seconds_float32']:.1f} s; "
                      f"bf16 training {p['train_seconds_bf16']:.1f} s + float32 evaluation = "
                      f"{p['epoch_seconds_bf16_training']:.1f} s")


def print_seed_batching(console: Console, rows: list[dict]) -> None:
    console.print(table(
        "seed-batched vs sequential (one training step of all seeds, batch 100)",
        ("layer type", "network", "seeds", "one network (ms)", "sequential (ms)", "batched (ms)", "speedup"),
        [(r["layer_type"], r["network"], str(r["seeds"]), f"{1e3 * r['single_step_seconds']:.1f}",
          f"{1e3 * r['sequential_step_seconds']:.0f}", f"{1e3 * r['batched_step_seconds']:.0f}", f"{r['speedup']:.2f}x")
         for r in rows]))


def print_device(console: Console, dev: dict) -> None:
    console.print(table(
        f"on {dev['device_name']}: 4x2000 MNIST epochs, 30 seeds of 4x100",
        ("network", "batch", "tf32", "compiled", "epoch s", "validation s", "note"),
        [(r["network"], str(r["batch_size"]), "yes" if r["tf32"] else "no", "yes" if r["compiled"] else "no",
          f"{r['epoch_seconds']:.2f}" if r.get("epoch_seconds") else "-",
          f"{r['eval_seconds']:.2f}" if r.get("eval_seconds") else "-", r.get("error", "")) for r in dev["epochs"]]))
    for r in dev["seed_batching"]:
        console.print(f"{r['seeds']} seeds of {r['network']}: sequential {1e3 * r['sequential_step_seconds']:.1f} ms, "
                      f"batched {1e3 * r['batched_step_seconds']:.1f} ms per step: {r['speedup']:.2f}x")


def print_quick(console: Console, q: dict) -> None:
    reached = q["reached_98"]
    console.print(f"quick: final test accuracy {q['final_test_acc_goodness']:.4f} (goodness), "
                  f"{q['final_test_acc_head']:.4f} (head) after {q['epochs']} epochs, {q['train_seconds']:.0f} s training; "
                  + (f"98% reached at epoch {reached['epoch']} after {reached['train_seconds']:.0f} s training "
                     f"({reached['wall_seconds_incl_validation']:.0f} s wall with validation)" if reached
                     else "98% not reached"))


def print_result(console: Console, result: dict) -> None:
    """Each measured section's table, in the order a reader wants them: step rates first, then what they add to."""
    if result.get("training"):
        print_training(console, result["training"])
    if "compile" in result:
        print_compile(console, result["compile"])
    if "deep_compile" in result:
        print_deep(console, result["deep_compile"])
    for name, t in result.get("targets", {}).items():
        console.print(f"target {name}: {t['value']:.2f} (target {t['target']}): {'met' if t['met'] else 'missed'}")
    if "seed_batching" in result:
        print_seed_batching(console, result["seed_batching"])
    if "device" in result:
        print_device(console, result["device"])
    if "quick" in result:
        print_quick(console, result["quick"])


def previous_targets(path: str) -> dict:
    """The target figures already recorded (a run of one section keeps the other's)."""
    p = Path(path)
    return json.loads(p.read_text()).get("targets", {}) if p.exists() else {}


def write_result(out: Path, result: dict) -> None:
    """Merge this run's sections into the file: sections not run keep their last numbers, and `provenance` says
    which code and command made each section."""
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous = {k: v for k, v in previous.items() if k in SECTIONS + ("provenance",)}  # drop keys of old layouts
    if "seed_batching" in result:  # rows of layer types not run this time are kept, with their provenance
        run_types = {r["layer_type"] for r in result["seed_batching"]}
        kept = [r for r in previous.get("seed_batching", []) if r["layer_type"] not in run_types]
        for r in kept:
            r.setdefault("provenance", previous.get("provenance", {}).get("seed_batching"))
        result["seed_batching"] = kept + result["seed_batching"]
    made_by = {"code": result["code"], "command": result["command"], "machine": result["machine"],
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    provenance = {**previous.get("provenance", {}), **{key: made_by for key in SECTIONS if key in result}}
    out.write_text(json.dumps({**previous, **result, "provenance": provenance}, indent=2) + "\n")
