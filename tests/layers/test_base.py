import pytest
import torch

from ffhw.config import RunConfig
from ffhw.layers.base import FFLayer, normalize, relu
from ffhw.model import FFNet


def test_normalisations():
    x = torch.randn(2, 5, 30) * 7
    assert torch.allclose(normalize(x, "rms").square().mean(-1), torch.ones(2, 5), atol=1e-5)
    assert torch.allclose(normalize(x, "l2").norm(dim=-1), torch.ones(2, 5), atol=1e-5)
    assert torch.equal(normalize(x, "none"), x)


def test_straight_through_relu_gradient():
    z = torch.tensor([-1.0, 2.0], requires_grad=True)
    h = relu(z.clone(), straight_through=True)  # relu works in place on a fresh pre-activation
    assert torch.equal(h, torch.tensor([0.0, 2.0]))
    h.sum().backward()
    assert torch.equal(z.grad, torch.ones(2))
    z.grad = None
    relu(z.clone(), straight_through=False).sum().backward()
    assert torch.equal(z.grad, torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("layer_type,options", [("standard", {}), ("spiking", {}), ("quantized", {})])
@pytest.mark.parametrize("norm", ["rms", "l2", "none"])
@pytest.mark.parametrize("encoding", ["onehot", "border", "concat"])
def test_all_label_fast_path_equals_full_inputs(layer_type, options, norm, encoding):
    cfg = RunConfig()
    cfg.model.layer_type, cfg.model.layer, cfg.model.norm, cfg.model.hidden = layer_type, options, norm, [40, 30]
    cfg.data.encoding = encoding
    cfg.train.seeds = 2
    net = FFNet(cfg, (1, 28, 28), 10).eval()
    images = torch.rand(6, 1, 28, 28)
    base = net.expand_seeds(net.encoding.base(images))
    fast = net.layers[0].forward_labels(base, net.encoding.patterns).act
    full = FFLayer.forward_labels(net.layers[0], base, net.encoding.patterns).act
    tol = 1e-4 if layer_type == "standard" else 0.0
    if layer_type == "spiking":  # a membrane a rounding error from threshold may flip one spike
        assert (fast != full).float().mean() < 1e-3
    else:
        assert torch.allclose(fast, full, atol=tol, rtol=1e-4)
