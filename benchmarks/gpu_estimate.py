"""Estimated GPU hours of the studies' paper grids, for experiments/run_gpu_studies.sh.

    python benchmarks/gpu_estimate.py [--out benchmarks/results/gpu_estimate.json]

No GPU has been measured yet, so this is a cost model, not a measurement. For every unit the runner would
train (a cell and its seeds, batched as the runner batches them on a GPU), one training step and one
evaluation batch of the real code run on torch's `meta` device (shapes, no data), under a dispatcher hook
that counts the operations (each one a kernel launch on a GPU, without CUDA graphs), the FLOPs of the
matrix products and convolutions, and the bytes each operation reads and writes. A step then takes
max(FLOPs / (PEAK x EFFICIENCY), sum over operations of max(LAUNCH, bytes / (BANDWIDTH x EFFICIENCY))):
large layers are bound by arithmetic, the elementwise work of quantizers and spiking time loops on large
activations by memory, and the narrow 100-unit layers of the depth study by launches.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ffhw import model as model_mod
from ffhw import train as train_mod
from ffhw.data import Data, Split
from ffhw.model import FFNet
from ffhw.study import Study
from ffhw.train import Trainer

PEAK_FLOPS = 67e12  # H200 SXM, fp32 without tensor cores (TF32 tensor cores: about 7x more)
EFFICIENCY = 0.5  # share of peak the matrix products reach
LAUNCH_SECONDS = 8e-6  # host time per eager kernel launch (PyTorch eager, no CUDA graphs)
BANDWIDTH = 4.8e12  # H200 HBM3e, bytes per second
META = torch.device("meta")
TRAIN_SIZE = {"mnist": 50000, "fashion-mnist": 50000, "cifar10": 45000, "svhn": 63257}
TEST_SIZE = {"mnist": 10000, "fashion-mnist": 10000, "cifar10": 10000, "svhn": 26032}
SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32), "svhn": (3, 32, 32)}


class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops, self.flops, self.op_seconds = 0, 0.0, 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in ("detach", "view", "_unsafe_view", "t", "transpose", "expand", "as_strided", "slice", "select",
                    "unsqueeze", "squeeze", "reshape", "alias", "permute", "split", "unbind"):
            return out  # views launch nothing
        self.ops += 1
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(o, torch.Tensor)]
        moved = sum(t.numel() * t.element_size() for t in tensors + outs)
        self.op_seconds += max(LAUNCH_SECONDS, moved / (BANDWIDTH * EFFICIENCY))
        if name in ("mm", "bmm", "addmm", "baddbmm"):
            a, b = tensors[-2], tensors[-1]
            self.flops += 2.0 * math.prod(a.shape) * b.shape[-1]
        elif name == "convolution":  # (input, weight, ...): 2 x outputs x taps per output
            self.flops += 2.0 * out.numel() * math.prod(tensors[1].shape[1:])
        elif name == "convolution_backward":  # (grad_output, input, weight, ..., output_mask)
            grads = sum(bool(m) for m in args[-1][:2])  # input and weight gradients, as asked for
            self.flops += 2.0 * tensors[0].numel() * math.prod(tensors[2].shape[1:]) * grads
        return out


def shims():
    """Generators do not exist on meta; the once-per-epoch metric rows read values on the host by design."""
    model_mod.device_generator = lambda seed, device="cpu": None
    train_mod.device_generator = lambda seed, device="cpu": None


def meta_data(cfg, n: int) -> Data:
    shape = SHAPES[cfg.data.dataset]

    def split(k):
        return Split(torch.empty(k, *shape, dtype=torch.uint8, device=META), torch.empty(k, dtype=torch.long, device=META))
    return Data(cfg.data.dataset, split(n), split(n), split(n), 10)


def per_step(cfg) -> dict:
    """Kernels and FLOPs of one training step and of one evaluation batch of `cfg` (all its seeds)."""
    bs = cfg.train.batch_size
    data = meta_data(cfg, 2 * bs)
    model = FFNet(cfg, data.image_shape, 10).to(META)
    trainer = Trainer(cfg, data, model, META)
    order, negatives = trainer.epoch_plan(0)
    from ffhw.metrics import LAYER_METRICS
    sums = {k: torch.zeros(len(model.layers), model.seeds, device=META) for k in (*LAYER_METRICS, "seen")}
    sums["head_loss"], sums["head_acc"] = torch.zeros(model.seeds, device=META), torch.zeros(model.seeds, device=META)
    layers = range(len(model.layers))
    trainer.train_step(order[:, :bs], negatives, layers, sums, 0)  # optimiser state exists from here on
    with Count() as step:
        trainer.train_step(order[:, bs:2 * bs], negatives, layers, sums, 1)
    images = trainer.eval_batch_images()
    model.eval()
    with Count() as ev, torch.no_grad():
        model.evaluate_batch(data.val.images(slice(0, images)), with_head=cfg.train.head)
    return {"step_ops": step.ops, "step_flops": step.flops, "step_op_seconds": step.op_seconds, "eval_ops": ev.ops,
            "eval_flops": ev.flops, "eval_op_seconds": ev.op_seconds, "eval_images_per_batch": images}


def seconds(op_seconds: float, flops: float) -> float:
    return max(flops / (PEAK_FLOPS * EFFICIENCY), op_seconds)


def estimate(study_name: str, layer_type: str, grid: str = "paper") -> dict:
    study = Study.load(study_name, grid, layer_type)
    parts, total = [], 0.0
    for unit in study.units(device_type="cuda"):
        cfg = study.config_for(unit.factors)
        cfg.train.seeds, cfg.train.compile = len(unit.seeds), "off"
        cfg.validate()
        c = per_step(cfg)
        n = TRAIN_SIZE[cfg.data.dataset] - (cfg.data.val_size if cfg.data.dataset in ("mnist", "fashion-mnist") else 0)
        steps = math.ceil(n / cfg.train.batch_size)
        val_batches = math.ceil(cfg.data.val_size / c["eval_images_per_batch"])
        test_batches = math.ceil(TEST_SIZE[cfg.data.dataset] / c["eval_images_per_batch"])
        epoch = (steps * seconds(c["step_op_seconds"], c["step_flops"])
                 + val_batches * seconds(c["eval_op_seconds"], c["eval_flops"]))
        unit_s = cfg.train.epochs * epoch + test_batches * seconds(c["eval_op_seconds"], c["eval_flops"])
        flop_bound = c["step_flops"] / (PEAK_FLOPS * EFFICIENCY) > c["step_op_seconds"]
        bound = "FLOPs" if flop_bound else ("launches" if c["step_op_seconds"] <= 1.05 * c["step_ops"] * LAUNCH_SECONDS
                                            else "memory and launches")
        parts.append({"unit": unit.id, "seeds": len(unit.seeds), "epochs": cfg.train.epochs, **c,
                      "epoch_seconds": epoch, "unit_hours": unit_s / 3600, "bound": bound})
        total += unit_s
    return {"study": study_name, "layer_type": layer_type, "grid": grid, "gpu_hours": total / 3600, "units": parts}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/gpu_estimate.json")
    p.add_argument("--studies", default="depth-correlation,trifecta")
    args = p.parse_args()
    torch.set_num_threads(1)
    shims()
    results = []
    for study_name in args.studies.split(","):
        for layer_type in ("standard", "quantized", "spiking"):
            t = time.perf_counter()
            r = estimate(study_name, layer_type)
            results.append(r)
            print(f"{study_name:18s} {layer_type:9s} {r['gpu_hours']:8.1f} GPU hours  ({len(r['units'])} units, "
                  f"counted in {time.perf_counter() - t:.0f} s)", flush=True)
    assumptions = {"peak_flops": PEAK_FLOPS, "efficiency": EFFICIENCY, "launch_seconds": LAUNCH_SECONDS,
                   "bandwidth_bytes_per_second": BANDWIDTH,
                   "device": "NVIDIA H200 (not measured: no GPU was available)"}
    Path(args.out).write_text(json.dumps({"assumptions": assumptions, "results": results,
                                          "command": "python benchmarks/gpu_estimate.py"}, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
