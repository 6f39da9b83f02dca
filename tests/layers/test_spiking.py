import pytest
import torch

from ffhw.config import ModelConfig
from ffhw.layers import get_layer_type
from ffhw.layers.spiking import rate_encode
from ffhw.model import seed_generators


def make(in_features=30, out_features=20, **options):
    cls = get_layer_type("spiking")
    return cls(0, in_features, out_features, 2, ModelConfig(norm="rms"), cls.resolve_options(options),
               seed_generators([0, 1], "init", 0))


def test_outputs_are_binary_per_step_and_steps_honoured():
    for steps in (1, 5):
        layer = make(steps=steps)
        out = layer(torch.rand(2, 7, 30) * 3)
        assert out.out.shape == (2, 7, steps, 20)
        assert set(out.out.unique().tolist()) <= {0.0, 1.0}
        assert torch.allclose(out.act, out.out.mean(2))  # goodness reads the firing rates


def test_spike_trains_feed_the_next_layer_with_one_matmul_and_rates_option():
    first, second = make(steps=4), make(in_features=20, out_features=10, steps=4)
    spikes = first(torch.rand(2, 3, 30)).out
    out = second(spikes)
    assert out.out.shape == (2, 3, 4, 10)
    rates = make(steps=4, next_input="rates")(torch.rand(2, 3, 30)).out
    assert rates.shape == (2, 3, 20) and torch.all((rates >= 0) & (rates <= 1))


def test_rate_encoding_is_reproducible_by_seed_and_clamped():
    x = torch.rand(4, 50) * 1.5 - 0.2
    a = rate_encode(x, 6, torch.Generator().manual_seed(3))
    b = rate_encode(x, 6, torch.Generator().manual_seed(3))
    c = rate_encode(x, 6, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 6, 50)
    assert torch.all(a[x.unsqueeze(1).expand_as(a) <= 0] == 0) and torch.all(a[x.unsqueeze(1).expand_as(a) >= 1] == 1)


