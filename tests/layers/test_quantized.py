import pytest
import torch

from ffhw.config import ModelConfig
from ffhw.errors import ConfigError
from ffhw.layers import get_layer_type
from ffhw.model import seed_generators


def make(weight_bits, scaling="tensor", seeds=2, act_bits=8):
    cls = get_layer_type("quantized")
    opts = cls.resolve_options({"weight_bits": weight_bits, "scaling": scaling, "act_bits": act_bits})
    return cls(0, 64, 32, seeds, ModelConfig(), opts, seed_generators(list(range(seeds)), "init", 0))


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("scaling", ["tensor", "channel"])
def test_weights_take_at_most_2_to_the_b_values_per_scale_group(bits, scaling):
    layer = make(bits, scaling)
    for unit in layer.units_per_seed:
        qw = unit.linear.quant_weight()
        groups = qw.value if scaling == "channel" else qw.value.reshape(1, -1)
        for row in groups:
            assert len(torch.unique(row)) <= 2 ** bits
        if bits == 2:  # narrow range: ternary
            assert set(qw.int().unique().tolist()) <= {-1, 0, 1}
    assert torch.all(layer.weight_levels() <= 2 ** bits)


def test_binary_weights_have_two_levels():
    layer = make(1)
    assert layer.weight_levels().tolist() == [2.0, 2.0]


def test_activations_are_quantized_to_act_bits():
    layer = make(8, act_bits=2)
    out = layer(torch.rand(2, 50, 64))
    for s in range(2):
        assert len(torch.unique(out.act[s])) <= 4


def test_bad_options_are_clear_errors():
    cls = get_layer_type("quantized")
    with pytest.raises(ConfigError, match="weight_bits"):
        cls.resolve_options({"weight_bits": 16})
    with pytest.raises(ConfigError, match="unknown option"):
        cls.resolve_options({"bits": 4})


def test_deployed_bytes_shrink_with_bits():
    assert make(4).deployed_weight_bytes() < make(8).deployed_weight_bytes() < 64 * 32 * 4
