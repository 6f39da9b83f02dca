"""Conv block benchmark (the Trifecta networks): prints a table and writes JSON. Not a test: numbers depend on
the machine.

Measured side by side in one run, on one torch thread (how the studies' workers run):
- the 2x2 max pool at the small network's pooled shapes (positives and negatives of a batch of 128): torch's
  F.max_pool2d against ffhw's max_pool2x2 (ffhw/layers/conv.py), forward without autograd (evaluation) and
  forward + backward (training), timed in alternation;
- a training step and a validation pass (1,000 images, every label) of the Trifecta `ablation` grid's network (1/16 width, the
  Trifecta variant, MNIST) per layer type, with each pool, timed in alternation on real data.

    python benchmarks/conv_bench.py [--out benchmarks/results/conv_bench.json] [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_tools import interleaved_medians, step_runner
from rich.console import Console
from rich.table import Table

from ffhw import data as data_mod
from ffhw.data import Split
from ffhw.files import code_version
from ffhw.layers import conv as conv_mod
from ffhw.study import Study

POOLS = {"F.max_pool2d": lambda x, k=2: F.max_pool2d(x, k), "max_pool2x2": conv_mod.max_pool2x2}


def pool_section(rounds: int) -> list[dict]:
    rows = []
    for shape in [(256, 8, 28, 28), (256, 16, 14, 14), (256, 32, 28, 28), (256, 128, 14, 14)]:
        x = torch.relu(torch.randn(shape)).requires_grad_()
        grad = torch.randn(*shape[:2], shape[2] // 2, shape[3] // 2)
        fns = {}
        for name, pool in POOLS.items():
            fns[f"{name} forward"] = lambda pool=pool: pool(x.detach())
            fns[f"{name} train"] = lambda pool=pool: torch.autograd.grad(pool(x), x, grad)
        t = interleaved_medians(fns, rounds, 5)
        rows.append({"shape": list(shape), **{k: v * 1e3 for k, v in t.items()},
                     "forward_speedup": t["F.max_pool2d forward"] / t["max_pool2x2 forward"],
                     "train_speedup": t["F.max_pool2d train"] / t["max_pool2x2 train"]})
    return rows


def step_section(rounds: int) -> list[dict]:
    d = data_mod.load("mnist", None, "cpu", val_size=5000)
    val = Split(d.val.x[:1000], d.val.y[:1000])
    rows = []
    for layer_type in ("standard", "quantized", "spiking"):
        cfg = Study.load("trifecta", "ablation", layer_type).config_for({"variant": "trifecta", "data.dataset": "mnist"})
        cfg.train.compile = "off"
        step = step_runner(cfg, d)
        evaluate = lambda trainer=step.trainer: trainer.evaluate("val", val)  # noqa: E731 - as every epoch does
        def use(fn, pool):
            def run():
                conv_mod.max_pool2x2 = pool
                try:
                    fn()
                finally:
                    conv_mod.max_pool2x2 = POOLS["max_pool2x2"]
            return run
        # steps differ by a few ms in ~50: many short alternations; a validation pass takes seconds
        t = interleaved_medians({f"{name} step": use(step, pool) for name, pool in POOLS.items()}, 3 * rounds, 4)
        t |= interleaved_medians({f"{name} eval": use(evaluate, pool) for name, pool in POOLS.items()}, rounds, 1)
        rows.append({"layer_type": layer_type, "val_images": len(val), **{k: v * 1e3 for k, v in t.items()},
                     "step_speedup": t["F.max_pool2d step"] / t["max_pool2x2 step"],
                     "eval_speedup": t["F.max_pool2d eval"] / t["max_pool2x2 eval"]})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "conv_bench.json"))
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    console = Console()
    result = {"machine": {"node": platform.node(), "processor": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
              "code": code_version(), "command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
              "pool": pool_section(args.rounds), "steps": step_section(args.rounds)}
    table = Table(title="2x2 max pool, ms (median, alternating)")
    for col in ("shape", "F.max_pool2d fwd", "max_pool2x2 fwd", "speedup", "F.max_pool2d train", "max_pool2x2 train",
                "speedup"):
        table.add_column(col, justify="right")
    for r in result["pool"]:
        table.add_row("x".join(map(str, r["shape"])), f"{r['F.max_pool2d forward']:.2f}",
                      f"{r['max_pool2x2 forward']:.2f}", f"{r['forward_speedup']:.2f}x", f"{r['F.max_pool2d train']:.2f}",
                      f"{r['max_pool2x2 train']:.2f}", f"{r['train_speedup']:.2f}x")
    console.print(table)
    table = Table(title="Trifecta ablation network (1/16 width, batch 128), ms per step / per 1,000-image validation pass")
    for col in ("layer type", "step F.max_pool2d", "step max_pool2x2", "speedup", "eval F.max_pool2d",
                "eval max_pool2x2", "speedup"):
        table.add_column(col, justify="right")
    for r in result["steps"]:
        table.add_row(r["layer_type"], f"{r['F.max_pool2d step']:.1f}", f"{r['max_pool2x2 step']:.1f}",
                      f"{r['step_speedup']:.2f}x", f"{r['F.max_pool2d eval']:.0f}", f"{r['max_pool2x2 eval']:.0f}",
                      f"{r['eval_speedup']:.2f}x")
    console.print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
