"""Training benchmark: prints a table and writes JSON. Not a test: numbers depend on the machine.

Measured side by side in one run:
- ffhw's training rate for FC networks, eager and compiled, as a fraction of the machine's matmul rate on the same work: the
  step's own matrix products (captured at ATen's dispatcher during one step, forward and backward)
  replayed alone, i.e. the share of a step spent in matrix products; and, like MFU, the textbook step's
  products (forward of positives and negatives, weight gradient, neutral pass for the head, for every
  layer) replayed alone over the step time. Steps and replays are timed in alternation;
- epoch time and the evaluation share of an epoch (validation over all labels + head; epochs 2 and 3 of three);
- seed-batched vs sequential training: N seeds of a DEPTHxWIDTH network as one seed-batched network vs
  N single networks one after another (N x the median step time of one network), for N = 10 and 30 at
  widths 100 and 1000 (4 layers, batch 100), per layer type, the three step kinds timed in alternation;
- (--sections compile) torch.compile of the step's losses vs eager for standard, spiking and quantized
  networks of several sizes, steps timed in alternation (the measurements behind train.compile = "auto");
- time to 98% MNIST test accuracy with the `quick` preset (test accuracy checked after every epoch,
  outside the timed training; the benchmark is not model selection);
- (--sections deep) the depth study's deepest `full`-grid cell (32x100, 10 seeds, nested prefixes): epoch time,
  eager, compiled and compiled with bf16 autocast, with the seeds' test accuracy, and the epoch's matrix products
  replayed alone (float32; bf16 training products), the floor under it on this machine; with `training`, the two
  figures the study targets name (`targets`: that epoch <= 20 s, a loewex-mnist step <= 1.5x its own products
  replayed alone);
- (--sections device) the figures the GPU targets name, on --device (data resident there): epoch time of a
  4x2000 MNIST network (batch 100 and 512, float32, then TF32 where the device has it) and the
  seed-batched speedup of 30 4x100 networks; on a GPU every timed call ends with a synchronisation.

    python benchmarks/train_bench.py [--sections training,seeds,quick] [--out benchmarks/results/train_bench.json]
    python benchmarks/train_bench.py --sections device --device cuda   # on a GPU
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from bench_tools import (CPU, MatmulReplay, capture_products, interleaved_medians, measure_training, pin_compile,
                         step_runner, textbook_gemms)
from rich.console import Console
from train_bench_report import previous_targets, print_result, write_result

from ffhw import data as data_mod
from ffhw.config import RunConfig, load_preset
from ffhw.files import code_version


def seed_batching(d, layer_types=("standard",), widths=(100, 1000), counts=(10, 30), depth=4, rounds=5, repeats=3,
                  device=CPU):
    """One step of N seeds as one seed-batched network vs N x one network's step, timed in alternation."""
    rows = []
    for layer_type in layer_types:
        for width in widths:
            runners = {}
            for n in (1, *counts):
                cfg = load_preset(layer_type)
                cfg.model.hidden, cfg.train.batch_size, cfg.train.seeds = [width] * depth, 100, n
                cfg.train.compile = "off"  # seed batching alone (compiling is measured in its own section)
                runners[n] = step_runner(cfg, d, device=device)
            medians = interleaved_medians(runners, rounds, repeats)
            single = medians[1]
            for n in counts:
                rows.append({"layer_type": layer_type, "network": f"{depth}x{width}", "seeds": n,
                             "single_step_seconds": single, "sequential_step_seconds": n * single,
                             "batched_step_seconds": medians[n], "speedup": n * single / medians[n]})
    return rows


