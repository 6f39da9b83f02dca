import pytest
import torch

from ffhw.config import ModelConfig
from ffhw.layers.ops import normalize
from ffhw.layers.quantized import QuantUnit
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
    for seed in range(layer.seeds):
        qw = layer.export_unit(seed).linear.quant_weight()  # Brevitas's view of the trained weights
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


@pytest.mark.parametrize("options", [{}, {"thresholds": "learned"},
                                     {"scaling": "channel", "weight_bits": 4, "act_bits": 4, "thresholds": "learned"},
                                     {"weight_bits": 2, "input_bits": 6}, {"weight_bits": 1}])
def test_seed_batched_layer_trains_like_one_brevitas_unit_per_seed(options):
    """The seed-batched quantizers restate Brevitas's: each seed's outputs, weights and learned clipping
    thresholds follow its own Brevitas QuantUnit through statistics collection and into training."""
    cls = get_layer_type("quantized")
    opts = cls.resolve_options(options)
    seeds, collect = 2, 3
    layer = cls(0, 30, 20, seeds, ModelConfig(), opts, seed_generators(list(range(seeds)), "init", 0),
                collect_stats_steps=collect)
    units = [QuantUnit(30, 20, opts, layer.weight[s].detach().clone(), collect_stats_steps=collect) for s in range(seeds)]
    opt_layer = torch.optim.Adam(layer.parameters(), lr=1e-2, weight_decay=3e-4)
    opt_units = [torch.optim.Adam(u.parameters(), lr=1e-2, weight_decay=3e-4) for u in units]
    g = torch.Generator().manual_seed(0)
    scaling = lambda q: q.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.value  # noqa: E731
    for step in range(2 * collect + 2):
        x = torch.rand(seeds, 16, 30, generator=g)
        h = layer(x).act
        h.square().sum().backward()
        opt_layer.step()
        opt_layer.zero_grad()
        for s, (unit, opt) in enumerate(zip(units, opt_units)):
            out = unit(normalize(x[s], "rms"))
            assert torch.allclose(h[s], out, atol=1e-5), (step, s)
            out.square().sum().backward()
            opt.step()
            opt.zero_grad()
    for s, unit in enumerate(units):
        assert torch.allclose(layer.weight[s], unit.linear.weight.t(), atol=1e-4)
        assert torch.allclose(layer.act_quant.value[s], scaling(unit.act), rtol=1e-4)
        assert torch.allclose(layer.input_quant.value[s], scaling(unit.input_quant), rtol=1e-4)
    layer.eval()
    x = torch.rand(seeds, 16, 30, generator=g)
    for s in range(seeds):  # the export unit reproduces the trained layer
        assert torch.allclose(layer(x).act[s], layer.export_unit(s)(normalize(x[s], "rms")), atol=1e-5)


def test_models_saved_with_one_brevitas_unit_per_seed_still_load():
    """Checkpoints from before FC layers were seed-batched hold `units_per_seed.*`: they load unchanged."""
    layer = make(4, seeds=2)
    layer.train()
    for _ in range(3):
        layer(torch.rand(2, 8, 64))
    units = [layer.export_unit(s) for s in range(2)]
    legacy = {f"units_per_seed.{s}.{k}": v for s, u in enumerate(units) for k, v in u.state_dict().items()}
    fresh = make(4, seeds=2)
    fresh.load_state_dict(legacy)
    fresh.eval(), layer.eval()
    x = torch.rand(2, 8, 64)
    assert torch.allclose(fresh(x).act, layer(x).act, atol=1e-6)


@pytest.mark.parametrize("options", [{}, {"thresholds": "learned"}, {"scaling": "channel", "weight_bits": 4, "act_bits": 4, "input_bits": 6},
                                     {"weight_bits": 1}])
def test_seed_batched_conv_block_trains_like_one_brevitas_unit_per_seed(options):
    """Conv blocks: seeds as groups of one convolution, each following its own Brevitas QuantConvUnit."""
    from ffhw.layers.quantized_conv import QuantConvUnit
    cls = get_layer_type("quantized", conv=True)
    opts = cls.resolve_options(options)
    seeds, collect = 2, 3
    model = ModelConfig(block_norm="none")
    block = cls(0, (3, 8, 8), 5, True, seeds, model, opts, seed_generators(list(range(seeds)), "init", 0),
                collect_stats_steps=collect)
    units = [QuantConvUnit(3, 5, True, opts, block.weight[s].detach().clone(), collect_stats_steps=collect)
             for s in range(seeds)]
    opt_block = torch.optim.Adam(block.parameters(), lr=1e-2, weight_decay=3e-4)
    opt_units = [torch.optim.Adam(u.parameters(), lr=1e-2, weight_decay=3e-4) for u in units]
    g = torch.Generator().manual_seed(0)
    for step in range(2 * collect + 2):
        x = torch.randn(seeds, 6, 3, 8, 8, generator=g)
        h = block(x).act
        h.square().sum().backward()
        opt_block.step()
        opt_block.zero_grad()
        for s, (unit, opt) in enumerate(zip(units, opt_units)):
            out = unit(x[s])
            # A grouped convolution sums in another order than a single one, so a value on a rounding
            # boundary may land one output step apart (as integer kernels may); nearly all are identical.
            diff = (h[s] - out).abs()
            levels = out.detach().unique()
            step_size = levels.diff().min()  # the output quantisation step
            assert diff.max() <= step_size * 1.001, (step, s)
            assert (diff < 0.01 * step_size).float().mean() >= 0.98, (step, s)
            out.square().sum().backward()
            opt.step()
            opt.zero_grad()
    for s, unit in enumerate(units):
        assert torch.allclose(block.weight[s], unit.conv.weight, atol=5e-3)
    block.eval()
    x = torch.randn(seeds, 6, 3, 8, 8, generator=g)
    for s in range(seeds):
        assert torch.allclose(block(x).act[s], block.export_unit(s)(x[s]), atol=1e-5)


