"""What the benchmarks time with: steps on real data, matrix products captured at ATen's dispatcher and
replayed alone (the floor under a step on this machine), and medians timed in alternation."""
from __future__ import annotations

import math
import statistics
import time

import torch

from ffhw.config import RunConfig
from ffhw.device import synchronize, use_compile
from ffhw.model import FFNet
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
