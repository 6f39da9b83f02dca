import pytest
import torch

from conftest import small_config
from ffhw.errors import DivergenceError
from ffhw.model import FFNet
from ffhw.records import RunDir
from ffhw.train import Trainer

LAYER_TYPES = [("standard", {}), ("quantized", {"weight_bits": 4}), ("spiking", {"steps": 4})]


def trainer_for(cfg, data, run=None, ui=None):
    model = FFNet(cfg, data.image_shape, data.num_classes)
    return Trainer(cfg, data, model, torch.device("cpu"), run, ui)


def net_metric(rows, split, metric):
    return {r["seed"]: r["value"] for r in rows if r["split"] == split and r["layer"] == "net" and r["metric"] == metric}


@pytest.mark.parametrize("layer_type,options", LAYER_TYPES)
def test_no_gradient_crosses_layers(layer_type, options, mnist_small):
    cfg = small_config(layer_type, hidden=(64, 48, 32))
    cfg.model.layer = options
    model = FFNet(cfg, mnist_small.image_shape, 10)
    images, y = mnist_small.train.images(slice(0, 16)), mnist_small.train.y[:16]
    x = model.expand_seeds(torch.cat([model.encoding.embed(images, y), model.encoding.embed(images, (y + 1) % 10)]))
    outputs = model.forward_layers(x)
    for k in (1, 2):
        model.zero_grad(set_to_none=True)
        g = model.objectives[k].goodness(outputs[k].act)
        model.objectives[k].loss(g[:, :16], g[:, 16:]).sum().backward(retain_graph=True)
        own = [p.grad for p in model.layers[k].parameters() if p.requires_grad]
        assert any(gr is not None and gr.abs().sum() > 0 for gr in own)
        for j in range(k):
            for p in model.layers[j].parameters():
                assert p.grad is None or torch.all(p.grad == 0), f"layer {k}'s loss reached layer {j}"


@pytest.mark.parametrize("layer_type,options", LAYER_TYPES)
def test_each_type_learns_well_above_chance_on_real_mnist(layer_type, options, mnist_small):
    cfg = small_config(layer_type, hidden=(200, 200), epochs=4, lr=3e-3, batch_size=50)
    cfg.model.layer = options
    if layer_type == "spiking":
        cfg.model.theta = 0.2  # rate units
    summary = trainer_for(cfg, mnist_small).fit()
    # chance is 0.1; measured on this subset: standard ~0.72, quantized ~0.71, spiking ~0.6
    assert summary["test_acc_goodness"]["mean"] > 0.45, summary
    assert summary["test_acc_head"]["mean"] > 0.45, summary


def test_same_seed_same_metrics_and_seeds_differ(mnist_small):
    cfg = small_config(epochs=1, seeds=2)
    a, b = trainer_for(cfg, mnist_small), trainer_for(cfg, mnist_small)
    a.fit(), b.fit()
    strip = lambda rows: [(r["seed"], r["split"], r["layer"], r["metric"], r["value"]) for r in rows  # noqa: E731
                          if "seconds" not in r["metric"]]
    assert strip(a.rows) == strip(b.rows)
    acc = net_metric(a.rows, "val", "acc_goodness")
    assert set(acc) == {0, 1} and acc[0] != acc[1]


@pytest.mark.parametrize("layer_type,options", LAYER_TYPES + [("spiking", {"steps": 4, "encoding": "rate"})])
def test_seed_batched_equals_separate_run(layer_type, options, mnist_small):
    """Seed 2 of a 3-seed batched run = seed 2 trained alone: own init, data order, negatives."""
    def run(**train):
        cfg = small_config(layer_type, hidden=(64, 64), epochs=1, **train)
        cfg.model.layer = dict(options)
        tr = trainer_for(cfg, mnist_small)
        tr.fit()
        return {(r["split"], r["layer"], r["metric"]): r["value"] for r in tr.rows
                if r["seed"] == 2 and "seconds" not in r["metric"]}

    batched, alone = run(seeds=3), run(seed=2)
    assert batched.keys() == alone.keys()
    for key, value in alone.items():
        assert abs(batched[key] - value) <= 2e-3 * max(1.0, abs(value)), (key, batched[key], value)


class StopAfter:
    """A UI that interrupts training after a given epoch, like a kill between epochs."""

    def __init__(self, epoch):
        self.stop = epoch

    def start(self, *a):
        pass

    def batch(self):
        pass

    def epoch(self, epoch, *a):
        if epoch == self.stop:
            raise KeyboardInterrupt

    def done(self, *a):
        pass