def device_figures(device: torch.device) -> dict:
    """The figures the GPU targets name, measured on `device` with the data resident there: epoch time of a
    4x2000 MNIST network (standard preset otherwise; median of epochs 2 and 3 of three) at batch 100 and 512,
    float32 and, on CUDA, TF32 and TF32 compiled; and the seed-batched speedup of 30 4x100 networks. A
    variant that fails (e.g. compiling without a working toolchain) is recorded with its error."""
    d = data_mod.load("mnist", None, device)
    cuda = device.type == "cuda"
    variants = [(False, "off"), (True, "off"), (True, "on")] if cuda else [(False, "off")]
    epochs = []
    for batch in (100, 512):
        for tf32, compile_mode in variants:
            cfg = load_preset("standard")
            cfg.model.hidden, cfg.train.batch_size = [2000] * 4, batch
            cfg.train.tf32, cfg.train.compile = tf32, compile_mode
            row = {"network": "4x2000", "batch_size": batch, "tf32": tf32, "compiled": compile_mode == "on"}
            try:
                hook, _ = measure_training(cfg, d, epochs=3, device=device)
                later = hook.epochs[1:]
                row["epoch_seconds"] = statistics.median(e["train_seconds"] for e in later)
                row["eval_seconds"] = statistics.median(e["eval_seconds"] for e in later)
            except Exception as exc:  # noqa: BLE001 - a benchmark records what failed and goes on
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            epochs.append(row)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # seeds: float32
    seeds = seed_batching(d, ("standard",), (100,), (30,), rounds=5, repeats=20 if cuda else 3, device=device)
    name = torch.cuda.get_device_name(device) if cuda else f"{platform.processor() or platform.machine()} CPU"
    return {"device": str(device), "device_name": name, "epochs": epochs, "seed_batching": seeds}


def deep_compile(d, depth: int = 32, seeds: int = 10, epochs: int = 2) -> dict:
    """The depth study's deepest cell of its `full` grid (32x100, 10 seeds, batch 100, the full training split,
    the study's own training and evaluation, nested prefixes): epoch times eager, compiled, and compiled with
    bf16 autocast (the last of `epochs` epochs: the first compiles), what the compiled runs recompiled, and
    the seeds' test accuracy after `epochs` epochs (mixed precision must not cost accuracy to count)."""
    from torch._dynamo.utils import counters
    from ffhw.study import Study
    study = Study.load("depth-correlation", "full", "standard")
    out = {"config": f"depth study, full grid: {depth}x100, batch 100, {seeds} seeds, {len(d.train)} training images",
           "epochs": epochs}
    for name, mode, autocast in (("eager", "off", "none"), ("compiled", "on", "none"), ("compiled_bf16", "on", "bf16")):
        cfg = study.config_for({"depth": depth, "width": 100})
        cfg.train.seeds, cfg.train.compile, cfg.train.autocast = seeds, mode, autocast
        counters.clear()
        t = time.perf_counter()
        hook, summary = measure_training(cfg, d, epochs=epochs)
        last = hook.epochs[-1]
        acc = summary["test_acc_goodness"]
        out[name] = {
            "train_seconds": last["train_seconds"], "eval_seconds": last["eval_seconds"],
            "epoch_seconds": last["train_seconds"] + last["eval_seconds"],
            "first_epoch_train_seconds": hook.epochs[0]["train_seconds"], "wall_seconds": time.perf_counter() - t,
            "compiled_frames": counters["frames"].get("total", 0), "graph_breaks": sum(counters["graph_break"].values()),
            "test_acc_goodness_mean": acc["mean"], "test_acc_goodness_std": acc.get("std")}
    out["products"] = epoch_products(study.config_for({"depth": depth, "width": 100}), d, seeds)
    out["speedup"] = out["eager"]["epoch_seconds"] / out["compiled"]["epoch_seconds"]
    out["bf16_speedup"] = out["compiled"]["epoch_seconds"] / out["compiled_bf16"]["epoch_seconds"]
    return out


def epoch_products(cfg: RunConfig, d, seeds: int, rounds: int = 5) -> dict:
    """An epoch's matrix products alone, the floor under its time on this machine: one training step's
    products (captured eager, forward and backward) x the epoch's steps, plus one evaluation batch's x the
    validation's batches, replayed in float32 and with bf16 operands (what bf16 autocast runs in training;
    evaluation stays float32), timed in alternation."""
    cfg.train.seeds, cfg.train.compile = seeds, "off"
    step = step_runner(cfg, d, warmup=1)
    trainer = step.trainer
    batch = trainer.eval_batch_images()
    train_calls = capture_products(step)
    eval_calls = capture_products(lambda: trainer.model.evaluate_batch(d.val.images(slice(0, batch)), cfg.train.head,
                                                                       prefixes=True))
    steps, batches = math.ceil(len(d.train) / cfg.train.batch_size), math.ceil(len(d.val) / batch)
    replays = {"train_float32": MatmulReplay(train_calls), "train_bf16": MatmulReplay(train_calls, torch.bfloat16),
               "eval_float32": MatmulReplay(eval_calls)}
    med = interleaved_medians(replays, rounds=rounds, repeats=3)
    train32, train16, eval32 = steps * med["train_float32"], steps * med["train_bf16"], batches * med["eval_float32"]
    return {"train_step_products": len(train_calls), "train_step_gflop": replays["train_float32"].flops / 1e9,
            "eval_batch_products": len(eval_calls), "eval_batch_gflop": replays["eval_float32"].flops / 1e9,
            "steps": steps, "eval_batches": batches, "eval_batch_images": batch,
            "train_seconds_float32": train32, "train_seconds_bf16": train16, "eval_seconds_float32": eval32,
            "epoch_seconds_float32": train32 + eval32, "epoch_seconds_bf16_training": train16 + eval32}



