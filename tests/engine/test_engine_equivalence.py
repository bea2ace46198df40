"""The fast engine equals the pure-torch oracle bit for bit (docs/mask-spec.md)."""

import math
import os

import numba
import pytest
import torch

from dropkit import engine
from dropkit.engine import reference

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SIZES = [0, 1, 7, 8, 9, 2**20 + 3]


def assert_same_bits(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal bit patterns, except that any NaN equals any NaN (payloads are not specified)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    nan = expected.isnan()
    assert torch.equal(actual.isnan(), nan)
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[actual.element_size()]
    assert torch.equal(actual[~nan].view(bits), expected[~nan].view(bits))


def _input(n, dtype, seed=0):
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed)).to(dtype)
    if n >= 9:  # specials: dropped ones must come out exactly +0
        x[:6] = torch.tensor([float("inf"), float("-inf"), float("nan"), -0.0, 0.0, -1.5])
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_dropout_equals_reference(dtype, n):
    x = _input(n, dtype)
    for p, scale, seed, offset in [(0.5, 2.0, 7, 0), (0.3, 1 / 0.7, 2**64 - 1, 12345)]:
        y = engine.dropout(x, p, scale, seed, offset)
        assert_same_bits(y, reference.dropout_reference(x, p, scale, seed, offset))


@pytest.mark.parametrize("n", SIZES)
def test_keep_mask_equals_reference(n):
    for p, seed, offset in [(0.5, 0, 0), (0.1, 2**63 + 11, 2**40 + 3)]:
        mask = engine.keep_mask((n,), p, seed, offset)
        assert mask.dtype == torch.bool
        assert torch.equal(mask, reference.keep_mask_reference((n,), p, seed, offset))