def test_resume_after_kill_equals_uninterrupted(mnist_small, tmp_path):
    cfg = small_config(epochs=3)
    full = trainer_for(cfg, mnist_small, RunDir.create(tmp_path / "full", cfg))
    full.fit()
    run = RunDir.create(tmp_path / "killed", cfg)
    with pytest.raises(KeyboardInterrupt):
        trainer_for(cfg, mnist_small, run, StopAfter(2)).fit()
    assert run.read_summary()["status"] == "running" and run.read_summary()["epochs_completed"] == 2
    resumed = trainer_for(cfg, mnist_small, run)
    resumed.load_state_dict(run.load_checkpoint(), run.read_metrics())
    resumed.fit()
    strip = lambda rows: [(r["seed"], r["epoch"], r["split"], r["layer"], r["metric"], r["value"])  # noqa: E731
                          for r in rows if "seconds" not in r["metric"]]
    assert strip(RunDir(tmp_path / "killed").read_metrics()) == strip(RunDir(tmp_path / "full").read_metrics())


def test_divergence_stops_with_clear_message_and_keeps_records(mnist_small, tmp_path):
    cfg = small_config(epochs=3, optimizer="sgd", lr=1e12)
    cfg.model.peer_norm = 0.0
    run = RunDir.create(tmp_path / "run", cfg)
    with pytest.raises(DivergenceError, match="diverged in epoch 1 .*records up to it are kept"):
        trainer_for(cfg, mnist_small, run).fit()
    assert run.read_summary()["status"] == "diverged"
    assert any(r["metric"] == "loss" for r in run.read_metrics())


def test_greedy_schedule_trains_one_layer_at_a_time(mnist_small):
    cfg = small_config(epochs=2, schedule="greedy")
    t = trainer_for(cfg, mnist_small)
    before = t.model.layers[1].weight.detach().clone()
    t.cfg.train.epochs = 1  # stop after the first epoch, in which only layer 0 may learn
    t.cfg.train.epochs = 2
    assert list(t.trained_layers(0)) == [0] and list(t.trained_layers(1)) == [1]
    t.fit()
    assert not torch.equal(before, t.model.layers[1].weight)
    trained = {(r["epoch"], r["layer"]) for r in t.rows if r["split"] == "train" and r["metric"] == "loss"}
    assert trained == {(1, "0"), (2, "1")}


def test_evaluation_does_not_depend_on_its_batch_size(mnist_small):
    """Metrics are sums over evaluation batches: 7-image batches and the memory-bounded default agree."""
    cfg = small_config(epochs=1, seeds=2)
    tr = trainer_for(cfg, mnist_small)
    tr.fit()
    whole = tr.evaluate("val", mnist_small.val)
    tr.cfg.train.eval_batch_size = 7
    assert tr.eval_batch_images() == 7
    small = tr.evaluate("val", mnist_small.val)
    for key, value in whole.items():
        assert torch.allclose(value, small[key], rtol=1e-4, atol=1e-5), key


def test_evaluation_batch_is_bounded_by_activation_memory(mnist_small):
    from ffhw.device import EVAL_BATCH_BYTES_CPU as EVAL_BATCH_BYTES
    cfg = small_config(hidden=(2000, 100), seeds=3)
    tr = trainer_for(cfg, mnist_small)
    n = tr.eval_batch_images()
    assert n * 3 * 10 * 2000 * 4 <= EVAL_BATCH_BYTES < (n + 1) * 3 * 10 * 2000 * 4


@pytest.mark.parametrize("layer_type", ["standard", "spiking"])  # the types auto-compile can choose
def test_compiled_step_trains_like_eager(mnist_small, layer_type):
    """train.compile changes how the step runs, not what it computes."""
    runs = {}
    for mode in ("off", "on"):
        # two seeds: stacked, strided gradients. Plain SGD at a small rate: the compiled and eager gradients agree to
        # 1e-6 at every step, but Adam's g / sqrt(v) on the zero-initialised head, or larger steps, amplify that
        # rounding over a few steps into differences of 1e-3 (measured), which would hide a real one
        cfg = small_config(layer_type, hidden=(64, 64), epochs=1, compile=mode, seeds=2, optimizer="sgd", lr=1e-3)
        cfg.data.train_subset = 600
        tr = trainer_for(cfg, mnist_small)
        tr.fit()
        assert tr.compiled == (mode == "on")
        runs[mode] = tr
    for (a, b) in zip(runs["off"].model.parameters(), runs["on"].model.parameters()):
        if layer_type == "spiking":  # a membrane a rounding error from threshold may flip a spike
            assert (~torch.isclose(a, b, rtol=1e-3, atol=1e-5)).float().mean() < 0.01
        else:
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)


