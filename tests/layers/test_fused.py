import pytest
import torch

from ffhw.config import RunConfig
from ffhw.model import FFNet


@pytest.mark.parametrize("norm,goodness", [("rms", "sum"), ("l2", "mean"), ("none", "sum")])
def test_fused_evaluation_computes_what_eager_does(norm, goodness):
    torch.manual_seed(0)
    cfg = RunConfig()
    cfg.model.hidden, cfg.model.norm, cfg.model.goodness = [40, 30, 20], norm, goodness
    cfg.train.seeds = 2
    net = FFNet(cfg, (1, 28, 28), 10).eval()
    with torch.no_grad():
        for layer in net.layers:
            layer.bias.normal_(0, 0.3)  # some units off, some on: the sparsity statistic is not trivial
        net.head_weight.normal_()
    for n in (7, 5):  # two batch sizes: one kernel for every number of rows
        images = torch.rand(n, 1, 28, 28)
        net.fuse_evaluation(False)
        goodness_ref, logits_ref, stats_ref = net.evaluate_batch(images)
        net.fuse_evaluation(True)
        goodness_fused, logits_fused, stats_fused = net.evaluate_batch(images)
        # float rounding relative to the largest value (sums of many terms: small results keep absolute errors)
        assert torch.allclose(goodness_fused, goodness_ref, rtol=0, atol=1e-5 * goodness_ref.abs().max())
        assert torch.allclose(logits_fused, logits_ref, rtol=0, atol=1e-5 * logits_ref.abs().max())
        for ref, fused in zip(stats_ref, stats_fused):
            assert 0.05 < ref["sparsity"].min() and ref["sparsity"].max() < 0.95
            assert torch.allclose(fused["sparsity"], ref["sparsity"], atol=1e-6)
            assert torch.equal(fused["unit_activity"], ref["unit_activity"])  # counted in the kernel


def test_fused_last_layer_returns_reductions_only():
    cfg = RunConfig()
    cfg.model.hidden = [40, 30]
    net = FFNet(cfg, (1, 28, 28), 10).eval()
    net.fuse_evaluation(True)
    with torch.no_grad():
        first, _ = net.first_layer_all_labels(torch.rand(3, 1, 28, 28))
        last = net.layers[1].evaluate(first, keep_output=False)
    assert first.out is not None and first.out_sum_sq is not None
    assert last.act is None and last.out is None
    assert last.act_sum_sq.shape == (1, 30) and last.out_nonzero.shape == (1,)
    net.fuse_evaluation(False)
    with torch.no_grad():
        eager = net.layers[1].evaluate(first)
    assert torch.allclose(last.act_sum_sq, net.objectives[1].goodness(eager.act), rtol=1e-5)
