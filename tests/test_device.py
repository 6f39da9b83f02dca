"""Device choices: resolution, timing, runtime tuning, optimiser kernels, batch sizes, determinism."""
import pytest
import torch

from ffhw import device as dev
from ffhw.errors import ConfigError


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "mps_available", lambda: False)
    assert dev.resolve_device("auto").type == "cpu"
    monkeypatch.setattr(dev, "mps_available", lambda: True)
    assert dev.resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dev.resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("name", ["cuda", "mps"])
def test_an_accelerator_that_is_absent_is_refused(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "mps_available", lambda: False)
    with pytest.raises(ConfigError, match=f"--device {name} was asked for"):
        dev.resolve_device(name)


@pytest.mark.parametrize("kind,module", [("cuda", torch.cuda), ("mps", torch.mps)])
def test_the_clock_waits_for_the_device(kind, module, monkeypatch):
    calls = []
    monkeypatch.setattr(module, "synchronize", lambda *a: calls.append(kind))
    dev.clock(kind)
    assert calls == [kind]
    dev.clock("cpu")
    assert calls == [kind]  # the CPU runs synchronously: nothing to wait for


def test_cpu_runtime_tuning_only_for_cpu_runs(monkeypatch):
    calls = []
    monkeypatch.setattr(dev, "tune_cpu_runtime", lambda: calls.append("cpu"))
    dev.tune_runtime(torch.device("cuda"))
    dev.tune_runtime(torch.device("meta"))
    assert calls == []
    dev.tune_runtime(torch.device("cpu"))
    assert calls == ["cpu"]


def test_fused_optimiser_only_where_torch_has_the_kernels():
    """torch accepts fused=True for any device and refuses at the first step, so the choice is made up front."""
    for kind in ("adam", "sgd"):
        cpu = torch.nn.Parameter(torch.zeros(3))
        assert dev.make_optimizer([cpu], kind, 1e-3, 0.0, 0.9).defaults["fused"]
        meta = torch.nn.Parameter(torch.zeros(3, device="meta"))  # a device without fused kernels
        opt = dev.make_optimizer([meta], kind, 1e-3, 0.0, 0.9)
        assert not opt.defaults["fused"]
        meta.grad = torch.zeros(3, device="meta")
        opt.step()  # the step that raised with fused=True


def test_evaluation_batches_are_sized_to_the_device(monkeypatch):
    assert dev.eval_batch_bytes(torch.device("cpu")) == dev.EVAL_BATCH_BYTES_CPU
    monkeypatch.setattr(dev, "free_device_memory", lambda device: 64 << 30)  # a GPU with 64 GiB free
    assert dev.eval_batch_bytes(torch.device("cuda")) == (64 << 30) // 16


def test_seed_batch_counts_the_real_input_the_time_steps_and_the_device():
    from ffhw.config import RunConfig
    from ffhw.study import choose_seed_batch

    def cfg(dataset="mnist", layer_type="standard", width=1000, **layer):
        c = RunConfig()
        c.data.dataset, c.model.layer_type, c.model.hidden, c.model.layer = dataset, layer_type, [width] * 4, layer
        return c

    # GPU: a memory bound on weights (input-dependent) and step activations (T-dependent)
    mnist, cifar = choose_seed_batch(cfg(), 400, "cuda"), choose_seed_batch(cfg("cifar10"), 400, "cuda")
    assert cifar < mnist  # 3072 inputs, not 784
    assert choose_seed_batch(cfg(layer_type="spiking", steps=32), 400, "cuda") < \
        choose_seed_batch(cfg(layer_type="spiking", steps=2), 400, "cuda")
    params = 3072 * 1000 + 1000 + 3 * (1000 * 1000 + 1000)
    assert cifar == int(dev.SEED_BATCH_BYTES_GPU // (params * 16 + 2 * 100 * 1000 * 32))
    assert choose_seed_batch(cfg(), 30, "cpu") == 30
    fp16 = cfg()
    fp16.train.autocast = "fp16"
    assert choose_seed_batch(fp16, 30, "cuda") == 1  # a shared gradient scaler would couple the seeds


def test_deterministic_mode(monkeypatch):
    before = torch.are_deterministic_algorithms_enabled()
    try:
        dev.set_deterministic(False, torch.device("cpu"))
        assert torch.are_deterministic_algorithms_enabled() == before
        dev.set_deterministic(True, torch.device("cpu"))
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)
