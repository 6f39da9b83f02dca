"""Where and how a run executes: device resolution, timing, CPU runtime tuning, the compile rule, the
seed-batch rule, evaluation batch sizes, optimiser kernels and determinism.

Nothing here changes what a run computes, only where and how fast (determinism aside, which asks torch for
reproducible kernels). Numbers behind each rule: benchmarks/results and docs.
"""
from __future__ import annotations

import ctypes
import math
import os
import time

import torch

from .errors import ConfigError


# ---------------------------------------------------------------------------------------------- devices
def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """auto: CUDA, else Apple's MPS, else the CPU; an explicit accelerator must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not mps_available():
        raise ConfigError("--device mps was asked for but this torch has no usable MPS backend; use --device cpu or auto")
    return torch.device(name)


def resolve_device_type(name: str) -> str:
    """The device type a config will run on here, without touching the device ("cpu", "cuda", "mps")."""
    return resolve_device(name).type if name == "auto" else name


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work, so that a clock read after it measures the work, not its launch."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()
    elif kind not in ("cpu", "meta"):
        module = getattr(torch, kind, None)
        if module is not None and hasattr(module, "synchronize"):
            module.synchronize()


def clock(device: torch.device | str) -> float:
    """Seconds (perf_counter) after the device's queued work has finished: the one timing helper."""
    synchronize(device)
    return time.perf_counter()


# ---------------------------------------------------------------------------------------------- CPU runtime
def tune_runtime(device: torch.device) -> None:
    """Process-wide speed settings for training on `device`; CPU only (they concern the CPU's own
    floating-point unit and allocator, which a GPU run leaves to the GPU)."""
    if device.type == "cpu":
        tune_cpu_runtime()


def tune_cpu_runtime() -> None:
    """Process-wide settings that make CPU training faster without changing what it computes.

    - Denormal floats (FF activities, shrinking Adam moments) slow CPU matmuls and updates; flushing them
      changes nothing FF can resolve. In every thread: see `flush_denormals_in_all_threads`.
    - glibc hands freed megabyte blocks back to the kernel, so every step page-faults its activations in
      afresh; keeping freed memory (blocks up to 32 MiB from the heap, no trimming) removes that at the cost
      of keeping the peak. Not glibc (macOS, Windows, musl): skipped.
    """
    flush_denormals_in_all_threads()
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest allowed value
        libc.mallopt(m_trim_threshold, (1 << 31) - 1)
    except (OSError, AttributeError):
        pass


def flush_denormals_in_all_threads() -> bool:
    """Flush denormals to zero in the calling thread and in every thread of the OpenMP pool.

    `torch.set_flush_denormal` sets the calling thread only, and the pool's workers exist once any parallel
    op has run, so they went on computing with denormals and the main thread waited for them in every matmul.
    This copies the calling thread's floating-point environment to every pool thread by running libm's
    `fesetenv` as the body of one OpenMP parallel region (GOMP_parallel; no compiled code). Returns whether
    the workers were reached (False where torch uses no GNU OpenMP, e.g. macOS).
    """
    torch.set_flush_denormal(True)
    try:
        with open("/proc/self/maps") as maps:  # the libgomp torch loaded (wheels may rename it)
            gomp_path = next(line.split()[-1] for line in maps if "libgomp" in line.rsplit("/", 1)[-1])
        gomp, libm = ctypes.CDLL(gomp_path), ctypes.CDLL("libm.so.6")
        env = ctypes.create_string_buffer(1024)  # fenv_t: 32 bytes on x86-64, less elsewhere
        if libm.fegetenv(env) != 0:
            return False
        gomp.GOMP_parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        gomp.GOMP_parallel.restype = None
        # fesetenv(env) runs once in every thread of a team of the default size (torch's thread count)
        gomp.GOMP_parallel(ctypes.cast(libm.fesetenv, ctypes.c_void_p), env, 0, 0)
        return True
    except (OSError, AttributeError, StopIteration):
        return False


# ---------------------------------------------------------------------------------------------- determinism
def set_deterministic(on: bool, device: torch.device) -> None:
    """train.deterministic: torch's deterministic kernels (errors where an op has none), fixed cuBLAS
    workspaces and no cuDNN autotuning; bit-identical reruns on the same device, at some speed."""
    if not on:
        return
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reads it at its first handle
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)


