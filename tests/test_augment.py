import torch

from ffhw.augment import Augment
from ffhw.model import seed_generators


def gens(seeds, epoch=0):
    return seed_generators(seeds, "augment", epoch)


def test_no_augmentation_is_identity():
    x = torch.rand(2, 5, 1, 28, 28)
    assert torch.equal(Augment(0, 0.0, (1, 28, 28))(x, gens([0, 1])), x)


def test_crop_with_padding_shifts_by_whole_pixels_with_zeros_coming_in():
    x = torch.zeros(1, 64, 1, 28, 28)
    x[..., 10:18, 10:18] = 1.0  # a square away from the border
    out = Augment(4, 0.0, (1, 28, 28))(x, gens([0]))
    for img in out[0, :, 0]:
        rows, cols = img.nonzero(as_tuple=True)
        assert img.sum() == 64  # the square moved intact: a shift, not a resampling blur
        assert 6 <= rows.min() <= 14 and 6 <= cols.min() <= 14  # by at most 4 pixels
    shifts = {(int(i.nonzero()[:, 0].min()), int(i.nonzero()[:, 1].min())) for i in out[0, :, 0]}
    assert len(shifts) > 5  # images of a batch draw their own shifts


def test_rotation_keeps_the_centre_and_stays_within_the_angle():
    x = torch.zeros(1, 32, 1, 29, 29)
    x[..., 14, :] = 1.0  # a horizontal line through the centre
    out = Augment(0, 15.0, (1, 29, 29))(x, gens([3]))
    assert torch.all(out[..., 14, 14] == 1)  # the centre does not move
    # a line rotated by at most 15 degrees rises at most tan(15) * 14 = 3.75 pixels at the image edge
    for img in out[0, :, 0]:
        left = img[:, 0].nonzero()
        if len(left):
            assert abs(int(left[0]) - 14) <= 4


def test_seeded_per_seed_and_batched_equals_separate():
    x = torch.rand(3, 16, 1, 28, 28)
    aug = Augment(4, 15.0, (1, 28, 28))
    together = aug(x, gens([0, 1, 2], epoch=5))
    again = aug(x, gens([0, 1, 2], epoch=5))
    alone = aug(x[2:], gens([2], epoch=5))
    assert torch.equal(together, again)  # the same (seed, epoch), the same augmentation
    assert torch.equal(together[2], alone[0])  # a seed's draws do not depend on the other seeds
    assert not torch.equal(together, aug(x, gens([0, 1, 2], epoch=6)))