def test_surrogate_gradient_reaches_weights_through_time():
    layer = make(steps=4, surrogate="atan")
    layer(torch.rand(2, 5, 30)).act.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def calibrated_net(seeds, seed=0, conv=False, init_rate=0.2):
    from conftest import conv_config, small_config
    from ffhw.model import FFNet
    options = {"init_rate": init_rate, "steps": 4}
    cfg = conv_config("spiking", options, block_norm="none", seeds=seeds, seed=seed) if conv else \
        small_config("spiking", hidden=(50,) * 6, seeds=seeds, seed=seed)
    cfg.model.layer = options
    net = FFNet(cfg.validate(), (1, 28, 28), 10)
    images = (torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    net.calibrate(images)
    net.eval()
    with torch.no_grad():
        out, _ = net.first_layer_all_labels(images)
        outs = [out, *net.forward_layers(out.out, start=1)]
    return net, [o.act.flatten(2).mean((1, 2)) for o in outs]


def test_calibration_sets_every_layer_firing_rate_fc_and_conv():
    """Data-dependent init: each layer fires at init_rate on the calibration images, deep ones included
    (uncalibrated, the deep layers of such a network start silent)."""
    for conv in (False, True):
        _, rates = calibrated_net(2, conv=conv)
        for rate in rates:
            assert torch.allclose(rate, torch.full_like(rate, 0.2), atol=0.01), (conv, rates)
    _, plain = calibrated_net(1, init_rate=0.0)
    assert plain[-1].item() < 0.05  # the silence calibration removes


def test_calibration_of_stacked_seeds_equals_separate():
    both, _ = calibrated_net(2)
    alone, _ = calibrated_net(1, seed=1)
    for a, b in zip(both.layers, alone.layers):
        # the rate is a step function of the gain: a spike flipped by the batched product's float order (thread
        # count) moves a deep layer's gain by ~0.2%; a gain shared across seeds would move it by their spread
        assert torch.allclose(a.weight[1], b.weight[0], rtol=1e-2, atol=1e-6)


def spiking_conv_net(block_norm, seeds=2, conv_pool="spikes"):
    from conftest import conv_config
    from ffhw.model import FFNet
    cfg = conv_config("spiking", {"steps": 4, "conv_pool": conv_pool}, block_norm=block_norm, seeds=seeds)
    return FFNet(cfg, (1, 28, 28), 10)


def block_rates(net, images):
    with torch.no_grad():
        out, _ = net.first_layer_all_labels(images)
        outs = [out, *net.forward_layers(out.out, start=1)]
    return [o.act.flatten(2).mean((1, 2)) for o in outs]


IMAGES = (torch.rand(24, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.7).float()


def test_conv_normaliser_acts_on_every_block_and_keeps_deep_blocks_firing():
    """The block normaliser acts on every spiking block's current, spike-fed ones included: batch and
    layer norm give different spikes from block 1 on, and no block starts silent (without a normaliser
    the deep blocks of this network do)."""
    rates = {}
    for norm in ("batch", "layer", "none"):
        torch.manual_seed(0)
        net = spiking_conv_net(norm).train()
        assert (norm == "none") == (not any(n in name for name, _ in net.layers[3].named_parameters()
                                            for n in ("bn.", "ln_")))
        rates[norm] = block_rates(net, IMAGES)
    for norm in ("batch", "layer"):
        assert all(0.02 < r.min() and r.max() < 0.6 for r in rates[norm]), (norm, rates[norm])
    assert any(not torch.allclose(b, l) for b, l in zip(rates["batch"][1:], rates["layer"][1:]))
    assert rates["none"][-1].max() < 0.02, rates["none"]


@pytest.mark.parametrize("conv_pool", ["spikes", "current"])
def test_folded_batch_norm_gives_the_same_spikes(conv_pool):
    """Evaluation and export run batch norm folded into the conv: the folded current equals batch norm of
    the conv current, and the exported module gives the layer's spikes exactly (either pooling)."""
    net = spiking_conv_net("batch", conv_pool=conv_pool).train()
    gen = torch.Generator().manual_seed(2)
    for layer in net.layers:  # trained-looking normalisers: non-trivial affine maps and running statistics
        with torch.no_grad():
            layer.bn.weight.copy_(0.5 + torch.rand(layer.bn.weight.shape, generator=gen))
            layer.bn.bias.copy_(torch.randn(layer.bn.bias.shape, generator=gen) * 0.3)
    block_rates(net, IMAGES)  # training-mode calls update the running statistics
    net.eval()
    x, _ = net.first_layer_all_labels(IMAGES)
    inp = x.out
    for k, layer in enumerate(net.layers[1:], start=1):
        with torch.no_grad():
            folded = layer.current(inp.flatten(1, 2))
            unfolded = layer.pool_current(layer.normalize_block(layer.conv(inp.flatten(1, 2), layer.weight)))
            assert torch.allclose(folded, unfolded, atol=1e-5), k
            out = layer(inp)
            seed = 1
            rates, spikes = layer.export_module(seed).eval()(inp[seed])
            assert torch.equal(spikes, out.out[seed]) and torch.equal(rates, out.act[seed]), k
        inp = out.out


def test_current_pooling_keeps_spikes_binary_at_the_pooled_size_without_or():
    """conv_pool = current: neurons sit at the pooled resolution and integrate the average-pooled current,
    so a pooled output is one neuron's spike (binary), not the OR of four, and fires less than the OR does."""
    torch.manual_seed(0)
    ored = block_rates(spiking_conv_net("batch").train(), IMAGES)
    torch.manual_seed(0)
    net = spiking_conv_net("batch", conv_pool="current").train()
    out, _ = net.first_layer_all_labels(IMAGES)
    assert out.out.shape[-3:] == net.layers[0].out_shape and set(out.out.unique().tolist()) <= {0.0, 1.0}
    pooled = block_rates(net, IMAGES)
    pooling = [k for k, layer in enumerate(net.layers) if layer.pool]
    assert pooling and all(pooled[k].mean() < ored[k].mean() for k in pooling), (pooled, ored)
    assert all(0.02 < r.min() for r in pooled), pooled
