"""The cost model on conv networks (the learned label channel)."""
import pytest

from conftest import conv_config
from ffhw.hardware import cost_model
from ffhw.model import FFNet


@pytest.mark.parametrize("layer_type,options", [("standard", {}), ("quantized", {"weight_bits": 4}),
                                                ("spiking", {"steps": 2})])
def test_cost_model_of_a_conv_network(mnist_conv, layer_type, options):
    cfg = conv_config(layer_type, options)
    model = FFNet(cfg, mnist_conv.image_shape, 10)
    images = mnist_conv.test.images(slice(0, 16))
    cost = cost_model(model, images)
    assert [e["layer"] for e in cost["layers"]] == list(range(6))
    first = cost["layers"][0]
    c_out = model.layers[0].out_shape[0]
    assert first["macs"] == c_out * 2 * 9 * 28 * 28  # image + label channel, 3x3, same padding
    # block 0's inputs: the image's non-zero pixels and the label channel (dense, learned)
    image_density = (images != 0).float().mean().item()
    assert first["input_density"] == pytest.approx((image_density + 1.0) / 2, abs=1e-6)
    assert all(e["energy_pj_estimate"] > 0 for e in cost["layers"])
    assert cost["energy_per_classification_pj_estimate"]["goodness"] > 0