def test_dropped_elements_are_plus_zero_even_for_inf_and_nan():
    x = torch.tensor([float("inf"), float("nan"), -float("inf"), -3.0] * 64)
    y = engine.dropout(x, 0.5, 2.0, seed=3)
    keep = engine.keep_mask(x.shape, 0.5, seed=3)
    zeros = torch.zeros(int((~keep).sum()), dtype=torch.int32)
    assert torch.equal(y[~keep].view(torch.int32), zeros)
    assert torch.isinf(y[keep & x.isinf()]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_input_uses_logical_row_major_order(dtype):
    base = _input(6 * 40 * 5, dtype).reshape(6, 40, 5)
    for x in (base.transpose(0, 2), base[:, ::3, 1:], base.permute(1, 2, 0)[::2]):
        assert not x.is_contiguous()
        y = engine.dropout(x, 0.4, 1 / 0.6, seed=99, offset=5)
        # the layout torch gives x * mask; the mask still follows logical order
        assert y.stride() == (x * 1).stride() or y.is_contiguous()
        assert y.shape == x.shape and y.dtype == x.dtype
        assert_same_bits(y, reference.dropout_reference(x.contiguous(), 0.4, 1 / 0.6, 99, 5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_in_place_keeps_storage_and_equals_out_of_place(dtype):
    x = _input(1000, dtype).reshape(10, 100)
    expected = engine.dropout(x, 0.5, 2.0, seed=5)
    for view in (x.clone(), x.clone().t()):
        pointer = view.data_ptr()
        out = engine.dropout_(view, 0.5, 2.0, seed=5)
        assert out is view and out.data_ptr() == pointer
    y = x.clone()
    engine.dropout_(y, 0.5, 2.0, seed=5)
    assert_same_bits(y, expected)
    t = x.clone().t()
    engine.dropout_(t, 0.5, 2.0, seed=5)
    assert_same_bits(t, engine.dropout(x.t(), 0.5, 2.0, seed=5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_in_place_equals_out_of_place_on_every_thread_count(dtype):
    # in place, the float kernels run their own one-array loop
    x = _input(2**20 + 3, dtype)
    expected = reference.dropout_reference(x, 0.3, 1 / 0.7, 2**63 + 1, 77)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            y = x.clone()
            engine.dropout_(y, 0.3, 1 / 0.7, seed=2**63 + 1, offset=77)
            assert_same_bits(y, expected)
    finally:
        torch.set_num_threads(before)


def test_result_does_not_depend_on_thread_count():
    x = _input(2**20 + 3, torch.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = engine.dropout(x, 0.5, 2.0, seed=11, offset=3)
        mask_one = engine.keep_mask(x.shape, 0.2, seed=11)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = engine.dropout(x, 0.5, 2.0, seed=11, offset=3)
        mask_two = engine.keep_mask(x.shape, 0.2, seed=11)
    finally:
        numba.set_num_threads(before)
    assert_same_bits(one, two)
    assert torch.equal(mask_one, mask_two)


def test_extreme_p():
    x = torch.randn(1000)
    assert torch.equal(engine.dropout(x, 1.0, 0.0, seed=1), torch.zeros(1000))
    assert torch.equal(engine.dropout(x, 0.0, 1.0, seed=1), x)
    assert not engine.keep_mask((1000,), 1.0, seed=1).any()
    assert engine.keep_mask((1000,), 0.0, seed=1).all()


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_fraction_within_binomial_bounds(p):
    # The number of drops is Binomial(n, t / 65536).  A 5-sigma band,
    # 5 * sqrt(n q (1 - q)), fails by chance with probability ~6e-7 per check.
    n = 2**20
    q = reference.threshold(p) / 65536
    dropped = n - int(engine.keep_mask((n,), p, seed=2024).sum())
    assert abs(dropped - n * q) <= 5 * math.sqrt(n * q * (1 - q))


def test_shifting_the_offset_shifts_the_mask_by_eight_elements_per_counter():
    mask = engine.keep_mask((800,), 0.5, seed=8, offset=2**32 - 10)
    tail = engine.keep_mask((800 - 8 * 25,), 0.5, seed=8, offset=2**32 - 10 + 25)
    assert torch.equal(mask[8 * 25:], tail)


@pytest.mark.parametrize("offset", [2**32 - 3, 2**32, 2**63 - 2, 2**63, 2**64 - 130])
def test_large_offsets_carry_into_the_high_counter_word(offset):
    # elements 8g .. 8g+7 use counter offset + g: check against Python Philox directly
    n = 1024
    seed = 0xDEADBEEF_00C0FFEE
    x = torch.ones(n)
    mask = engine.dropout(x, 0.5, 1.0, seed, offset) != 0
    assert torch.equal(mask, engine.keep_mask((n,), 0.5, seed, offset))
    assert torch.equal(mask, reference.keep_mask_reference((n,), 0.5, seed, offset))
    for g in (0, 1, 2, 3, 127):
        c = offset + g
        w = reference.philox4x32((c & 0xFFFFFFFF, c >> 32, 0, 0),
                                 (seed & 0xFFFFFFFF, seed >> 32))
        lanes = [(w[j // 2] >> (16 * (j % 2))) & 0xFFFF for j in range(8)]
        assert mask[8 * g: 8 * g + 8].tolist() == [u >= 32768 for u in lanes]


def test_counters_must_not_pass_2_to_the_64():
    x = torch.ones(16)  # two counters
    engine.dropout(x, 0.5, 2.0, seed=1, offset=2**64 - 2)  # last counter 2**64 - 1: fine
    with pytest.raises(ValueError, match="2\\*\\*64"):
        engine.dropout(x, 0.5, 2.0, seed=1, offset=2**64 - 1)
    with pytest.raises(ValueError, match="offset"):
        engine.keep_mask((9,), 0.5, seed=1, offset=2**64 - 1)


@pytest.mark.parametrize(("seed", "offset"), [(-1, 0), (2**64, 0), (0, -1)])
def test_bad_seed_or_offset_is_a_value_error(seed, offset):
    with pytest.raises(ValueError):
        engine.dropout(torch.ones(3), 0.5, 2.0, seed, offset)
    with pytest.raises(ValueError):
        engine.keep_mask((3,), 0.5, seed, offset)
    with pytest.raises(ValueError):
        engine.dropout_(torch.ones(3), 0.5, 2.0, seed, offset)


def test_draw_seed_is_governed_by_manual_seed():
    torch.manual_seed(123)
    a = [engine.draw_seed() for _ in range(3)]
    torch.manual_seed(123)
    b = [engine.draw_seed() for _ in range(3)]
    assert a == b and len(set(a)) == 3
    assert all(0 <= s < 2**63 for s in a)
    g = torch.Generator().manual_seed(5)
    assert engine.draw_seed(g) == engine.draw_seed(torch.Generator().manual_seed(5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_any_thread_count_gives_the_same_bits(dtype):
    # Large inputs are split into one part per thread at chunk boundaries; an
    # odd tail and thread counts that do not divide the chunks must not matter.
    from dropkit.engine import cpu_kernels

    x = _input(37 * cpu_kernels.BLOCK_ELEMENTS + 5, dtype)
    assert x.numel() >= cpu_kernels.PARALLEL_MIN_ELEMENTS  # the split path is taken
    expected = reference.dropout_reference(x, 30000 / 65536, 1.25, 2**64 - 3, 2**32 - 1)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3, 5):
            torch.set_num_threads(n)
            out = torch.empty_like(x)
            cpu_kernels.dropout_into(x, out, 30000, 1.25, 2**64 - 3, 2**32 - 1)
            assert_same_bits(out, expected)
            mask = cpu_kernels.keep_mask(x.numel(), 30000, 2**64 - 3, 2**32 - 1)
            assert torch.equal(mask, reference.lanes_reference(x.numel(), 2**64 - 3, 2**32 - 1,
                                                               "cpu") >= 30000)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_can_use_the_engine_after_the_parent_did():
    # GNU OpenMP, Numba's threading layer here, kills a forked child that enters a
    # parallel region after its parent did; the engine runs serial kernels there.
    x = _input(2**18, torch.float32)
    expected = engine.dropout(x, 0.5, 2.0, seed=21)  # the parent starts its thread team
    pid = os.fork()
    if pid == 0:  # child: like a DataLoader worker
        code = 1
        try:
            torch.set_num_threads(1)
            y = engine.dropout(x, 0.5, 2.0, seed=21)
            code = 0 if torch.equal(y.view(torch.int32), expected.view(torch.int32)) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_concurrent_calls_from_threads_are_exact():
    # Several callers share dropkit's worker pool; each gets its own exact result.
    import threading

    x = _input(2**18, torch.float32)
    expected = {seed: engine.dropout(x, 0.5, 2.0, seed=seed).view(torch.int32)
                for seed in range(4)}
    failures = []

    def work(seed):
        for _ in range(5):
            y = engine.dropout(x, 0.5, 2.0, seed=seed).view(torch.int32)  # bits: x has NaNs
            if not torch.equal(y, expected[seed]):
                failures.append(seed)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_numba_threading_configuration_is_left_to_the_user():
    # dropkit runs its parts on its own threads: it neither selects Numba's
    # threading layer nor starts one (a user's parallel Numba code keeps the
    # process-wide choice it had).
    import subprocess
    import sys

    script = ("import torch, numba\nlayer = numba.config.THREADING_LAYER\n"
              "from dropkit import engine\n"
              "engine.dropout(torch.ones(2**20), 0.5, 2.0, seed=1)\n"
              "engine.keep_mask((2**20,), 0.5, seed=1)\n"
              "assert numba.config.THREADING_LAYER == layer, numba.config.THREADING_LAYER\n"
              "try:\n    numba.threading_layer()\nexcept ValueError:\n    print('no layer')\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "no layer"


_SOFTWARE_FLOAT16 = """
import torch
from dropkit import engine
from dropkit.engine import half_precision, reference
assert not half_precision.F16C, "expected the software float16 passes"
g = torch.Generator().manual_seed(0)
every_pattern = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.float16)
for x in (every_pattern, (torch.randn(70000, generator=g) * 1e3).half()):
    x = x[: x.numel() // 128 * 128]
    r = torch.randn(x.shape, generator=g).half()
    b = torch.randn(128, generator=g).half()
    for got, want in [
        (engine.dropout(x, 0.3, 1 / 0.7, 5, 2), reference.dropout_reference(x, 0.3, 1 / 0.7, 5, 2)),
        (engine.bias_dropout_add(x.view(-1, 128), b, r.view(-1, 128), 0.3, 1 / 0.7, 5, 2),
         reference.bias_dropout_add_reference(x.view(-1, 128), b, r.view(-1, 128), 0.3,
                                              1 / 0.7, 5, 2)),
    ]:
        nan = want.isnan()
        assert torch.equal(got.isnan(), nan)
        assert torch.equal(got[~nan].view(torch.int16), want[~nan].view(torch.int16))
"""


@pytest.mark.slow  # compiles the float16 kernels for a generic CPU: ~20-40 s
def test_float16_without_f16c_takes_the_software_passes_with_the_same_bits():
    # Numba compiled for a CPU without F16C: the float16 conversions in software
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CPU_NAME": "generic", "NUMBA_CPU_FEATURES": ""}
    done = subprocess.run([sys.executable, "-c", _SOFTWARE_FLOAT16], env=env, timeout=600,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
