import torch

from ffhw.config import ModelConfig
from ffhw.objectives import Objective, goodness, goodness_stats, peer_loss, peer_update


def test_goodness_sum_and_mean():
    act = torch.tensor([[[1.0, 2.0], [0.0, 3.0]]])
    assert torch.equal(goodness(act, "sum"), torch.tensor([[5.0, 9.0]]))
    assert torch.equal(goodness(act, "mean"), torch.tensor([[2.5, 4.5]]))


def test_goodness_stats_gradient_matches_autograd():
    """The hand-written backward (goodness and the positives' mean in one pass) equals plain autograd."""
    act = torch.randn(2, 6, 5, dtype=torch.float64).relu().requires_grad_()
    w_g, w_m = torch.randn(2, 6, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    for kind in ("sum", "mean"):
        g, mean = goodness_stats(act, kind, positives=3)
        fused = torch.autograd.grad((g * w_g).sum() + (mean * w_m).sum(), act)[0]
        ref_g = act.square().sum(-1) / (1 if kind == "sum" else 5)
        ref = torch.autograd.grad((ref_g * w_g).sum() + (act[:, :3].mean(1) * w_m).sum(), act)[0]
        assert torch.allclose(g, ref_g) and torch.allclose(mean, act[:, :3].mean(1))
        assert torch.allclose(fused, ref)
    g, mean = goodness_stats(act, "sum")
    assert mean is None and torch.allclose(torch.autograd.grad(g.sum(), act)[0], 2 * act)


def test_goodness_is_float32_under_bf16():
    """bfloat16 activities (mixed precision) still give float32 goodness, exact to float rounding: a bf16
    sum near a 2000-unit threshold would be off by up to 8, a large error in the logit goodness - theta."""
    act = (torch.rand(1, 64, 2000) * 2).bfloat16().requires_grad_()
    exact = act.detach().double().square().sum(-1)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            g, mean = goodness_stats(act, "sum", positives=32 if grad else 0)
        assert g.dtype == torch.float32
        assert torch.allclose(g.double(), exact, rtol=1e-6)
    g.sum().backward()
    assert act.grad.dtype == torch.bfloat16 and torch.allclose(act.grad.float(), 2 * act.detach().float(), rtol=1e-2)


def test_threshold_loss_is_stable_at_huge_goodness():
    obj = Objective(ModelConfig(loss="threshold"), units=1000)
    assert obj.threshold == 1000.0
    g = torch.tensor([[1e30, 0.0]], requires_grad=True)
    loss = obj.loss(g, torch.tensor([[1e30, 0.0]]))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(g.grad).all()
    assert loss.item() > 1e29  # a huge negative goodness is a huge loss, not inf or nan


def test_symba_gradient_signs():
    obj = Objective(ModelConfig(loss="symba", alpha=4.0), units=10)
    g_pos = torch.tensor([[1.0, 5.0]], requires_grad=True)
    g_neg = torch.tensor([[2.0, 1.0]], requires_grad=True)
    obj.loss(g_pos, g_neg).sum().backward()
    assert torch.all(g_pos.grad < 0) and torch.all(g_neg.grad > 0)  # raise positives, lower negatives
    assert g_pos.grad[0, 0].abs() > g_pos.grad[0, 1].abs()  # the misranked pair pulls harder


def test_binary_accuracy_hand_made():
    obj = Objective(ModelConfig(loss="threshold", goodness="mean", theta=2.0), units=4)
    g_pos = torch.tensor([[3.0, 1.0, 2.5, 2.1]])  # 3 of 4 above 2
    g_neg = torch.tensor([[1.0, 2.0, 3.0, 0.0]])  # 3 of 4 at or below 2 (2.0 counts as negative)
    assert torch.allclose(obj.binary_accuracy(g_pos, g_neg), torch.tensor([0.75]))
    symba = Objective(ModelConfig(loss="symba"), units=4)
    assert torch.allclose(symba.binary_accuracy(g_pos, g_neg), torch.tensor([0.5]))  # pairs 1 and 4 ranked right


def test_peer_norm_penalises_uneven_units_and_follows_momentum():
    running = torch.full((1, 4), 0.5)
    act = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]]).expand(1, 8, 4)
    new = peer_update(running, act.mean(1), momentum=0.9)
    assert torch.allclose(new, torch.tensor([[0.55, 0.45, 0.45, 0.45]]))
    assert peer_loss(torch.full((1, 4), 0.3)).item() == 0.0
    assert peer_loss(new).item() > 0


def test_peer_state_lives_with_the_objective_and_old_models_load():
    """Peer normalisation's running means are the objective's state; models saved when layers held it load."""
    from ffhw.config import RunConfig
    from ffhw.model import FFNet
    cfg = RunConfig()
    cfg.model.hidden, cfg.train.seeds = [20, 10], 2
    net = FFNet(cfg, (1, 28, 28), 10)
    assert net.objectives[1].peer_running.shape == (2, 10)
    state = net.state_dict()
    old = {(k.replace("objectives.", "layers.") if k.endswith("peer_running") else k): v.clone() for k, v in state.items()}
    old["layers.1.peer_running"].fill_(0.25)
    fresh = FFNet(cfg, (1, 28, 28), 10)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.objectives[1].peer_running, torch.full((2, 10), 0.25))
