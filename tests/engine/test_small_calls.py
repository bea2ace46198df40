"""Small CPU calls enter the kernels on the tensors' addresses (``cpu_kernels._small_call``).

That path must give the bits of the array path it shortcuts, and must be
refused for every layout whose memory the arrays would misread.
"""

import pytest
import torch

from dropkit.engine import cpu_kernels

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(BITS[t.element_size()])


def _array_path(x, out, *args):
    """``dropout_into`` with the address path switched off."""
    saved = cpu_kernels._small_call
    cpu_kernels._small_call = lambda *a: None
    try:
        cpu_kernels.dropout_into(x, out, *args)
    finally:
        cpu_kernels._small_call = saved


@pytest.fixture
def entries(monkeypatch):
    """Counts the calls of the address entry points."""
    calls = []
    table = dict(cpu_kernels._SMALL_ENTRIES)
    for dtype, (entry, flag) in table.items():
        def counted(*args, entry=entry):
            calls.append(args)
            return entry(*args)
        table[dtype] = (counted, flag)
    monkeypatch.setattr(cpu_kernels, "_SMALL_ENTRIES", table)
    return calls


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 255, 256, 257, 2048, 4099,
                               cpu_kernels.PARALLEL_MIN_ELEMENTS - 1])
def test_address_path_gives_the_array_path_bits(dtype, n, entries):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n)).to(dtype)
    x[0] = float("inf")
    for t, scale, seed, offset in [(32768, 2.0, 0, 0), (19661, 1 / 0.7, 2**63 + 5, 3),
                                   (1, 1.0, 2**64 - 1, 2**64 - 2**40)]:
        expected = torch.empty_like(x)
        _array_path(x, expected, t, scale, seed, offset)
        out = torch.full_like(x, 7.0)
        before = len(entries)
        cpu_kernels.dropout_into(x, out, t, scale, seed, offset)
        assert len(entries) == before + 1  # the address path ran
        assert torch.equal(_bits(out), _bits(expected))
        same = x.clone()  # in place: x and out the same memory
        cpu_kernels.dropout_into(same, same, t, scale, seed, offset)
        assert torch.equal(_bits(same), _bits(expected))


def test_large_calls_take_the_array_path(entries):
    x = torch.randn(cpu_kernels.PARALLEL_MIN_ELEMENTS)
    cpu_kernels.dropout_into(x, torch.empty_like(x), 32768, 2.0, 1, 0)
    assert entries == []


def _misaligned(n):
    return torch.frombuffer(bytearray(4 * n + 1), dtype=torch.float32, offset=1, count=n)


@pytest.mark.parametrize("case", ["strided out", "strided x", "dtype", "numel", "overlap",
                                  "misaligned x", "misaligned out", "meta", "negative bit",
                                  "zero tensor", "wrapper subclass"])
def test_address_path_refuses_what_its_arrays_would_misread(case):
    x, out = torch.randn(64), torch.empty(64)
    if case == "strided out":
        out = torch.empty(128)[::2]
    elif case == "strided x":
        x = torch.randn(128)[::2]
    elif case == "dtype":
        out = torch.empty(64, dtype=torch.float64)
    elif case == "numel":
        out = torch.empty(65)
    elif case == "overlap":
        storage = torch.randn(96)
        x, out = storage[:64], storage[32:]
    elif case == "misaligned x":
        x = _misaligned(64)
    elif case == "misaligned out":
        out = _misaligned(64)
    elif case == "meta":
        out = torch.empty(64, device="meta")
    elif case == "negative bit":  # its memory holds -x
        x = torch._neg_view(torch.randn(64))
    elif case == "zero tensor":  # no memory: data_ptr() is 0
        x = torch._efficientzerotensor(64)
    else:  # a wrapper subclass has no data of its own (data_ptr() is 0)
        from torch.testing._internal.two_tensor import TwoTensor

        x = TwoTensor(torch.randn(64), torch.randn(64))
    assert cpu_kernels._small_call(x, out, 64) is None
    assert cpu_kernels._small_call(torch.randn(64), torch.empty(64), 64) is not None


def test_misaligned_input_still_gives_the_right_bits():
    x = _misaligned(100)
    x.copy_(torch.randn(100))
    out = torch.empty(100)
    cpu_kernels.dropout_into(x, out, 32768, 2.0, 9, 0)
    expected = torch.empty(100)
    cpu_kernels.dropout_into(x.clone(), expected, 32768, 2.0, 9, 0)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("n", [64, cpu_kernels.PARALLEL_MIN_ELEMENTS + 5])
def test_negative_bit_views_are_dropped_by_value(n):
    import dropkit as dk
    from dropkit.engine import reference

    values = torch.randn(n)
    view = torch._neg_view(-values)  # reads as values, holds -values in memory
    assert view.is_neg() and view.is_contiguous()
    y = dk.dropout(view, 0.3, seed=5)
    assert torch.equal(y, reference.dropout_reference(values, 0.3, 1 / 0.7, 5, 0))
    x = torch._neg_view(-values.clone())
    dk.dropout(x, 0.3, seed=5, inplace=True)
    assert torch.equal(x.resolve_neg(), y)
    assert not x.resolve_neg()[y == 0].signbit().any()  # dropped: +0.0
    residual = torch._neg_view(torch.randn(n))
    fused = dk.bias_dropout_add(values, None, residual, 0.3, seed=5)
    assert torch.equal(fused, residual.resolve_neg() + y)
