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