# ---------------------------------------------------------------------------------------------- optimisers
def fused_supported(params: list[torch.Tensor]) -> bool:
    """Whether torch has fused optimiser kernels for every parameter's device and dtype. torch accepts
    fused=True at construction and refuses only at the first step, so the choice must be made here."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices
        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # older torch: CUDA only
        devices = {"cuda"}
    return bool(params) and all(p.device.type in devices and p.is_floating_point() for p in params)


def make_optimizer(params, kind: str, lr: float, weight_decay: float, momentum: float = 0.0) -> torch.optim.Optimizer:
    """Adam or SGD with momentum; the fused implementation (one kernel for all parameters) where torch has
    it for these parameters. Every update is elementwise, so seeds stacked in one tensor never share
    statistics."""
    params = list(params)
    kwargs = dict(lr=lr, weight_decay=weight_decay)
    cls = torch.optim.Adam if kind == "adam" else torch.optim.SGD
    if cls is torch.optim.SGD:
        kwargs["momentum"] = momentum
    return cls(params, fused=fused_supported(params) or None, **kwargs)


# ---------------------------------------------------------------------------------------------- compile rule
# Auto-compiled runs need this many training steps: compiling takes seconds to tens of seconds on the CPU and
# saves milliseconds per step where it helps, so short runs (and the tests) stay eager.
COMPILE_MIN_STEPS = 5000


def use_compile(cfg, model, device: torch.device, train_size: int) -> bool:
    """Whether to torch.compile the step: train.compile on/off, or for auto the measured rule: on the CPU, for
    runs of at least COMPILE_MIN_STEPS steps whose largest activation tensor (all seeds, positives and
    negatives, values per unit) is within what the layer type measured faster compiled. Off on GPUs until
    measured there."""
    t = cfg.train
    if t.compile != "auto":
        return t.compile == "on"
    layer_type = type(model.layers[0])
    values = model.seeds * activation_values(t.batch_size, max(layer.units for layer in model.layers),
                                             layer_type.values_per_unit(model.options))
    return (device.type == "cpu" and steps_of(t.epochs, train_size, t.batch_size) >= COMPILE_MIN_STEPS
            and values <= layer_type.compile_max_values)


def configure_compile(mode: str, variants: int) -> None:
    """Before a trainer compiles. Compiled code of earlier trainers would stay cached and have its guards
    checked first at every call, so it is dropped; the step legitimately compiles `variants` times (APL's
    two parities, greedy's one layer range per stage, a short last batch), which the recompile limit must
    admit; `auto` compiles for speed, so where compiling fails it runs eager rather than stop."""
    torch._dynamo.reset()
    torch._dynamo.config.recompile_limit = max(8, variants)
    if mode == "auto":
        torch._dynamo.config.suppress_errors = True


# ---------------------------------------------------------------------------------------------- batch sizes
# CPU: the largest activation tensor of one evaluation batch stays under this: blocks above glibc's 32 MiB
# mmap ceiling are mapped fresh at every allocation and page-faulted on first touch (benchmarks/results).
EVAL_BATCH_BYTES_CPU = 24 << 20
# Accelerators: the share of free device memory that one evaluation batch's widest activation tensor may
# take (the other live tensors of the batch are a few times that size).
EVAL_MEMORY_SHARE = 1 / 16


def free_device_memory(device: torch.device) -> int | None:
    """Free bytes on an accelerator (None where unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    return None


def eval_batch_bytes(device: torch.device) -> int:
    """Bytes the widest activation tensor of one evaluation batch may take on this device."""
    free = free_device_memory(device)
    if free is None:
        return EVAL_BATCH_BYTES_CPU
    return max(EVAL_BATCH_BYTES_CPU, int(free * EVAL_MEMORY_SHARE))


# CPU: the largest activation tensor of a seed-batched training step stays under this; beyond it stacking
# seeds stops paying (benchmarks/results/train_bench.json, section seeds).
SEED_BATCH_BYTES_CPU = 64 << 20
# Accelerators: one seed batch's parameters, gradients, Adam state and step activations stay under this.
SEED_BATCH_BYTES_GPU = 2 << 30


def seed_batch(seeds: int, device_type: str, conv: bool, params_per_seed: int, activation_values_per_seed: float) -> int:
    """How many seeds of one configuration to train side by side (chunks of this size).

    Small networks are bound by per-step overhead, so stacking seeds costs almost nothing extra; once the
    stacked activations outgrow the caches, stacking stops paying. CPU: as many seeds as keep the largest
    activation tensor of a step under SEED_BATCH_BYTES_CPU; conv networks one at a time. Accelerators: as
    many as keep parameters x 4 (weights, gradient, two Adam moments) and the step's activations (a few
    tensors of the largest size per layer) under SEED_BATCH_BYTES_GPU, a memory bound (the speed crossover
    has not been measured on a GPU)."""
    if device_type == "cpu":
        if conv:
            return 1
        return max(1, min(seeds, int(SEED_BATCH_BYTES_CPU // max(activation_values_per_seed * 4, 1))))
    per_seed = params_per_seed * 4 * 4 + activation_values_per_seed * 4 * 8
    return max(1, min(seeds, int(SEED_BATCH_BYTES_GPU // max(per_seed, 1))))


def activation_values(batch_size: int, widest: int, values_per_unit: float) -> float:
    """Values of one seed's largest activation tensor in a training step: positives and negatives x the
    widest layer x the layer type's values per unit (spiking: one per time step). The one activation-size rule."""
    return 2 * batch_size * widest * values_per_unit


def steps_of(epochs: int, train_size: int, batch_size: int) -> int:
    return epochs * math.ceil(train_size / batch_size)
