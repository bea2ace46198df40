"""Keyed masks: the reference follows the spec, the fast kernels equal the reference bit for bit."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from dropkit.engine import keyed, keyed_cpu, keyed_reference
from dropkit.engine.keyed import Keys
from dropkit.engine.reference import philox4x32, threshold

# (seed, step, call) at the edges of their ranges
KEYS = [(0, 0, 0), (12345, 7, 3), (2**64 - 1, 2**32 - 1, 2**31 - 1), (2**63 + 5, 1, 1)]
IDS = torch.tensor([5, 0, 2**32 - 1, 77, 5], dtype=torch.int64)  # a repeated id too


def test_known_answers_match_the_spec_text():
    # docs/mask-spec.md, "Keyed masks": counter (g, id, step, call | 2**31), key = seed
    seed, step, call, sample = 0x0123456789ABCDEF, 42, 3, 1000
    lanes = keyed_reference.keyed_lanes_reference(16, seed, step, call, torch.tensor([sample]))
    for g in range(2):
        words = philox4x32((g, sample, step, call | 2**31), (seed & 0xFFFFFFFF, seed >> 32))
        expected = [(words[j // 2] >> (16 * (j % 2))) & 0xFFFF for j in range(8)]
        assert lanes[0, 8 * g:8 * g + 8].tolist() == expected
    assert [f"{w:08x}" for w in philox4x32((0, 1000, 42, 3 | 2**31),
                                           (0x89ABCDEF, 0x01234567))] == KAT_WORDS


# printed in docs/mask-spec.md
KAT_WORDS = ["8bffcf34", "bea946da", "5380dc16", "9db16c3d"]


def test_keyed_counters_never_meet_unkeyed_ones():
    # the tag bit: an unkeyed counter has c2 = c3 = 0, a keyed one has c3 >= 2**31
    words = keyed_reference.keyed_words_reference(8, 1, 0, 0, torch.tensor([0]))
    assert int(words[0][0, 0]) != philox4x32((0, 0, 0, 0), (1, 0))[0]


@pytest.mark.parametrize("m", [1, 7, 8, 9, 16, 100, 4096, 4097, 9000])
def test_cpu_keep_mask_equals_reference(m):
    for seed, step, call in KEYS:
        keys = Keys(seed, step, call, IDS)
        mask = keyed.keyed_keep_mask((len(IDS), m), 0, 0.3, keys)
        ref = keyed_reference.keyed_keep_mask_reference((len(IDS), m), 0, 0.3, seed, step, call,
                                                        IDS)
        assert torch.equal(mask, ref)
        assert torch.equal(mask[0], mask[4])  # same id, same mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m", [1, 9, 16, 5000])
def test_keyed_dropout_equals_reference(dtype, m):
    x = torch.randn(len(IDS), m, generator=torch.Generator().manual_seed(m)).to(dtype)
    x.view(-1)[:3] = torch.tensor([float("inf"), float("nan"), -0.0])
    for seed, step, call in KEYS:
        y = keyed._keyed_dropout_values(x, 0.3, 1 / 0.7, Keys(seed, step, call, IDS), 0)
        ref = keyed_reference.keyed_dropout_reference(x, 0.3, 1 / 0.7, seed, step, call, IDS)
        nan = ref.isnan()
        assert torch.equal(y.isnan(), nan)
        bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()]
        assert torch.equal(y[~nan].view(bits), ref[~nan].view(bits))


def test_other_batch_dims_and_whole_tensor_rows():
    keys = Keys(9, 1, 2, torch.tensor([3, 1, 4]))
    mask = keyed.keyed_keep_mask((5, 3, 7), 1, 0.5, keys)  # the batch on dim 1
    ref = keyed_reference.keyed_keep_mask_reference((5, 3, 7), 1, 0.5, 9, 1, 2, keys.ids)
    assert torch.equal(mask, ref)
    row = keyed_reference.keyed_keep_mask_reference((1, 35), 0, 0.5, 9, 1, 2, torch.tensor([1]))
    assert torch.equal(mask[:, 1, :].reshape(1, -1), row)
    whole = keyed.keyed_keep_mask((4, 6), None, 0.5, Keys(9, 1, 2, torch.tensor([4])))
    one = keyed_reference.keyed_keep_mask_reference((1, 24), 0, 0.5, 9, 1, 2, torch.tensor([4]))
    assert torch.equal(whole.reshape(1, -1), one)


def test_threads_do_not_change_the_mask():
    x = torch.randn(3, 1 << 18)
    ids = torch.tensor([10, 20, 30])
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(keyed_cpu.keyed_dropout(x, threshold(0.4), 2.0, 1, 2, 3, ids))
            outs.append(keyed_cpu.keyed_dropout(x.reshape(-1, 16), threshold(0.4), 2.0, 1, 2, 3,
                                                torch.arange(x.numel() // 16)))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(outs[i], outs[i % 2]) for i in range(len(outs)))


def test_keep_rate_is_binomial():
    # 2**20 lanes at p=0.3: the drop count is within 5 standard deviations of its mean
    n, p = 1 << 20, threshold(0.3) / 65536
    mask = keyed.keyed_keep_mask((64, n // 64), 0, 0.3, Keys(5, 6, 7, torch.arange(64)))
    dropped = int((~mask).sum())
    sd = (n * p * (1 - p)) ** 0.5
    assert abs(dropped - n * p) < 5 * sd


def test_keys_out_of_range_are_refused():
    with pytest.raises(ValueError, match="step"):
        keyed_reference.check_keys(0, 2**32, 0, 1)
    with pytest.raises(ValueError, match="2\\*\\*31"):
        keyed_reference.check_keys(0, 0, 2**31, 1)
    with pytest.raises(ValueError, match="sample ids"):
        keyed_reference.check_keys(0, 0, 0, 1, torch.tensor([2**32]))


_TRITON_SCRIPT = textwrap.dedent("""
    import torch
    from dropkit.engine import keyed_reference, keyed_triton
    from dropkit.engine.reference import threshold

    ids = torch.tensor([5, 0, 2**32 - 1, 77, 5])
    failures = []
    for m in (1, 7, 8, 9, 300):
        for seed, step, call in KEYS:
            for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
                x = torch.randn(len(ids), m).to(dtype)
                out = keyed_triton.keyed_dropout(x, threshold(0.3), 1 / 0.7, seed, step, call, ids)
                ref = keyed_reference.keyed_dropout_reference(x, 0.3, 1 / 0.7, seed, step, call,
                                                              ids)
                bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()]
                if not torch.equal(out.view(bits), ref.view(bits)):
                    failures.append((dtype, m, seed))
            mask = keyed_triton.keyed_keep_mask(len(ids), m, threshold(0.3), seed, step, call,
                                                ids, "cpu")
            ref = keyed_reference.keyed_keep_mask_reference((len(ids), m), 0, 0.3, seed, step,
                                                            call, ids)
            if not torch.equal(mask.reshape(ref.shape), ref):
                failures.append(("mask", m, seed))
    assert not failures, failures
    print("ok")
""")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_keyed_kernels_in_interpreter_equal_reference():
    env = dict(os.environ, TRITON_INTERPRET="1")
    script = f"KEYS = {KEYS!r}\n" + _TRITON_SCRIPT
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
