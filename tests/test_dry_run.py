"""Dry run of Trainer.fit on torch's `meta` device: every tensor has a shape and no data.

An operation that mixes devices (a tensor made on the CPU meeting one on the training device) fails, and so
does any read of a value on the host (`.item()`, `bool()`, `.tolist()`, `nonzero`, indexing with a host list
built from device values): on a GPU each of those is a synchronisation that stalls the step. So a step that
passes here runs on any device without host syncs. Shims stand in only where torch has no meta support
(generators) and for the once-per-epoch reads of metrics, which are meant to reach the host.
"""
import pytest
import torch

from conftest import conv_config, small_config
from ffhw import model as model_mod
from ffhw import train as train_mod
from ffhw.data import Data, Split
from ffhw.layers import CONV_TYPES, LAYER_TYPES
from ffhw.model import FFNet
from ffhw.train import Trainer

META = torch.device("meta")
OPTIONS = {"standard": {}, "quantized": {"weight_bits": 4}, "spiking": {"steps": 2}}


def meta_data(n_train=16, n_eval=8, shape=(1, 28, 28)) -> Data:
    def split(n):
        return Split(torch.empty(n, *shape, dtype=torch.uint8, device=META), torch.empty(n, dtype=torch.long, device=META))
    return Data("mnist", split(n_train), split(n_eval), split(n_eval), 10)


@pytest.fixture
def meta_shims(monkeypatch):
    """Generators do not exist on meta: draw from the (meta) global stream instead. Per-epoch metric rows
    read values on the host by design: give them placeholders."""
    real_generator = model_mod.device_generator

    def generator(seed, device="cpu"):
        return None if torch.device(device).type == "meta" else real_generator(seed, device)

    monkeypatch.setattr(model_mod, "device_generator", generator)
    monkeypatch.setattr(train_mod, "device_generator", generator)

    def rows(seeds, epoch, split, values, layer_names=None):  # the real rows' layout, 0.0 for what meta lacks
        out = []
        for key, value in values.items():
            scope, metric = key.split("/")
            names = (layer_names or [str(k) for k in range(value.shape[0])]) if scope == "layer" else ["net"]
            out += [dict(seed=sd, epoch=epoch, split=split, layer=name, metric=metric, value=0.0)
                    for name in names for sd in seeds]
        return out

    monkeypatch.setattr(train_mod, "metric_rows", rows)
    monkeypatch.setattr(train_mod, "non_finite", lambda sums, layers, seeds: None)
    monkeypatch.setattr(train_mod, "layer_health", lambda metrics, seeds: [])


def dry_config(layer_type, conv, seeds, schedule):
    options = OPTIONS.get(layer_type, {})
    if conv:
        cfg = conv_config(layer_type, options, epochs=6 if schedule == "greedy" else 1, seeds=seeds,
                          schedule=schedule, batch_size=8, compile="off")
    else:
        cfg = small_config(layer_type, hidden=(16, 16, 16), epochs=1, seeds=seeds, schedule=schedule, batch_size=8,
                           compile="off")
        cfg.model.layer = dict(options)
    cfg.train.epochs = cfg.depth() if schedule == "greedy" else 1  # greedy: one epoch per layer
    return cfg.validate()


CASES = [(name, False) for name in sorted(LAYER_TYPES)] + [(name, True) for name in sorted(CONV_TYPES)]


@pytest.mark.parametrize("schedule", ["simultaneous", "greedy", "apl"])
@pytest.mark.parametrize("seeds", [1, 2])
@pytest.mark.parametrize("layer_type,conv", CASES, ids=[f"{n}-{'conv' if c else 'fc'}" for n, c in CASES])
def test_fit_runs_on_meta_without_device_mixing_or_host_reads(meta_shims, layer_type, conv, seeds, schedule):
    cfg = dry_config(layer_type, conv, seeds, schedule)
    data = meta_data()
    model = FFNet(cfg, data.image_shape, data.num_classes).to(META)
    trainer = Trainer(cfg, data, model, META)
    summary = trainer.fit()
    assert summary["status"] == "complete" and summary["device"] == "meta"
    assert all(p.device.type == "meta" for p in model.parameters())


def standard_layer_fit_with(monkeypatch, after_forward):
    """A standard FC dry run whose layers apply `after_forward` to each output."""
    from ffhw.layers.standard import StandardLayer
    real_forward = StandardLayer.forward
    monkeypatch.setattr(StandardLayer, "forward", lambda self, x: after_forward(real_forward(self, x)))
    cfg = dry_config("standard", False, 1, "simultaneous")
    data = meta_data()
    Trainer(cfg, data, FFNet(cfg, data.image_shape, 10).to(META), META).fit()


def test_a_host_read_inside_a_step_fails_the_dry_run(meta_shims, monkeypatch):
    """The dry run can tell: a layer that reads a value on the host in its forward fails it."""
    def host_read(out):
        if out.act.mean() > 0:  # bool() of a device value: a synchronisation on a GPU
            pass
        return out

    with pytest.raises(RuntimeError, match="cannot be called on meta tensors"):
        standard_layer_fit_with(monkeypatch, host_read)


def test_a_tensor_made_on_the_cpu_inside_a_step_fails_the_dry_run(meta_shims, monkeypatch):
    def mixing(out):
        out.act = out.act + torch.zeros(out.act.shape[-1])  # made on the CPU, not on the layer's device
        return out

    with pytest.raises(RuntimeError, match="device"):
        standard_layer_fit_with(monkeypatch, mixing)


@pytest.mark.parametrize("layer_type", sorted(LAYER_TYPES))
def test_nested_prefixes_and_probes_run_on_meta(meta_shims, layer_type):
    """The nested design's prefix heads train inside the step and probes evaluate between steps, on the
    training device like everything else."""
    cfg = dry_config(layer_type, False, 2, "simultaneous")
    cfg.model.prefix_depths, cfg.train.probes_per_epoch, cfg.train.probe_size = [1, 2], 2, 4
    cfg.validate()
    data = meta_data()
    model = FFNet(cfg, data.image_shape, data.num_classes).to(META)
    trainer = Trainer(cfg, data, model, META)
    assert trainer.fit()["status"] == "complete"
    assert {r["epoch"] for r in trainer.rows if r["split"] == "probe"} == {0.0, 0.5, 1.0}
    assert any(r["metric"] == "acc_head@2" for r in trainer.rows)
