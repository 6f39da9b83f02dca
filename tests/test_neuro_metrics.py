"""NeuroBench's metric definitions (ffhw/neuro_metrics.py) on hand-counted cases and small networks."""
import pytest
import torch
from torch import nn

from ffhw.neuro_metrics import connection_sparsity, footprint, neurobench_metrics, synaptic_operations


def linear(weight, bias=None):
    w = torch.tensor(weight, dtype=torch.float32)
    m = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        m.weight.copy_(w)
        if bias is not None:
            m.bias.copy_(torch.tensor(bias))
    return m


def test_linear_ops_are_nonzero_input_times_nonzero_weight():
    m = linear([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]], bias=[5.0, 5.0])  # the bias is not a synaptic op
    # analog input, x1 = 0: out 0 uses x0 and x2, out 1 uses x2 -> 3 MACs; dense: 2 outputs x 3 inputs
    assert synaptic_operations(m, torch.tensor([[1.0, 0.0, 0.5]])) == (3.0, 6.0, False)
    # spikes: the same count, as accumulates; a batch of two sums its samples
    assert synaptic_operations(m, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])) == (3.0, 12.0, True)
    assert connection_sparsity([m]) == pytest.approx(3 / 6)


def test_conv_ops_count_each_tap_inside_the_image():
    m = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    nn.init.constant_(m.weight, 0.5)
    spike = torch.zeros(1, 1, 3, 3)
    spike[0, 0, 1, 1] = 1.0
    effective, dense, spiking = synaptic_operations(m, spike)
    assert spiking and effective == 9.0  # the centre spike reaches all 9 outputs
    assert dense == 4 * 4 + 4 * 6 + 9  # corners see 4 taps, edges 6, the centre 9 (padding is not counted)


def test_footprint_counts_parameters_and_buffers_at_their_storage_size():
    m = linear([[1.0, 2.0]], bias=[0.0])
    m.register_buffer("scale", torch.zeros(3, dtype=torch.float64))
    assert footprint([m]) == 3 * 4 + 3 * 8


def test_against_the_neurobench_package_where_installed():
    layers = pytest.importorskip("neurobench.metrics.utils.layers")
    torch.manual_seed(0)
    lin = nn.Linear(30, 7)
    lin.weight.data[lin.weight.data.abs() < 0.05] = 0
    conv = nn.Conv2d(3, 5, 3, padding=1)
    for m, x in [(lin, torch.relu(torch.randn(6, 30))), (lin, (torch.rand(6, 30) > 0.7).float()),
                 (conv, (torch.rand(2, 3, 8, 8) > 0.8).float())]:
        effective, spiking = layers.single_layer_MACs(x, m)
        dense, _ = layers.single_layer_MACs(x, m, total=True)
        assert synaptic_operations(m, x) == (float(effective), float(dense), spiking)


def small_net(layer_type, **options):
    from conftest import small_config
    from ffhw.model import FFNet
    cfg = small_config(layer_type, hidden=(40, 30))
    cfg.model.layer = options
    torch.manual_seed(0)
    return FFNet(cfg.validate(), (1, 28, 28), 10).eval()


def test_spiking_network_counts_agree_with_the_cost_model(mnist_small):
    from ffhw.hardware import cost_model
    model = small_net("spiking", steps=4, init_rate=0.0)
    images = mnist_small.test.images(slice(0, 50))
    nb, cost = neurobench_metrics(model, images, batch=20), cost_model(model, images)
    first, second = nb["layers"]
    assert nb["passes"] == 500  # every label of every image
    assert first["effective_acs"] == 0 and first["dense_synops"] == 784 * 40  # analog input: MACs, once
    assert first["effective_macs"] == pytest.approx(cost["layers"][0]["nonzero_macs"], rel=1e-6)
    # spike input: ACs over all T steps = input spikes x fan-out, as ffhw counts them
    assert second["effective_macs"] == 0 and second["dense_synops"] == 4 * 40 * 30
    assert second["effective_acs"] == pytest.approx(cost["layers"][1]["acs"], rel=1e-5)
    assert first["activation_sparsity"] == pytest.approx(cost["layers"][0]["output_sparsity"], abs=1e-6)
    assert nb["synaptic_operations"]["dense"] == 784 * 40 + 4 * 40 * 30


def test_quantized_weights_that_round_to_zero_are_zero_connections():
    model = small_net("quantized", weight_bits=3, act_bits=4)
    units = [model.layers[k].export_module(0) for k in range(2)]
    quantized = [u.unit.linear.quant_weight().value for u in units]
    zeros = sum(int((w == 0).sum()) for w in quantized) / sum(w.numel() for w in quantized)
    assert zeros > 0.05  # 3-bit weights: many round to zero, while the float shadow weights have none
    assert connection_sparsity(units) == pytest.approx(zeros)
    assert all((u.unit.linear.weight != 0).all() for u in units)
