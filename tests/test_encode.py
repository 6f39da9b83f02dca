import math
import torch

from ffhw.encode import LabelEncoding, border_ring, hard_negatives, random_negatives


def test_onehot_writes_first_pixels_of_row_zero():
    enc = LabelEncoding("onehot", 10, (1, 28, 28))
    images = torch.ones(3, 1, 28, 28)
    x = enc.embed(images, torch.tensor([0, 3, 9]))
    grid = x.view(3, 28, 28)
    assert torch.equal(grid[1, 0, :10], torch.eye(10)[3])
    assert torch.all(grid[:, 0, 10:] == 1) and torch.all(grid[:, 1:] == 1)  # image content untouched
    assert torch.allclose(enc.embed_neutral(images).view(3, 28, 28)[:, 0, :10], torch.full((3, 10), 0.1))


def test_border_uses_documented_ring_segments():
    ring = border_ring(28, 28)
    assert len(ring) == 108 and len(set(ring)) == 108
    assert ring[:3] == [0, 1, 2] and ring[28] == 1 * 28 + 27 and ring[-1] == 28  # clockwise from top-left
    enc = LabelEncoding("border", 10, (1, 28, 28))
    x = enc.embed(torch.zeros(1, 1, 28, 28), torch.tensor([4]))[0]
    assert x.nonzero().flatten().tolist() == sorted(ring[40:50])
    interior = torch.zeros(28, 28, dtype=torch.bool)
    interior[1:-1, 1:-1] = True
    assert not enc.label_mask.view(28, 28)[interior].any()


def test_concat_appends_label():
    enc = LabelEncoding("concat", 10, (1, 28, 28))
    x = enc.embed(torch.ones(2, 1, 28, 28), torch.tensor([1, 7]))
    assert x.shape == (2, 794) and torch.all(x[:, :784] == 1)
    assert x[0, 784 + 1] == 1 and x[1, 784 + 7] == 1 and x[:, 784:].sum() == 2


def test_random_negatives_never_true_and_cover_all_wrong_labels():
    y = torch.arange(10).repeat(2000)
    neg = random_negatives(y, 10, torch.Generator().manual_seed(0))
    assert not torch.any(neg == y)
    counts = torch.bincount((neg - y) % 10, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 1800  # each shift 1..9 about 2222 times


def test_hard_negatives_follow_goodness_and_skip_true_label():
    """Wrong labels are drawn by the softmax of their goodness (the summed log-odds), never the true one."""
    y = torch.zeros(5000, dtype=torch.long)
    goodness = torch.full((5000, 10), 1000.0)  # every label near a 1000-unit threshold, as in training
    goodness[:, 0] = 1100.0  # the true label is the best: must never be drawn
    goodness[:, 3] = 1003.0
    goodness[:, 5] = 1001.0
    neg = hard_negatives(goodness, y, torch.Generator().manual_seed(0))
    assert not torch.any(neg == 0)
    expected = math.exp(3) / (math.exp(3) + math.exp(1) + 7)  # 0.674: label 3 against 5 and the seven others
    assert abs((neg == 3).float().mean().item() - expected) < 0.02  # 3 sd at 5000 draws
    assert abs((neg == 5).float().mean().item() - math.e / (math.exp(3) + math.exp(1) + 7)) < 0.015
    wrong_best = goodness.clone()
    wrong_best[:, 7] = 1200.0  # a wrong label the network prefers to the true one is (almost) always drawn
    assert (hard_negatives(wrong_best, y, torch.Generator().manual_seed(1)) == 7).all()
