"""DropBlock2d/3d and the linear p schedule.

Tolerances. Each (sample, channel) map gets its own independent mask, so the
per-map dropped fractions f_j are i.i.d.; by the CLT their mean is normal with
standard error s / sqrt(M) (s the sample std of the f_j, M maps). We accept
5 standard errors (a false alarm about once in 1.7 million runs). The engine
quantises the centre rate gamma to a multiple of 2**-16; the expected
fraction moves by at most the difference between the two rates, added to the
tolerance. Where whole maps are kept or dropped (a map smaller than the
block), the count of dropped maps is binomial: 5 sqrt(p (1-p) / M).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as tF

import dropkit as dk
from dropkit import functional as F


def _expected_drop_fraction(gamma: float, spatial, blocks) -> float:
    """Exact E[dropped fraction]: cell i is dropped unless all k(i) covering centres are off."""
    valid = tuple(s - b + 1 for s, b in zip(spatial, blocks, strict=True))
    centres = torch.ones((1, 1) + valid, dtype=torch.float64)
    pad = []
    for b in reversed(blocks):
        pad += [b - 1, b - 1]
    weight = torch.ones((1, 1) + tuple(blocks), dtype=torch.float64)
    conv = tF.conv2d if len(spatial) == 2 else tF.conv3d
    k = conv(tF.pad(centres, pad), weight)  # k(i): centres whose block covers i
    return float((1 - (1 - gamma) ** k).mean())


def _quantised(rate: float) -> float:
    return math.floor(rate * 65536 + 0.5) / 65536


def _assert_dropped_fraction(y: torch.Tensor, p: float, blocks, spatial) -> float:
    """The mean per-map dropped fraction is within 5 standard errors of its expectation."""
    gamma = F.dropblock_gamma(p, blocks, spatial)
    expected = _expected_drop_fraction(gamma, spatial, blocks)
    quant_shift = abs(_expected_drop_fraction(_quantised(gamma), spatial, blocks) - expected)
    per_map = (y == 0).double().flatten(2).mean(-1).flatten()
    stderr = per_map.std().item() / math.sqrt(per_map.numel())
    assert abs(per_map.mean().item() - expected) <= 5 * stderr + quant_shift
    return expected


@pytest.mark.parametrize(
    "p,block,spatial",
    [(0.1, 5, (24, 24)), (0.3, 3, (16, 20)), (0.2, (2, 4), (12, 12)), (0.15, 4, (17, 17))],
)
def test_dropped_fraction_matches_gamma_formula(p, block, spatial):
    torch.manual_seed(0)
    x = torch.ones(8, 64, *spatial)
    y = dk.dropblock2d(x, p, block)
    expected = _assert_dropped_fraction(y, p, F._check_block_size(block, 2), spatial)
    # Overlapping blocks make the dropped fraction a bit below p, never above.
    assert expected <= p


def test_gamma_is_the_paper_formula():
    # Ghiasi et al. eq. (1): (1 - keep_prob) / block_size**2 * feat**2 / (feat - block + 1)**2
    assert F.dropblock_gamma(0.1, (7, 7), (32, 32)) == pytest.approx(
        0.1 / 49 * 32**2 / 26**2
    )
    assert F.dropblock_gamma(1.0, (1, 1), (5, 5)) == 1.0


def _is_union_of_blocks(dropped: torch.Tensor, blocks) -> bool:
    """Morphological opening with a block-shaped window leaves a union of blocks unchanged."""
    d = dropped.float().unsqueeze(1) if dropped.ndim == len(blocks) + 1 else dropped.float()
    pool = tF.max_pool2d if len(blocks) == 2 else tF.max_pool3d
    eroded = -pool(-d, kernel_size=blocks, stride=1)  # corners of fully dropped windows
    pad = []
    for b in reversed(blocks):
        pad += [b - 1, b - 1]
    opened = pool(tF.pad(eroded, pad), kernel_size=blocks, stride=1)
    return torch.equal(opened, d)


@pytest.mark.parametrize("block", [3, 4, (2, 5)])
def test_dropped_region_is_a_union_of_whole_blocks(block):
    torch.manual_seed(1)
    y = dk.dropblock2d(torch.ones(4, 8, 20, 20), 0.2, block)
    blocks = F._check_block_size(block, 2)
    dropped = (y == 0).flatten(0, 1)
    assert dropped.any()
    assert _is_union_of_blocks(dropped, blocks)
    # ... and element-wise dropout fails the same check, so the check has teeth.
    elementwise = dk.dropout(torch.ones(32, 20, 20), 0.2) == 0
    assert not _is_union_of_blocks(elementwise, blocks)


def test_dropblock3d_blocks_and_fraction():
    torch.manual_seed(2)
    spatial, blocks, p = (10, 10, 10), (3, 3, 3), 0.2
    y = dk.dropblock3d(torch.ones(4, 32, *spatial), p, 3)
    assert _is_union_of_blocks((y == 0).flatten(0, 1), blocks)
    _assert_dropped_fraction(y, p, blocks, spatial)


def test_renormalised_by_kept_fraction():
    torch.manual_seed(3)
    x = torch.ones(2, 16, 12, 12)
    y = dk.dropblock2d(x, 0.3, 3)
    keep = y != 0
    scale = keep.numel() / keep.sum().item()
    assert torch.allclose(y[keep], torch.full_like(y[keep], scale))
    assert y.mean().item() == pytest.approx(1.0, rel=1e-6)
    # without the rescale kept values stay as they are
    y2 = dk.dropblock2d(x, 0.3, 3, scale_by_keep=False)
    assert set(y2.unique().tolist()) <= {0.0, 1.0}


def test_map_smaller_than_block_drops_whole_maps_with_rate_p():
    torch.manual_seed(4)
    p, maps = 0.3, 64 * 64
    y = dk.dropblock2d(torch.ones(64, 64, 3, 5), p, 7)  # block clipped to the 3x5 map
    per_map = (y == 0).flatten(2).float().mean(-1).flatten()
    assert set(per_map.unique().tolist()) <= {0.0, 1.0}  # all or nothing
    assert abs(per_map.mean().item() - p) <= 5 * math.sqrt(p * (1 - p) / maps)


def test_train_eval_zero_one_and_unbatched():
    x = torch.randn(2, 3, 9, 9)
    m = dk.DropBlock2d(0.2, 3)
    m.eval()
    assert m(x) is x
    assert dk.dropblock2d(x, 0.0, 3) is x
    z = dk.dropblock2d(x.requires_grad_(), 1.0, 3)
    assert torch.equal(z, torch.zeros_like(x))
    z.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    torch.manual_seed(5)
    assert dk.dropblock2d(torch.ones(3, 9, 9), 0.2, 3).shape == (3, 9, 9)
    assert dk.dropblock3d(torch.ones(3, 6, 6, 6), 0.2, 3).shape == (3, 6, 6, 6)


def test_gradient_is_mask_times_scale():
    torch.manual_seed(6)
    x = torch.randn(2, 4, 10, 10, requires_grad=True)
    torch.manual_seed(7)
    y = dk.dropblock2d(x, 0.25, 3)
    y.sum().backward()
    torch.manual_seed(7)
    ones = dk.dropblock2d(torch.ones(2, 4, 10, 10), 0.25, 3)  # same mask: scale where kept
    assert torch.allclose(x.grad, ones)
    assert torch.allclose(y, x.detach() * ones)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype):
    torch.manual_seed(8)
    y = dk.DropBlock2d(0.2, 3)(torch.ones(2, 4, 8, 8, dtype=dtype))
    assert y.dtype == dtype and torch.isfinite(y).all() and (y == 0).any()


def test_seeded_and_fresh_masks():
    x = torch.ones(2, 4, 12, 12)
    torch.manual_seed(9)
    a, b = dk.dropblock2d(x, 0.2, 3), dk.dropblock2d(x, 0.2, 3)
    torch.manual_seed(9)
    assert torch.equal(a, dk.dropblock2d(x, 0.2, 3))
    assert not torch.equal(a, b)
    assert torch.equal(dk.dropblock2d(x, 0.2, 3, seed=3), dk.dropblock2d(x, 0.2, 3, seed=3))


def test_bad_arguments_name_argument_and_value():
    x = torch.ones(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"block_size=0"):
        dk.DropBlock2d(0.1, 0)
    with pytest.raises(ValueError, match=r"block_size=\(3, 3, 3\)"):
        dk.DropBlock2d(0.1, (3, 3, 3))
    with pytest.raises(ValueError, match=r"block_size='a'"):
        dk.dropblock3d(torch.ones(1, 1, 4, 4, 4), 0.1, "a")
    with pytest.raises(ValueError, match=r"p=1.5"):
        dk.DropBlock3d(1.5, 3)
    with pytest.raises(ValueError, match=r"5D input"):
        dk.dropblock2d(torch.ones(1, 2, 3, 4, 5), 0.1, 3)
    with pytest.raises(TypeError, match="floating-point"):
        dk.dropblock2d(x.long(), 0.1, 3)
    assert "block_size=(3, 3)" in repr(dk.DropBlock2d(0.1, 3))


def test_schedule_and_linear_scheduler():
    assert [dk.dropblock_schedule(s, 4, 0.2) for s in (0, 2, 4, 9)] == pytest.approx(
        [0.0, 0.1, 0.2, 0.2]
    )
    blocks = [dk.DropBlock2d(0.1, 3), dk.DropBlock2d(0.1, 5)]
    sched = dk.LinearScheduler(blocks, total_steps=10)
    assert blocks[0].p == 0.0 and sched.p == 0.1
    for _ in range(5):
        sched.step()
    assert blocks[1].p == pytest.approx(0.05)
    state = sched.state_dict()
    other = dk.LinearScheduler(dk.DropBlock2d(0.1, 3), total_steps=3)
    other.load_state_dict(state)
    assert other.modules[0].p == pytest.approx(0.05)
    for _ in range(20):
        sched.step()
    assert blocks[0].p == pytest.approx(0.1)
    with pytest.raises(ValueError, match="total_steps=0"):
        dk.LinearScheduler(blocks, total_steps=0)
    with pytest.raises(ValueError, match="step=-1"):
        dk.dropblock_schedule(-1, 10, 0.1)
    with pytest.raises(TypeError, match="Linear"):
        dk.LinearScheduler(torch.nn.Linear(2, 2), total_steps=3)
