"""Philox4x32 known answers (Random123's kat_vectors) and the spec's lane layout."""

import pytest
import torch

from dropkit.engine import reference
from dropkit.engine.reference import philox4x32, philox4x32_torch

# Random123 tests/kat_vectors: name, rounds, counter[4], key[2] -> output[4].
KAT_VECTORS = """
philox4x32 7 00000000 00000000 00000000 00000000 00000000 00000000
    5f6fb709 0d893f64 4f121f81 4f730a48
philox4x32 7 ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff
    5207ddc2 45165e59 4d8ee751 8c52f662
philox4x32 7 243f6a88 85a308d3 13198a2e 03707344 a4093822 299f31d0
    4dfccaba 190a87f0 c47362ba b6b5242a
philox4x32 10 00000000 00000000 00000000 00000000 00000000 00000000
    6627e8d5 e169c58d bc57ac4c 9b00dbd8
philox4x32 10 ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff
    408f276d 41c83b0e a20bc7c6 6d5451fd
philox4x32 10 243f6a88 85a308d3 13198a2e 03707344 a4093822 299f31d0
    d16cfe09 94fdcceb 5001e420 24126ea1
"""


def _kat():
    # each vector is 12 tokens: name, rounds, counter[4], key[2], output[4]
    tokens = KAT_VECTORS.split()
    for start in range(0, len(tokens), 12):
        _, rounds, *words = tokens[start:start + 12]
        words = [int(w, 16) for w in words]
        yield int(rounds), tuple(words[:4]), tuple(words[4:6]), tuple(words[6:])


@pytest.mark.parametrize(("rounds", "counter", "key", "expected"), list(_kat()))
def test_python_philox_matches_random123(rounds, counter, key, expected):
    assert philox4x32(counter, key, rounds) == expected


@pytest.mark.parametrize(("rounds", "counter", "key", "expected"), list(_kat()))
def test_torch_philox_matches_random123(rounds, counter, key, expected):
    c = [torch.tensor([w], dtype=torch.int64) for w in counter]
    out = philox4x32_torch(*c, key[0], key[1], rounds)
    assert tuple(int(w) for w in out) == expected


def test_numba_philox_matches_random123_and_python():
    from dropkit.engine import cpu_kernels

    # counter (0, 0, 0, 0), key (0, 0): the one vector with the spec's counter form
    assert tuple(int(w) for w in cpu_kernels.philox_words(0, 1, 0)[0]) == (
        0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    # many counters, crossing the 2**32 carry of the low word, against the Python version
    seed = 0xFFFFFFFF_243F6A88
    first = 2**32 - 700
    words = cpu_kernels.philox_words(first, 1500, seed)
    for k in (0, 1, 699, 700, 701, 1499):
        c = first + k
        expected = philox4x32((c & 0xFFFFFFFF, c >> 32, 0, 0), (seed & 0xFFFFFFFF, seed >> 32))
        assert tuple(int(w) for w in words[k]) == expected


def test_lane_layout_follows_the_spec():
    seed, offset = 0x0123456789ABCDEF, 2**32 - 2
    u = reference.lanes_reference(40, seed, offset)
    for i in range(40):
        g, j = divmod(i, 8)
        c = offset + g
        w = philox4x32((c & 0xFFFFFFFF, c >> 32, 0, 0), (seed & 0xFFFFFFFF, seed >> 32))
        assert int(u[i]) == (w[j // 2] >> (16 * (j % 2))) & 0xFFFF


@pytest.mark.parametrize(("p", "t"), [(0.0, 0), (1.0, 65536), (0.5, 32768),
                                      (0.1, 6554), (1 / 131072, 1), (0.3, 19661)])
def test_threshold_quantises_p_to_1_over_65536(p, t):
    assert reference.threshold(p) == t
