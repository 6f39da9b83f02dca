"""Tests that need a CUDA GPU: marked `cuda`, skipped cleanly where torch sees none (run them with
`python -m pytest -m cuda` on a GPU machine). Everything here also has a CPU or meta-device counterpart."""
import pytest
import torch

from conftest import small_config
from ffhw.data import Data, Split
from ffhw.model import FFNet
from ffhw.metrics import LAYER_METRICS
from ffhw.train import Trainer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")
TYPES = [("standard", {}), ("quantized", {"weight_bits": 4}), ("spiking", {"steps": 4})]


def to_device(data: Data, device) -> Data:
    def move(split):
        return Split(split.x.to(device), split.y.to(device))
    return Data(data.name, move(data.train), move(data.val), move(data.test), data.num_classes)


@pytest.fixture(scope="module")
def mnist_cuda(mnist_small):
    return to_device(mnist_small, CUDA)


def config(layer_type, options, **train):
    cfg = small_config(layer_type, hidden=(200, 200), **{"epochs": 1, "lr": 3e-3, "batch_size": 50, **train})
    cfg.model.layer = dict(options)
    if layer_type == "spiking":
        cfg.model.theta = 0.2  # rate units
    return cfg.validate()


def fit(cfg, data, device=CUDA):
    model = FFNet(cfg, data.image_shape, data.num_classes).to(device)
    trainer = Trainer(cfg, data, model, device)
    return trainer, trainer.fit()


@pytest.mark.parametrize("layer_type,options", TYPES)
def test_one_epoch_on_cuda_learns_and_evaluates_like_the_cpu(mnist_cuda, mnist_small, layer_type, options):
    from ffhw.metrics import evaluate_split
    trainer, summary = fit(config(layer_type, options, epochs=2), mnist_cuda)
    assert summary["device"].startswith("cuda") and summary["test_acc_head"]["mean"] > 0.3, summary  # chance 0.1
    cpu_model = FFNet(trainer.cfg, mnist_small.image_shape, 10)
    cpu_model.load_state_dict({k: v.cpu() for k, v in trainer.model.state_dict().items()})
    # the same weights and the same wrong labels (generators differ between devices): the same metrics up to
    # float summation order (a spike may flip)
    negatives = Trainer(trainer.cfg, mnist_small, cpu_model, torch.device("cpu")).eval_negatives("val", mnist_small.val)
    on_cpu = evaluate_split(cpu_model, mnist_small.val, negatives, 500, True)
    on_gpu = evaluate_split(trainer.model, mnist_cuda.val, negatives.to(CUDA), 500, True)
    for key, value in on_cpu.items():
        tol = 2e-2 if layer_type == "spiking" else 2e-3
        assert torch.allclose(on_gpu[key].cpu(), value, rtol=tol, atol=tol), key


@pytest.mark.parametrize("layer_type,options", TYPES)
def test_seed_batched_equals_separate_on_cuda(mnist_cuda, layer_type, options):
    """Seed 1 of a 2-seed batched run = seed 1 trained alone (own init, data order, negatives), as on the CPU."""
    def seed_one(**train):  # the CPU test's setting (tests/test_train.py)
        cfg = small_config(layer_type, hidden=(64, 64), epochs=1, **train)
        cfg.model.layer = dict(options)
        trainer, _ = fit(cfg.validate(), mnist_cuda)
        return {(r["split"], r["layer"], r["metric"]): r["value"] for r in trainer.rows
                if r["seed"] == 1 and "seconds" not in r["metric"]}

    batched, alone = seed_one(seeds=2), seed_one(seed=1)
    assert batched.keys() == alone.keys()
    for key, value in alone.items():
        assert abs(batched[key] - value) <= 2e-3 * max(1.0, abs(value)), (key, batched[key], value)


@pytest.mark.parametrize("layer_type,options", TYPES)
def test_bf16_autocast_on_cuda(mnist_cuda, layer_type, options):
    _, summary = fit(config(layer_type, options, autocast="bf16"), mnist_cuda)
    assert summary["test_acc_head"]["mean"] > 0.3, summary


def test_compiled_step_on_cuda_trains_like_eager(mnist_cuda):
    runs = {mode: fit(config("standard", {}, compile=mode, optimizer="sgd", lr=1e-3, seeds=2), mnist_cuda)[0]
            for mode in ("off", "on")}
    assert runs["on"].compiled
    for a, b in zip(runs["off"].model.parameters(), runs["on"].model.parameters()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("layer_type,options", TYPES)
def test_no_host_sync_in_a_training_step_or_an_evaluation_batch(mnist_cuda, layer_type, options):
    cfg = config(layer_type, options, seeds=2)
    model = FFNet(cfg, mnist_cuda.image_shape, 10).to(CUDA)
    trainer = Trainer(cfg, mnist_cuda, model, CUDA)
    n = len(model.layers)
    sums = {k: torch.zeros(n, 2, device=CUDA) for k in (*LAYER_METRICS, "seen")}
    sums |= {"head_loss": torch.zeros(2, device=CUDA), "head_acc": torch.zeros(2, device=CUDA)}
    order, negatives = trainer.epoch_plan(0)
    layers = trainer.trained_layers(0)
    trainer.train_step(order[:, :50], negatives, layers, sums, 0)  # first step: lazy optimiser state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 4):
            trainer.train_step(order[:, step * 50:(step + 1) * 50], negatives, layers, sums, step)
        model.eval()
        model.evaluate_batch(mnist_cuda.val.images(slice(0, 100)))
    finally:
        torch.cuda.set_sync_debug_mode("default")
        model.train()


def test_export_from_a_cuda_trained_run(tmp_path):
    from ffhw.run import main
    args = ["--hidden", "2x60", "--epochs", "1", "--train-subset", "600", "--set", "data.val_size=500", "--quiet",
            "--device", "cuda", "--out", str(tmp_path), "--name", "gpu"]
    assert main(args) == 0
    assert main(["export", str(tmp_path / "gpu"), "--out", str(tmp_path / "bundles")]) == 0
    assert (tmp_path / "bundles" / "gpu" / "manifest.json").is_file()
