"""The Trifecta's alternating overlapping pairs (train.schedule = "apl")."""
import torch

from conftest import conv_config, small_config
from ffhw.model import FFNet
from ffhw.metrics import LAYER_METRICS
from ffhw.train import Trainer


def apl_trainer(data, block_norm="batch"):
    cfg = conv_config(block_norm=block_norm, schedule="apl")
    model = FFNet(cfg, data.image_shape, 10)
    return Trainer(cfg, data, model, torch.device("cpu"))


def step_inputs(tr, data, n=8):
    """Images [1, n, ...] and label sets [1, 2, n] (true, wrong) as a training step passes them."""
    images, y = data.train.images(slice(0, n)).unsqueeze(0), data.train.y[:n].unsqueeze(0)
    return images, torch.stack([y, (y + 1) % 10], dim=1)


def sums_for(model):
    n = len(model.layers)
    sums = {k: torch.zeros(n, 1) for k in LAYER_METRICS}
    sums["seen"] = torch.zeros(n, 1)
    return sums


def test_parity_of_the_batch_picks_the_loss_blocks(mnist_small):
    tr = apl_trainer(mnist_small)
    layers = range(len(tr.model.layers))
    x = step_inputs(tr, mnist_small)
    _, even, _, _ = tr.layer_losses(*x, layers, 0, sums_for(tr.model))
    _, odd, _, _ = tr.layer_losses(*x, layers, 1, sums_for(tr.model))
    assert even == [1, 3, 5]  # pairs (0,1), (2,3), (4,5)
    assert odd == [0, 2, 4]  # pairs (1,2), (3,4); block 0 alone


def test_a_loss_reaches_only_its_own_pair(mnist_small):
    tr = apl_trainer(mnist_small)
    model = tr.model
    layers = range(len(model.layers))
    for step in (0, 1):
        x = step_inputs(tr, mnist_small)
        _, stepped, losses, _ = tr.layer_losses(*x, layers, step, sums_for(model))
        for k in stepped:
            pair = {k - 1, k} if k > 0 and k - 1 not in stepped else {k}
            for j, layer in enumerate(model.layers):
                params = [p for p in layer.parameters() if p.requires_grad]
                grads = torch.autograd.grad(losses[k], params, allow_unused=True, retain_graph=True)
                reached = any(g is not None and g.abs().sum() > 0 for g in grads)
                assert reached == (j in pair), f"step {step}: block {k}'s loss reached block {j}: {reached}"
            label = torch.autograd.grad(losses[k], [model.encoding.weight], allow_unused=True, retain_graph=True)[0]
            assert (label is not None and label.abs().sum() > 0) == (0 in pair), f"label channel, loss of {k}"


def test_loss_block_optimiser_owns_the_block_below(mnist_small):
    tr = apl_trainer(mnist_small)
    owned = {id(p) for g in tr.layer_opts[3].param_groups for p in g["params"]}
    assert all(id(p) in owned for p in tr.model.layers[2].parameters())
    assert all(id(p) in owned for p in tr.model.layers[3].parameters())
    assert not any(id(p) in owned for p in tr.model.layers[1].parameters())
    block0 = {id(p) for g in tr.layer_opts[0].param_groups for p in g["params"]}
    assert id(tr.model.encoding.weight) in block0


def test_apl_trains_above_chance(mnist_conv):
    cfg = conv_config(schedule="apl", epochs=2, lr=1e-2, batch_size=50)
    cfg.data.crop_padding, cfg.data.max_rotation = 2, 10.0
    summary = Trainer(cfg, mnist_conv, FFNet(cfg, mnist_conv.image_shape, 10), torch.device("cpu")).fit()
    assert summary["test_acc_goodness"]["mean"] > 0.3, summary  # chance 0.1


def test_simultaneous_schedule_unchanged_by_apl_code(mnist_small):
    cfg = small_config(hidden=(32, 32))
    tr = Trainer(cfg, mnist_small, FFNet(cfg, mnist_small.image_shape, 10), torch.device("cpu"))
    assert all(tr.computes_loss(k, s) for k in range(2) for s in range(2))
