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
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from ffhw import data as data_mod
from ffhw.config import RunConfig, load_preset
from ffhw.model import FFNet
from ffhw.files import code_version
from ffhw.device import synchronize, use_compile
from ffhw.train import Trainer


def textbook_gemms(cfg: RunConfig, in_dim: int, batch: int) -> list[tuple[int, int, int, bool]]:
    """The matrix products of a textbook FC FF training step, as (rows, inner, cols, transposed-left): per
    layer the forward of positives and negatives, the weight gradient (x^T @ dz) and the neutral forward
    for the linear head. Their FLOPs are the step's nominal work (like a model's FLOPs in MFU), whatever
    the implementation saves (ffhw projects each image once in layer 0: fewer executed FLOPs)."""
    dims = [in_dim, *cfg.model.hidden]
    gemms = []
    for i, o in zip(dims, dims[1:]):
        gemms += [(2 * batch, i, o, False), (i, 2 * batch, o, True)]
        if cfg.train.head:
            gemms.append((batch, i, o, False))
    return gemms


def strided_randn(shape: tuple, stride: tuple, dtype: torch.dtype) -> torch.Tensor:
    """Random values laid out with the given strides (a stride of 0, an expanded operand, included)."""
    storage = 1 + sum((n - 1) * st for n, st in zip(shape, stride) if n)
    return torch.as_strided(torch.randn(storage).to(dtype), shape, stride)


class MatmulReplay:
    """Matrix products alone (fresh random operands of the same shapes and strides, fp32 unless `dtype`), run in order:
    what the machine's matmul units deliver on exactly this work, with nothing else in between."""

    def __init__(self, calls: list[tuple], dtype: torch.dtype = torch.float32):
        self.calls = calls  # (op, [(shape, stride)...], kwargs)
        self.ops = []
        for op, operands, kwargs in calls:
            tensors = [strided_randn(shape, stride, dtype) for shape, stride in operands]
            self.ops.append((op, tensors, kwargs))

    @classmethod
    def textbook(cls, gemms):
        calls = []
        for m, k, n, transposed in gemms:
            left = ((1, m, k), (m * k, 1, m)) if transposed else ((1, m, k), (m * k, k, 1))
            calls.append((torch.ops.aten.bmm.default, [left, ((1, k, n), (k * n, n, 1))], {}))
        return cls(calls)

    @property
    def flops(self) -> float:
        return sum(product_flops(op, [shape for shape, _ in operands]) for op, operands, _ in self.calls)

    def __call__(self):
        for op, tensors, kwargs in self.ops:
            op(*tensors, **kwargs)


MATMUL_OPS = {"bmm", "mm", "baddbmm", "addmm"}
SECTIONS = ("training", "compile", "seed_batching", "quick", "device", "deep_compile", "targets")  # result keys, each with its provenance


def product_flops(op, shapes) -> float:
    """2 x rows x inner x cols (x batch) of one captured product."""
    a, b = shapes[-2:]  # addmm/baddbmm: (bias, left, right)
    return 2.0 * math.prod(a) * b[-1]