def test_conv_blocks_saved_with_one_brevitas_unit_per_seed_still_load():
    from ffhw.layers.quantized_conv import QuantConvUnit
    cls = get_layer_type("quantized", conv=True)
    opts = cls.resolve_options({})
    make_block = lambda: cls(0, (3, 8, 8), 5, True, 2, ModelConfig(block_norm="none"), opts,  # noqa: E731
                             seed_generators([0, 1], "init", 0))
    block = make_block()
    block.train()
    for _ in range(3):
        block(torch.randn(2, 4, 3, 8, 8))
    legacy = {f"units_per_seed.{s}.{k}": v for s in range(2) for k, v in block.export_unit(s).state_dict().items()}
    assert isinstance(block.export_unit(0), QuantConvUnit)
    fresh = make_block()
    fresh.load_state_dict(legacy)
    fresh.eval(), block.eval()
    x = torch.randn(2, 4, 3, 8, 8)
    assert torch.allclose(fresh(x).act, block(x).act, atol=1e-6)


def test_running_thresholds_follow_the_activations_through_training_and_export():
    """thresholds = running: the clipping thresholds stay the percentile statistics' running average after
    the 300 steps that learned thresholds collect; export carries them; learned thresholds stop following."""
    cls = get_layer_type("quantized")
    layers = {}
    for mode in ("learned", "running"):
        opts = cls.resolve_options({"thresholds": mode})
        layer = cls(0, 64, 32, 2, ModelConfig(norm="none"), opts, seed_generators([0, 1], "init", 0)).train()
        gen = torch.Generator().manual_seed(0)
        for step in range(400):  # inputs grow threefold after the statistics phase
            scale = 1.0 if step < 300 else 3.0
            layer(scale * torch.rand(2, 50, 64, generator=gen))
        layers[mode] = layer
    learned, running = (layers[m].input_quant.deployed_threshold() for m in ("learned", "running"))
    assert torch.all(running > 2.5 * learned)  # the running statistics saw the larger inputs
    unit = layers["running"].export_unit(1)
    act = "act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.value"
    assert torch.allclose(unit.state_dict()[f"input_quant.{act}"], running[1])
    with pytest.raises(ConfigError, match="thresholds"):
        cls.resolve_options({"thresholds": "adaptive"})


@pytest.mark.parametrize("saved_thresholds", ["running", None])
def test_model_saved_without_the_regime_buffer_loads_the_regime_its_config_names(tmp_path, saved_thresholds):
    """Models saved before the `stats_steps` buffer existed: a config naming `thresholds` is what ran; a config
    without the option predates it, and those runs used learned thresholds."""
    from conftest import small_config
    from ffhw.model import FFNet, load_model
    cfg = small_config("quantized", hidden=(20, 10))
    cfg.model.layer = {"thresholds": "running"} if saved_thresholds else {"thresholds": "learned"}
    model = FFNet(cfg.validate(), (1, 28, 28), 10)
    layer = model.layers[0]
    with torch.no_grad():  # a trained state: running statistics far from any learned value
        layer.act_quant.buffer.fill_(7.0)
        layer.act_quant.value.fill_(1e-8)
        layer.act_quant._advance(5000)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("stats_steps")}
    config = cfg.to_dict()
    if saved_thresholds is None:
        del config["model"]["layer"]["thresholds"]
    torch.save({"config": config, "state_dict": state}, tmp_path / "model.pt")
    loaded, _ = load_model(tmp_path)
    expected = 7.0 if saved_thresholds == "running" else 1e-8
    assert loaded.layers[0].act_quant.deployed_threshold()[0].item() == pytest.approx(expected, rel=1e-6)


def test_parity_is_judged_in_the_exported_seeds_own_output_step():
    layer = make(8, seeds=2)
    with torch.no_grad():
        layer.act_quant.buffer.copy_(torch.tensor([2.55, 5.1]))  # steps 0.01 and 0.02
    reference = torch.zeros(4, 32)
    one_step_of_seed_1 = reference + 0.02
    assert layer.parity(reference, one_step_of_seed_1, seed=1)["value"] == pytest.approx(1.0)
    assert layer.parity(reference, one_step_of_seed_1, seed=0)["value"] == pytest.approx(2.0)
    assert not layer.parity(reference, one_step_of_seed_1, seed=0)["ok"]
