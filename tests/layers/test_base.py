import pytest
import torch

from ffhw.config import RunConfig
from ffhw.layers import LAYER_TYPES
from ffhw.layers.base import FFLayer
from ffhw.layers.ops import normalize, relu
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


@pytest.mark.parametrize("layer_type,options", [(name, {}) for name in sorted(LAYER_TYPES)])
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
    fast, fast_neutral = net.layers[0].forward_labels(base, net.encoding.patterns, net.encoding.neutral)
    full, full_neutral = FFLayer.forward_labels(net.layers[0], base, net.encoding.patterns, net.encoding.neutral)
    tol = 1e-4 if layer_type == "standard" else 0.0
    for fast, full in ((fast.act, full.act), (fast_neutral.act, full_neutral.act)):
        if layer_type == "spiking":  # a membrane a rounding error from threshold may flip one spike
            assert (fast != full).float().mean() < 1e-3
        else:
            assert torch.allclose(fast, full, atol=tol, rtol=1e-4)


@pytest.mark.parametrize("layer_type", sorted(LAYER_TYPES))
@pytest.mark.parametrize("norm", ["rms", "l2", "none"])
@pytest.mark.parametrize("encoding", ["onehot", "border", "concat"])
def test_training_label_sets_equal_full_inputs_with_gradients(layer_type, norm, encoding):
    """Layer 0 of a training step (true and wrong label per image, plus the neutral pass) gives the
    outputs and weight gradients of the layer run on the embedded inputs."""
    cfg = RunConfig()
    cfg.model.layer_type, cfg.model.norm, cfg.model.hidden = layer_type, norm, [40, 30]
    cfg.data.encoding = encoding
    cfg.train.seeds = 2
    net = FFNet(cfg, (1, 28, 28), 10)
    enc, layer = net.encoding, net.layers[0]
    torch.manual_seed(0)  # the same inputs whatever ran before
    images = torch.rand(2, 6, 1, 28, 28)
    y = torch.randint(0, 10, (2, 6))
    labels = torch.stack([y, (y + 3) % 10], dim=1)

    def weight_grads(act):
        act.square().sum().backward()
        grads = [p.grad.clone() for p in layer.parameters() if p.grad is not None]
        layer.zero_grad()
        return grads

    fast, neutral = net.first_layer_label_sets(images, labels, neutral=True)
    assert neutral.act.shape == (2, 6, 40) and not neutral.act.requires_grad
    fast_act = fast.act.detach()
    fast_grads = weight_grads(fast.act)
    full_x = torch.cat([enc.embed(images, y), enc.embed(images, (y + 3) % 10)], dim=1)
    full = layer(full_x)
    full_grads = weight_grads(full.act)
    with torch.no_grad():
        full_neutral = layer(enc.embed_neutral(images)).act
    assert fast_act.shape == full.act.shape == (2, 12, 40)
    assert len(fast_grads) == len(full_grads) > 0
    if layer_type == "spiking":  # a membrane a rounding error from threshold may flip a spike or two
        assert (fast_act != full.act).sum() <= 2
        assert (neutral.act != full_neutral).sum() <= 2
    else:
        assert torch.allclose(fast_act, full.act, atol=1e-5, rtol=1e-4)
        assert torch.allclose(neutral.act, full_neutral, atol=1e-5, rtol=1e-4)
        for fg, g in zip(fast_grads, full_grads):
            assert torch.allclose(fg, g, atol=1e-4 * g.abs().max().item(), rtol=1e-4)