def training_rows(d) -> list[dict]:
    """FC 3x1000 at batch 512 and the presets' own shapes, each eager and compiled. The training rate is the
    FLOPs of a step over its median time. References, timed in alternation with both steps: the step's own
    matrix products (captured at the dispatcher) replayed alone, and the textbook step's products replayed
    alone. Epoch and evaluation times come from three epochs of each mode."""
    rows = []
    for label, preset, hidden, batch in (("3x1000, batch 512", "quick", [1000, 1000, 1000], 512),
                                         ("quick (2x1000, batch 100)", "quick", None, None),
                                         ("loewex-mnist (3x1000, batch 100)", "loewex-mnist", None, None)):
        cfg = load_preset(preset)
        if hidden:
            cfg.model.hidden, cfg.train.batch_size = hidden, batch
        b = cfg.train.batch_size
        auto = pin_compile(copy.deepcopy(cfg), d).train.compile  # what train.compile = "auto" runs the full preset as
        modes = {}
        for mode in ("off", "on"):
            modes[mode] = copy.deepcopy(cfg)
            modes[mode].train.compile = mode
        steps = {mode: step_runner(c, d) for mode, c in modes.items()}
        executed = MatmulReplay(capture_products(step_runner(modes["off"], d, warmup=1)))  # eager: same products
        textbook = MatmulReplay.textbook(textbook_gemms(cfg, 784, b))
        medians = interleaved_medians({**steps, "executed": executed, "textbook": textbook}, rounds=10,
                                      repeats=max(3, 1500 // b))
        for mode, mode_cfg in modes.items():
            hook, _ = measure_training(mode_cfg, d, epochs=3)
            later = hook.epochs[1:]  # the first epoch also compiles (when compiled) and warms the allocator
            epoch_s = statistics.median(e["train_seconds"] for e in later)
            eval_s = statistics.median(e["eval_seconds"] for e in later)
            step_s = medians[mode]
            rows.append({"config": label, "hidden": cfg.model.hidden, "batch_size": b, "compiled": mode == "on",
                         "auto_compiles": auto == "on",
                         "epoch_seconds": epoch_s, "eval_seconds": eval_s, "eval_share": eval_s / (epoch_s + eval_s),
                         "step_seconds": step_s,
                         "executed_products": len(executed.calls), "executed_gflop": executed.flops / 1e9,
                         "executed_matmul_seconds": medians["executed"],
                         "train_gflops": executed.flops / step_s / 1e9,
                         "matmul_gflops": executed.flops / medians["executed"] / 1e9,
                         "fraction_of_matmul": medians["executed"] / step_s,
                         "textbook_gflop": textbook.flops / 1e9, "textbook_matmul_seconds": medians["textbook"],
                         "textbook_train_gflops": textbook.flops / step_s / 1e9,
                         "textbook_fraction": medians["textbook"] / step_s})
    return rows


def loewex_target(rows: list[dict], code: dict) -> dict:
    """The issue's target: a loeweX step, compiled as `auto` runs it, within 1.5x of its own products alone."""
    r = next(r for r in rows if r["config"].startswith("loewex") and r["compiled"] == r["auto_compiles"])
    ratio = r["step_seconds"] / r["executed_matmul_seconds"]
    return {"loewex_step_over_products": {"value": ratio, "target": 1.5, "met": ratio <= 1.5, "code": code}}


def deep_targets(deep: dict, code: dict) -> dict:
    """The issue's target: the 32x100 x 10-seed epoch within 20 s, per precision, with its products' floor."""
    targets = {}
    for key, name, precision, floor in (
            ("depth_32x100_10_seeds_epoch_seconds", "compiled", "float32", "epoch_seconds_float32"),
            ("depth_32x100_10_seeds_epoch_seconds_bf16", "compiled_bf16", "bf16 autocast",
             "epoch_seconds_bf16_training")):
        epoch = deep[name]["epoch_seconds"]
        targets[key] = {"value": epoch, "target": 20.0, "met": epoch <= 20.0, "precision": precision,
                        "products_alone_seconds": deep["products"][floor], "code": code}
    return targets


def compile_rows(d) -> list[dict]:
    """torch.compile of the step's losses vs eager, steps timed in alternation (behind train.compile = auto)."""
    rows = []
    for label, preset, hidden, batch, seeds in (("3x1000, batch 512", "quick", [1000] * 3, 512, 1),
                                                ("2x2000, batch 512", "quick", [2000] * 2, 512, 1),
                                                ("quick (2x1000, batch 100)", "quick", [1000] * 2, 100, 1),
                                                ("4x1000, batch 100, 10 seeds", "standard", [1000] * 4, 100, 10),
                                                ("4x100, batch 100", "standard", [100] * 4, 100, 1),
                                                ("4x100, batch 100, 30 seeds", "standard", [100] * 4, 100, 30),
                                                ("spiking 4x100, batch 100", "spiking", [100] * 4, 100, 1),
                                                ("spiking 2x1000, batch 100", "spiking", [1000] * 2, 100, 1),
                                                ("quantized 4x100, batch 100", "quantized", [100] * 4, 100, 1)):
        runners, setup = {}, {}
        for compiled in (False, True):
            cfg = load_preset(preset)
            cfg.model.hidden, cfg.train.batch_size = hidden, batch
            cfg.train.compile = "on" if compiled else "off"
            cfg.train.seeds = seeds
            t = time.perf_counter()
            runners[compiled] = step_runner(cfg, d)
            setup[compiled] = time.perf_counter() - t
        medians = interleaved_medians(runners, rounds=8, repeats=5)
        rows.append({"config": label, "eager_step_seconds": medians[False], "compiled_step_seconds": medians[True],
                     "speedup": medians[False] / medians[True], "compile_and_warmup_seconds": setup[True]})
    return rows


def quick(d) -> dict:
    """Time to 98% MNIST test accuracy with the `quick` preset (test accuracy checked outside the timing)."""
    cfg = load_preset("quick")
    hook, summary = measure_training(cfg, d, check_test=True, target=0.98)
    return {"epochs": cfg.train.epochs, "per_epoch": hook.epochs, "reached_98": hook.reached,
            "final_test_acc_goodness": summary["test_acc_goodness"]["mean"],
            "final_test_acc_head": summary["test_acc_head"]["mean"], "train_seconds": summary["train_seconds"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="training,seeds,quick",
                   help="comma-separated: training (FLOP/s, eval share), seeds (seed batching), quick (time to 98%%), "
                        "compile (torch.compile vs eager; not in the default), deep (32x100 x 10 seeds epoch, eager, "
                        "compiled, compiled bf16; not in the default), device (the GPU targets' figures on "
                        "--device; not in the default)")
    p.add_argument("--seed-types", default="standard,quantized,spiking", help="layer types of the seed-batching section")
    p.add_argument("--seed-widths", default="100,1000", help="layer widths of the seed-batching section")
    p.add_argument("--device", default="cpu", help="device of the device section (cuda on a GPU)")
    p.add_argument("--out", default="benchmarks/results/train_bench.json")
    args = p.parse_args()
    sections = set(args.sections.split(","))
    d = data_mod.load("mnist", None, "cpu")
    result = {"machine": {"node": platform.node(), "processor": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
              "code": code_version(), "command": " ".join([sys.executable.split("/")[-1], *sys.argv])}
    targets = previous_targets(args.out)
    if "training" in sections:
        result["training"] = training_rows(d)
        targets.update(loewex_target(result["training"], result["code"]))
    if "compile" in sections:
        result["compile"] = compile_rows(d)
    if "deep" in sections:
        result["deep_compile"] = deep_compile(d)  # auto compiles the full grid's 50,000 steps
        targets.update(deep_targets(result["deep_compile"], result["code"]))
    if "training" in sections or "deep" in sections:
        result["targets"] = targets
    if "seeds" in sections:
        result["seed_batching"] = seed_batching(d, tuple(args.seed_types.split(",")),
                                                tuple(int(w) for w in args.seed_widths.split(",")))
    if "quick" in sections:
        result["quick"] = quick(d)
    if "device" in sections:
        result["device"] = device_figures(torch.device(args.device))
    console = Console(width=160)
    print_result(console, result)
    write_result(Path(args.out), result)
    console.print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