def capture_products(step) -> list[tuple]:
    """The matrix products one call of `step` runs (op, operand shapes and strides, scalar arguments), seen at
    ATen's dispatcher, so the list is what the step executes, forward and backward."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = []

    class Capture(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in MATMUL_OPS and func._overloadname == "default":
                operands = [(tuple(t.shape), tuple(t.stride())) for t in args if isinstance(t, torch.Tensor)]
                calls.append((func, operands, dict(kwargs or {})))
            return func(*args, **(kwargs or {}))

    with Capture():
        step()
    return calls


class Timer:
    """UI hook: records per-epoch times and, optionally, test accuracy after each epoch."""

    def __init__(self, trainer_ref, check_test=False, target=None):
        self.trainer_ref, self.check_test, self.target = trainer_ref, check_test, target
        self.epochs, self.reached = [], None

    def start(self, *a):
        self.t0 = time.perf_counter()
        self.train_total = 0.0

    def batch(self):
        pass

    def epoch(self, epoch, rows, epoch_seconds, eval_seconds):
        self.train_total += epoch_seconds
        entry = {"epoch": epoch, "train_seconds": epoch_seconds, "eval_seconds": eval_seconds}
        if self.check_test:
            trainer = self.trainer_ref[0]
            test = trainer.evaluate("test", trainer.data.test)
            entry["test_acc_goodness"] = test["net/acc_goodness"].mean().item()
            entry["test_acc_head"] = test["net/acc_head"].mean().item()
            best = max(entry["test_acc_goodness"], entry["test_acc_head"])
            if self.reached is None and self.target and best >= self.target:
                self.reached = {"epoch": epoch, "train_seconds": self.train_total,
                                "wall_seconds_incl_validation": time.perf_counter() - self.t0}
        self.epochs.append(entry)

    def done(self, *a):
        pass


CPU = torch.device("cpu")


def synchronizer(device: torch.device):
    """What a timed call must end with on this device: an accelerator runs kernels asynchronously."""
    return lambda: synchronize(device)


def measure_training(cfg: RunConfig, d, epochs: int | None = None, check_test=False, target=None, device=CPU):
    if epochs:
        cfg.train.epochs = epochs
    model = FFNet(cfg, d.image_shape, d.num_classes).to(device)
    ref = []
    hook = Timer(ref, check_test, target)
    trainer = Trainer(cfg, d, model, device, None, hook)
    ref.append(trainer)
    summary = trainer.fit()
    return hook, summary


def step_runner(cfg: RunConfig, d, warmup: int = 3, device=CPU):
    """A callable that runs the next training step (all seeds of cfg) on real data (on `device`, where `d`
    must live) and waits for it to finish; `.trainer` is its Trainer."""
    from ffhw.metrics import LAYER_METRICS
    model = FFNet(cfg, d.image_shape, d.num_classes).to(device)
    trainer = Trainer(cfg, d, model, device)
    order, negatives = trainer.epoch_plan(0)
    n_layers, s = len(model.layers), model.seeds
    sums = {k: torch.zeros(n_layers, s, device=device) for k in (*LAYER_METRICS, "seen")}
    sums["head_loss"], sums["head_acc"] = torch.zeros(s, device=device), torch.zeros(s, device=device)
    sync = synchronizer(device)
    bs, layers, steps_per_epoch = cfg.train.batch_size, range(n_layers), order.shape[1] // cfg.train.batch_size
    count = [0]

    def step():
        b = count[0] % steps_per_epoch
        trainer.train_step(order[:, b * bs:(b + 1) * bs], negatives, layers, sums, count[0])
        count[0] += 1
        sync()

    for _ in range(warmup):
        step()
    step.trainer = trainer
    return step


def pin_compile(cfg: RunConfig, d) -> RunConfig:
    """Fix train.compile to what `auto` chooses for the full run of cfg, so that shorter measurements of it
    (a few steps, two epochs) run the way the full run does."""
    cfg.train.compile = "on" if use_compile(cfg, FFNet(cfg, d.image_shape, d.num_classes), torch.device("cpu"),
                                            len(d.train)) else "off"
    return cfg


def interleaved_medians(fns: dict, rounds: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, measured in alternating rounds so that a machine whose
    speed drifts (shared, noisy) slows all of them alike."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


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


def previous_targets(path: str) -> dict:
    """The target figures already recorded (a run of one section keeps the other's)."""
    p = Path(path)
    return json.loads(p.read_text()).get("targets", {}) if p.exists() else {}


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
    console = Console(width=160)
    d = data_mod.load("mnist", None, "cpu")
    result = {"machine": {"node": platform.node(), "processor": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
              "code": code_version(), "command": " ".join([sys.executable.split("/")[-1], *sys.argv])}

    sections = set(args.sections.split(","))
    rows = []
    # FC 3x1000 at batch 512 and the quick preset's own shape, each eager and compiled. The training rate is
    # the FLOPs of a step over its median time. References, timed in alternation with both steps: the
    # step's own matrix products (captured at the dispatcher) replayed alone, and the textbook step's
    # products replayed alone. Epoch and evaluation times come from three epochs of each mode.
    for label, preset, hidden, batch in (("3x1000, batch 512", "quick", [1000, 1000, 1000], 512),
                                         ("quick (2x1000, batch 100)", "quick", None, None),
                                         ("loewex-mnist (3x1000, batch 100)", "loewex-mnist", None, None))\
            if "training" in sections else ():
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
    if rows:
        result["training"] = rows
        compiled_like_auto = [r for r in rows if r["config"].startswith("loewex") and r["compiled"] == r["auto_compiles"]]
        if compiled_like_auto:  # issue target: a loeweX step within 1.5x of its own products replayed alone
            r = compiled_like_auto[0]
            result["targets"] = {**previous_targets(args.out), "loewex_step_over_products": {
                "value": r["step_seconds"] / r["executed_matmul_seconds"], "target": 1.5,
                "met": r["step_seconds"] / r["executed_matmul_seconds"] <= 1.5, "code": result["code"]}}
    if "compile" in sections:  # torch.compile of the step's losses vs eager, steps timed in alternation
        result["compile"] = []
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
            result["compile"].append({"config": label, "eager_step_seconds": medians[False],
                                      "compiled_step_seconds": medians[True], "speedup": medians[False] / medians[True],
                                      "compile_and_warmup_seconds": setup[True]})
    if "deep" in sections:
        result["deep_compile"] = deep_compile(d)
        deep = result["deep_compile"]  # auto compiles the full grid's 50,000 steps; fp32 unless autocast is set
        targets = {**result.get("targets", previous_targets(args.out))}
        for key, name, precision, floor in (
                ("depth_32x100_10_seeds_epoch_seconds", "compiled", "float32", "epoch_seconds_float32"),
                ("depth_32x100_10_seeds_epoch_seconds_bf16", "compiled_bf16", "bf16 autocast", "epoch_seconds_bf16_training")):
            epoch = deep[name]["epoch_seconds"]
            targets[key] = {"value": epoch, "target": 20.0, "met": epoch <= 20.0, "precision": precision,
                            "products_alone_seconds": deep["products"][floor], "code": result["code"]}
        result["targets"] = targets
    if "seeds" in sections:
        result["seed_batching"] = seed_batching(d, tuple(args.seed_types.split(",")),
                                                tuple(int(w) for w in args.seed_widths.split(",")))

    if "quick" in sections:
        cfg = load_preset("quick")
        hook, summary = measure_training(cfg, d, check_test=True, target=0.98)
        result["quick"] = {"epochs": cfg.train.epochs, "per_epoch": hook.epochs, "reached_98": hook.reached,
                           "final_test_acc_goodness": summary["test_acc_goodness"]["mean"],
                           "final_test_acc_head": summary["test_acc_head"]["mean"],
                           "train_seconds": summary["train_seconds"]}

    if "device" in sections:
        result["device"] = device_figures(torch.device(args.device))

    table = Table(title="ffhw training benchmark (CPU): step time against its matrix products alone",
                  title_justify="left")
    for col in ("config", "compiled", "epoch s", "eval s", "eval share", "step ms", "executed products ms", "fraction",
                "textbook products ms", "textbook fraction"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["config"], ("yes" if r["compiled"] else "no") + (" (auto)" if r["compiled"] == r["auto_compiles"] else ""), f"{r['epoch_seconds']:.2f}", f"{r['eval_seconds']:.2f}", f"{r['eval_share']:.1%}",
                      f"{1e3 * r['step_seconds']:.1f}", f"{1e3 * r['executed_matmul_seconds']:.1f}",
                      f"{r['fraction_of_matmul']:.1%}", f"{1e3 * r['textbook_matmul_seconds']:.1f}",
                      f"{r['textbook_fraction']:.1%}")
    if rows:
        console.print(table)
    if "compile" in result:
        t3 = Table(title="torch.compile (train.compile) vs eager: median training step", title_justify="left")
        for col in ("config", "eager (ms)", "compiled (ms)", "speedup", "compile + warm-up (s)"):
            t3.add_column(col, justify="right")
        for r in result["compile"]:
            t3.add_row(r["config"], f"{1e3 * r['eager_step_seconds']:.1f}", f"{1e3 * r['compiled_step_seconds']:.1f}",
                       f"{r['speedup']:.2f}x", f"{r['compile_and_warmup_seconds']:.0f}")
        console.print(t3)
    if "deep_compile" in result:
        r = result["deep_compile"]
        t5 = Table(title=f"deep narrow epoch ({r['config']}), epoch {r['epochs']}", title_justify="left")
        for col in ("mode", "training s", "evaluation s", "epoch s", "compiled frames", "graph breaks", "test acc"):
            t5.add_column(col, justify="right")
        for mode in ("eager", "compiled", "compiled_bf16"):
            m = r.get(mode)
            if m is None:  # a record from before the bf16 row
                continue
            acc = (f"{m['test_acc_goodness_mean']:.4f} +/- {m['test_acc_goodness_std'] or 0:.4f}"
                   if "test_acc_goodness_mean" in m else "")
            t5.add_row(mode, f"{m['train_seconds']:.1f}", f"{m['eval_seconds']:.1f}", f"{m['epoch_seconds']:.1f}",
                       str(m["compiled_frames"]), str(m["graph_breaks"]), acc)
        console.print(t5)
        console.print(f"compiled / eager epoch: {r['speedup']:.2f}x; bf16 / float32 compiled: {r.get('bf16_speedup', 0):.2f}x")
        if "products" in r:
            p = r["products"]
            console.print(f"its matrix products alone (the floor on this machine): float32 {p['train_seconds_float32']:.1f} s "
                          f"training + {p['eval_seconds_float32']:.1f} s evaluation = {p['epoch_seconds_float32']:.1f} s; "
                          f"bf16 training {p['train_seconds_bf16']:.1f} s + float32 evaluation = "
                          f"{p['epoch_seconds_bf16_training']:.1f} s")
    for name, t in result.get("targets", {}).items():
        console.print(f"target {name}: {t['value']:.2f} (target {t['target']}): {'met' if t['met'] else 'missed'}")
    if "seed_batching" in result:
        t2 = Table(title="seed-batched vs sequential (one training step of all seeds, batch 100)", title_justify="left")
        for col in ("layer type", "network", "seeds", "one network (ms)", "sequential (ms)", "batched (ms)", "speedup"):
            t2.add_column(col, justify="right")
        for r in result["seed_batching"]:
            t2.add_row(r["layer_type"], r["network"], str(r["seeds"]), f"{1e3 * r['single_step_seconds']:.1f}",
                       f"{1e3 * r['sequential_step_seconds']:.0f}", f"{1e3 * r['batched_step_seconds']:.0f}",
                       f"{r['speedup']:.2f}x")
        console.print(t2)
    if "device" in result:
        dev = result["device"]
        t4 = Table(title=f"on {dev['device_name']}: 4x2000 MNIST epochs, 30 seeds of 4x100", title_justify="left")
        for col in ("network", "batch", "tf32", "compiled", "epoch s", "validation s", "note"):
            t4.add_column(col, justify="right")
        for r in dev["epochs"]:
            t4.add_row(r["network"], str(r["batch_size"]), "yes" if r["tf32"] else "no", "yes" if r["compiled"] else "no",
                       f"{r['epoch_seconds']:.2f}" if r.get("epoch_seconds") else "-",
                       f"{r['eval_seconds']:.2f}" if r.get("eval_seconds") else "-", r.get("error", ""))
        console.print(t4)
        for r in dev["seed_batching"]:
            console.print(f"{r['seeds']} seeds of {r['network']}: sequential {1e3 * r['sequential_step_seconds']:.1f} ms, "
                          f"batched {1e3 * r['batched_step_seconds']:.1f} ms per step: {r['speedup']:.2f}x")
    if "quick" in result:
        q = result["quick"]
        reached = q["reached_98"]
        console.print(f"quick: final test accuracy {q['final_test_acc_goodness']:.4f} (goodness), "
                      f"{q['final_test_acc_head']:.4f} (head) after {q['epochs']} epochs, {q['train_seconds']:.0f} s training; "
                      + (f"98% reached at epoch {reached['epoch']} after {reached['train_seconds']:.0f} s training "
                         f"({reached['wall_seconds_incl_validation']:.0f} s wall with validation)" if reached else "98% not reached"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous = {k: v for k, v in previous.items() if k in SECTIONS + ("provenance",)}  # drop keys of old layouts
    if "seed_batching" in result:  # rows of layer types not run this time are kept, with their provenance
        run_types = {r["layer_type"] for r in result["seed_batching"]}
        kept = [r for r in previous.get("seed_batching", []) if r["layer_type"] not in run_types]
        for r in kept:
            r.setdefault("provenance", previous.get("provenance", {}).get("seed_batching"))
        result["seed_batching"] = kept + result["seed_batching"]
    # Sections not run keep their last numbers; `provenance` says which code and command made each section.
    made_by = {"code": result["code"], "command": result["command"], "machine": result["machine"],
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    provenance = {**previous.get("provenance", {}),
                  **{key: made_by for key in SECTIONS if key in result}}
    out.write_text(json.dumps({**previous, **result, "provenance": provenance}, indent=2) + "\n")
    console.print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
