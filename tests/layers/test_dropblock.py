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


# ------------------------------------------- torchvision's signature: inplace, eps, its test grid
def _maps(dim: int, side: int = 11, batch: int = 5, channels: int = 3) -> torch.Tensor:
    return torch.ones((batch, channels) + (side,) * dim)


def _layer(dim: int, *args, **kwargs):
    return (dk.DropBlock2d if dim == 2 else dk.DropBlock3d)(*args, **kwargs)


@pytest.mark.parametrize("inplace", [True, False])
@pytest.mark.parametrize("block_size", [5, 11])
@pytest.mark.parametrize("p", [0, 0.5])
@pytest.mark.parametrize("dim", [2, 3])
def test_torchvision_grid(dim, p, block_size, inplace):
    # torchvision's TestDropBlock.test_drop_block grid: 11-wide maps, seeds 0..9.
    for seed in range(10):
        torch.manual_seed(seed)
        x = _maps(dim)
        layer = _layer(dim, p=p, block_size=block_size, inplace=inplace)
        version = x._version
        out = layer(x)
        if p == 0:
            assert out is x and torch.equal(out, _maps(dim))
            assert x._version == version
            continue
        assert (out is x) == inplace and (x._version > version) == inplace
        keep = out != 0
        # kept units carry torchvision's numel(M) / (sum(M) + eps)
        scale = keep.numel() / (keep.sum().item() + 1e-6)
        torch.testing.assert_close(out[keep], torch.full_like(out[keep], scale))
        if block_size == 11:  # the block covers the map: each map all or nothing
            per_map = keep.flatten(2).sum(-1)
            assert ((per_map == 0) | (per_map == 11**dim)).all()
        else:
            assert _is_union_of_blocks((~keep).flatten(0, 1), (block_size,) * dim)


@pytest.mark.parametrize("p", [0.1, 0.2])
@pytest.mark.parametrize("dim", [2, 3])
def test_torchvision_dropped_fraction(dim, p):
    # torchvision's TestDropBlock.test_drop_block_random: block 3 on 11-wide maps,
    # the dropped fraction within 15% of p. Overlapping blocks put its
    # expectation below p (2d: by 5% and 10%, 3d: by 6% and 12%, at p = 0.1
    # and 0.2), inside that band; the draws must sit within 5 standard errors of it.
    layer = _layer(dim, p, 3)
    for seed in range(10):
        torch.manual_seed(seed)
        with torch.no_grad():
            y = torch.cat([layer(_maps(dim)) for _ in range(40)])
        expected = _assert_dropped_fraction(y, p, (3,) * dim, (11,) * dim)
        assert abs(p - expected) / p < 0.15
        assert abs(p - (y == 0).double().mean().item()) / p < 0.15


def test_eps_is_added_to_the_kept_count():
    x = torch.ones(2, 4, 9, 9)
    for eps in (0.0, 1e-6, 0.5, 100.0):
        y = dk.drop_block2d(x, 0.3, 3, eps=eps, seed=11)
        keep = y != 0
        scale = keep.numel() / (keep.sum().item() + eps)
        torch.testing.assert_close(y[keep], torch.full_like(y[keep], scale))
    # the module passes its eps on
    m = dk.DropBlock2d(0.3, 3, False, 100.0)
    torch.manual_seed(0)
    y = m(x)
    torch.manual_seed(0)
    assert torch.equal(y, dk.drop_block2d(x, 0.3, 3, False, 100.0))


def test_all_dropped_gives_zeros_and_zero_grads_with_any_eps():
    # p < 1 with every unit dropped (a centre rate of 1): the scale's
    # denominator is eps alone; outputs and gradients stay 0, never NaN.
    for eps in (0.0, 1e-6):
        x = torch.full((1, 2, 3, 3), float("inf"), requires_grad=True)
        y = dk.drop_block2d(x, 0.99, 3, eps=eps, seed=0)
        assert torch.equal(y, torch.zeros_like(y))
        (g,) = torch.autograd.grad(y.sum(), x)
        assert torch.equal(g, torch.zeros_like(g))


def test_inplace_is_a_torch_inplace_op():
    # The result is written into the input by torch's own in-place ops: the
    # version counter moves and autograd raises exactly where x.mul_() would.
    leaf = torch.ones(2, 3, 8, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        leaf.mul_(2)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        dk.drop_block2d(leaf, 0.3, 3, inplace=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        dk.DropBlock2d(0.3, 3, inplace=True)(leaf[0])
    # a tensor saved for backward, then overwritten: the same error at backward
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    h = x.exp()  # exp saves its output for backward
    dk.drop_block2d(h, 0.3, 3, inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        h.sum().backward()
    # a non-leaf: the same values and gradient as out of place
    h = x * 1.0
    out = dk.drop_block2d(h, 0.3, 3, inplace=True, seed=5)
    assert out is h and h._version > 0
    reference = dk.drop_block2d(x.detach(), 0.3, 3, seed=5)
    assert torch.equal(out.detach(), reference)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(g, dk.drop_block2d(torch.ones_like(x), 0.3, 3, seed=5))
    # p=1 in place zeroes the input itself; eval and p=0 leave it alone
    z = torch.randn(2, 3, 8, 8)
    assert dk.drop_block2d(z, 1.0, 3, inplace=True) is z and torch.equal(z, torch.zeros_like(z))
    w = torch.randn(1, 2, 5, 5, 5)
    before = w.clone()
    assert dk.drop_block3d(w, 0.5, 3, inplace=True, training=False) is w
    assert dk.drop_block3d(w, 0.0, 3, inplace=True) is w
    assert torch.equal(w, before) and w._version == 0


def test_both_argument_orders_draw_the_same_mask():
    x = torch.randn(2, 3, 10, 10)
    torch.manual_seed(4)
    a = dk.dropblock2d(x, 0.2, 3, True, scale_by_keep=False)
    torch.manual_seed(4)
    b = dk.drop_block2d(x, 0.2, 3, False, 1e-6, True, scale_by_keep=False)
    assert torch.equal(a, b)
    v = torch.randn(2, 3, 6, 6, 6)
    assert torch.equal(dk.dropblock3d(v, 0.2, 3, seed=1), dk.drop_block3d(v, 0.2, 3, seed=1))


def test_torchvision_errors_and_bad_eps():
    x = torch.ones(2, 3, 8, 8)
    for call in (
        lambda: dk.drop_block2d(x, 1.5, 3),
        lambda: dk.drop_block2d(x, -0.1, 3, training=False),  # checked in eval too
        lambda: dk.drop_block2d(torch.ones(1, 2, 3, 4, 5), 0.1, 3),  # not 4D
        lambda: dk.drop_block3d(torch.ones(2, 3, 8), 0.1, 3),  # neither 5D nor unbatched 4D
        lambda: dk.DropBlock2d(0.1, 0),
        lambda: dk.DropBlock3d(1.5, 3),
        lambda: dk.DropBlock2d(0.1, 3, eps=-1e-6),
        lambda: dk.drop_block2d(x, 0.1, 3, eps=float("nan")),
    ):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(TypeError, match="eps='a'"):
        dk.DropBlock3d(0.1, 3, eps="a")