def test_auto_compile_follows_the_measured_rule(mnist_small):
    from ffhw.device import use_compile
    cfg = small_config(hidden=(100, 100), epochs=100)  # 3000 images: 30 steps an epoch, 3000 in all
    model = FFNet(cfg, mnist_small.image_shape, 10)
    cpu = torch.device("cpu")
    assert not use_compile(cfg, model, cpu, 3000)  # too short to pay for compiling
    assert use_compile(cfg, model, cpu, 60000)  # small standard layers, long run
    assert not use_compile(cfg, model, torch.device("cuda"), 60000)  # not measured on GPUs
    wide = small_config(hidden=(2000, 2000), epochs=100, batch_size=400)  # 2 x 400 x 2000 = 1.6M values per activation tensor
    assert not use_compile(wide, FFNet(wide, mnist_small.image_shape, 10), cpu, 60000)
    quantized = small_config("quantized", hidden=(100, 100), epochs=100)
    assert not use_compile(quantized, FFNet(quantized, mnist_small.image_shape, 10), cpu, 60000)
    cfg.train.compile = "off"
    assert not use_compile(cfg, model, cpu, 60000)


@pytest.mark.parametrize("layer_type", ["standard", "spiking", "quantized"])
def test_bf16_autocast_trains(mnist_small, layer_type):
    """Mixed precision runs every layer type's step, hand-written backwards included (CPU bf16 here)."""
    cfg = small_config(layer_type, hidden=(64, 64), epochs=2, lr=3e-3, batch_size=50, autocast="bf16")
    if layer_type == "spiking":
        cfg.model.theta = 0.2  # rate units
    summary = trainer_for(cfg, mnist_small).fit()
    assert summary["test_acc_head"]["mean"] > 0.3, summary  # chance 0.1


@pytest.mark.parametrize("autocast", ["none", "bf16"])
def test_hard_negatives_follow_the_networks_goodness(mnist_small, autocast):
    """data.negatives = hard: after the first epoch each wrong label is drawn by the network's own goodness
    (at the training precision): never the true label, and the wrong label it rates best more often than 1/9."""
    cfg = small_config(hidden=(64, 64), epochs=2, lr=3e-3, batch_size=50, autocast=autocast)
    cfg.data.negatives = "hard"
    trainer = trainer_for(cfg, mnist_small)
    assert trainer.fit()["test_acc_head"]["mean"] > 0.3  # chance 0.1
    train = mnist_small.train
    _, negatives = trainer.epoch_plan(1)
    assert negatives.dtype == torch.long and not torch.any(negatives[0] == train.y)
    wrong = trainer.all_label_goodness(train)[0].float().scatter(-1, train.y[:, None], -float("inf"))
    share_best = (negatives[0] == wrong.argmax(-1)).float().mean().item()
    assert share_best > 1 / 9 + 0.03, share_best


FLUSH_CHECK = """
import torch
torch.set_num_threads(2)
torch.ones(1 << 20).mul(2.0)  # a parallel op: the OpenMP workers exist from here on
from ffhw.device import flush_denormals_in_all_threads
{call}
# denormals, from their bits (a float literal would be flushed on conversion); the product splits across threads
tiny = torch.full((1 << 22,), 1000, dtype=torch.int32).view(torch.float32)
print((tiny * 1.0 == 0).float().mean().item())
"""


def test_denormals_flush_in_every_thread():
    """torch.set_flush_denormal reaches the calling thread only; after the fix every OpenMP worker flushes
    too (a half-flushed product is what made the main thread wait for its worker in every matmul)."""
    import subprocess
    import sys
    if torch.get_num_threads() < 2:
        pytest.skip("needs two threads")

    def flushed_share(call):
        out = subprocess.run([sys.executable, "-c", FLUSH_CHECK.format(call=call)], capture_output=True, text=True,
                             check=True).stdout
        return float(out.strip().splitlines()[-1])

    if flushed_share("torch.set_flush_denormal(True)") == 1.0:
        pytest.skip("this torch build already flushes denormals in every thread")
    assert flushed_share("assert flush_denormals_in_all_threads()") == 1.0


