"""The CPU output cache hands a buffer out again only when nothing else uses it."""

import pytest
import torch

from dropkit import engine
from dropkit.engine.output_cache import MIN_BYTES, OutputCache, _use_count

pytestmark = pytest.mark.skipif(_use_count is None, reason="torch lacks _storage_Use_Count")

SHAPE = torch.Size([4, MIN_BYTES // 4 // 4])  # float32: exactly MIN_BYTES


def _cache(limit=64 << 20):
    cache = OutputCache(limit)
    return cache, lambda: cache.empty(SHAPE, torch.float32, lambda: torch.empty(SHAPE))


def test_a_buffer_is_reused_only_after_every_reference_is_gone():
    cache, empty = _cache()
    a = empty()
    pointer = a.data_ptr()
    b = empty()
    assert b.data_ptr() != pointer  # a is in use
    view = a[1:]
    del a
    assert empty().data_ptr() != pointer  # a view keeps it in use
    del view
    c = empty()
    assert c.data_ptr() == pointer and c.shape == SHAPE and c.is_contiguous()


def test_tensors_saved_for_backward_keep_their_buffer():
    cache, empty = _cache()
    y = empty().fill_(1.0)
    w = torch.ones(SHAPE, requires_grad=True)
    z = (w * y).sum()  # mul saves y for w's gradient
    pointer = y.data_ptr()
    del y
    assert empty().data_ptr() != pointer
    z.backward()
    assert torch.equal(w.grad, torch.ones(SHAPE))


def test_limit_and_clear():
    cache, empty = _cache(limit=2 * MIN_BYTES)
    kept = [empty() for _ in range(3)]  # the third is not tracked: over the limit
    assert cache.cached_bytes() == (2 * MIN_BYTES, 0)
    del kept
    assert cache.cached_bytes() == (0, 2 * MIN_BYTES)
    cache.clear()
    assert cache.cached_bytes() == (0, 0)


def test_small_outputs_are_not_cached():
    cache = OutputCache(64 << 20)
    out = cache.empty(torch.Size([10]), torch.float32, lambda: torch.empty(10))
    assert out.shape == (10,) and cache.cached_bytes() == (0, 0)


def test_dropout_into_a_reused_buffer_is_exact():
    x = torch.randn(SHAPE)
    first = engine.dropout(x, 0.5, 2.0, seed=1).clone()
    for seed in (2, 1):  # each call may reuse the buffer the previous one freed
        y = engine.dropout(x, 0.5, 2.0, seed=seed)
        keep = engine.keep_mask(SHAPE, 0.5, seed=seed)
        assert torch.equal(y, torch.where(keep, x * 2.0, 0.0))
        del y
    assert torch.equal(engine.dropout(x, 0.5, 2.0, seed=1), first)
    engine.empty_cache()