@pytest.mark.parametrize("schedule", ["simultaneous", "greedy", "apl"])
@pytest.mark.parametrize("conv", [False, True], ids=["fc", "conv"])
def test_every_gradient_is_applied_and_cleared_in_its_own_step(mnist_small, mnist_conv, schedule, conv):
    """After each step no parameter holds a gradient: whatever a loss reached (under APL the block below and,
    for block 1, the learned label channel) belongs to an optimiser that stepped and cleared it. A leftover
    gradient would be applied a step late, by another optimiser."""
    from conftest import conv_config
    data = mnist_conv if conv else mnist_small
    cfg = conv_config(schedule=schedule, epochs=6) if conv else small_config(hidden=(32, 32, 32), schedule=schedule, epochs=3)
    tr = trainer_for(cfg, data)
    n = len(tr.model.layers)
    sums = {k: torch.zeros(n, 1) for k in ("loss", "layer_acc", "g_pos", "g_neg", "seen")}
    sums |= {"head_loss": torch.zeros(1), "head_acc": torch.zeros(1)}
    order, negatives = tr.epoch_plan(0)
    before = {name: p.detach().clone() for name, p in tr.model.named_parameters()}
    for step in range(2):
        tr.train_step(order[:, step * 8:(step + 1) * 8], negatives, tr.trained_layers(0), sums, step)
        leftover = [name for name, p in tr.model.named_parameters() if p.grad is not None]
        assert not leftover, f"step {step}: gradients left for a later step: {leftover}"
    if conv:  # the label channel learns with the blocks whose losses reach it
        assert not torch.equal(before["encoding.weight"], tr.model.encoding.weight)


def test_train_seconds_count_the_epochs_before_a_resume(mnist_small, tmp_path):
    cfg = small_config(epochs=3)
    run = RunDir.create(tmp_path / "killed", cfg)
    with pytest.raises(KeyboardInterrupt):
        trainer_for(cfg, mnist_small, run, StopAfter(2)).fit()
    resumed = trainer_for(cfg, mnist_small, run)
    resumed.load_state_dict(run.load_checkpoint(), run.read_metrics())
    summary = resumed.fit()
    epochs = {r["epoch"]: r["value"] for r in run.read_metrics() if r["metric"] == "epoch_seconds" and r["seed"] == 0}
    assert sorted(epochs) == [1, 2, 3]
    assert summary["train_seconds"] == pytest.approx(sum(epochs.values()))
    assert summary["train_seconds"] > epochs[3]


def test_a_deep_network_compiles_once(mnist_small):
    """No graph break in the step (a break inside the layer loop made torch.compile give up on the loop and
    compile each call inside it per layer index, until the recompile limit sent deep networks back to eager):
    the compiled frames (the step's two batch parities, the head, the evaluation kernels) do not grow with depth."""
    from torch._dynamo.utils import counters
    frames = {}
    for depth in (3, 12):
        cfg = small_config(hidden=[32] * depth, epochs=1, compile="on", seeds=2)  # seed-batched: the case that broke
        cfg.data.train_subset = 400
        tr = trainer_for(cfg, mnist_small)
        counters.clear()
        tr.fit()
        assert not counters["graph_break"], dict(counters["graph_break"])
        frames[depth] = counters["frames"]["total"]
    assert frames[12] == frames[3] <= 8, frames


def test_sub_epoch_probes_record_fractional_epochs_and_leave_training_untouched(mnist_small, tmp_path):
    from ffhw.model import FFNet
    from ffhw.records import RunDir
    from ffhw.train import Trainer
    models, rows = [], None
    for probes in (0, 4):
        cfg = small_config(hidden=(30, 30), epochs=3, seeds=2, probes_per_epoch=probes, probe_epochs=2, probe_size=200,
                           batch_size=75)  # 40 batches: probes after batches 10, 20, 30, 40
        cfg.validate()
        model = FFNet(cfg, mnist_small.image_shape, mnist_small.num_classes)
        run = RunDir.create(tmp_path / f"p{probes}", cfg)
        Trainer(cfg, mnist_small, model, torch.device("cpu"), run).fit()
        models.append(model)
        rows = run.read_metrics()
    times = sorted({r["epoch"] for r in rows if r["split"] == "probe"})
    assert times == [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 3]  # 4 per epoch for 2 epochs, then each epoch end
    assert {r["metric"] for r in rows if r["split"] == "probe"} >= {"layer_acc", "layer_acc10"}
    for a, b in zip(models[0].layers, models[1].layers):
        assert torch.equal(a.weight, b.weight)
