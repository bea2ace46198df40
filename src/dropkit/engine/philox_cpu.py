"""Philox4x32-10 in Numba: the one copy of the rounds that every CPU kernel inlines.

``philox4x32_10`` is the spec's generator (docs/mask-spec.md) on one counter.
Its words are held in uint64 (always < 2**32) so that the 32 x 32 -> 64-bit
products are exact; a loop of it over independent counters has no
dependencies, and LLVM vectorises it (8 counters per AVX-512 instruction, the
products as ``vpmuludq``).  The loops below differ only in where the four
counter words come from.

Numba keys a cached function on the source of its own file only, so a kernel
in another file that inlines these functions would keep its stale machine code
after an edit here.  ``kernel`` is ``numba.njit(cache=True)`` with the hash of
the files whose functions are inlined elsewhere added to the cache key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba
import numpy as np

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
LOW32 = np.uint64(0xFFFFFFFF)
SHIFT32 = np.uint64(32)

# the files whose Numba functions other files inline: a change to any of them
# must miss the cache of every kernel
_INLINED_SOURCES = ("philox_cpu.py", "half_precision.py", "cpu_runtime.py")


def _sources_digest() -> str:
    digest = hashlib.sha256()
    for name in _INLINED_SOURCES:
        try:
            digest.update((Path(__file__).parent / name).read_bytes())
        except OSError:  # pragma: no cover - sources not on disk (zipped): no salt
            pass
    return digest.hexdigest()


_DIGEST = _sources_digest()


def kernel(fn):
    """``numba.njit(cache=True, nogil=True)``, its cache entry also keyed on ``_INLINED_SOURCES``.

    The hash is appended to the key under which Numba's cache indexes the
    compiled code (a private hook: where a Numba version lacks it, the cache is
    keyed as Numba keys it).
    """
    dispatcher = numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")(fn)
    cache = getattr(dispatcher, "_cache", None)
    index_key = getattr(cache, "_index_key", None)
    if index_key is not None:
        cache._index_key = lambda sig, codegen: (*index_key(sig, codegen), _DIGEST)
    return dispatcher


inline = numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")


@inline
def key_words(seed):
    """The key ``(lo32(seed), hi32(seed))`` of a uint64 seed."""
    return seed & LOW32, seed >> SHIFT32


@inline
def philox4x32_10(c0, c1, c2, c3, key0, key1):
    """Philox4x32-10 of counter ``(c0, c1, c2, c3)`` with key ``(key0, key1)``: four words."""
    k0 = key0
    k1 = key1
    for r in range(10):
        if r > 0:
            k0 = (k0 + _W0) & LOW32
            k1 = (k1 + _W1) & LOW32
        p0 = _M0 * c0
        p1 = _M1 * c2
        n0 = (p1 >> SHIFT32) ^ c1 ^ k0
        n2 = (p0 >> SHIFT32) ^ c3 ^ k1
        c1 = p1 & LOW32
        c3 = p0 & LOW32
        c0 = n0
        c2 = n2
    return c0, c1, c2, c3


@inline
def _store(words, k, w0, w1, w2, w3):
    """Counter k's words at ``words[4k:4k + 4]``: read as uint16, its lanes in the spec's order."""
    words[4 * k] = np.uint32(w0)
    words[4 * k + 1] = np.uint32(w1)
    words[4 * k + 2] = np.uint32(w2)
    words[4 * k + 3] = np.uint32(w3)


@inline
def philox_words_into(first_counter, count, key0, key1, words):
    """Words of the spec's counters ``(lo32(c), hi32(c), 0, 0)``, ``c = first_counter + k``."""
    zero = np.uint64(0)
    for k in range(count):
        counter = first_counter + np.uint64(k)
        w0, w1, w2, w3 = philox4x32_10(counter & LOW32, counter >> SHIFT32, zero, zero, key0, key1)
        _store(words, k, w0, w1, w2, w3)


@inline
def philox_keyed_into(first, count, c1, c2, c3, key0, key1, words):
    """Words of the counters ``(first + k, c1, c2, c3)``, k < count (keyed masks)."""
    for k in range(count):
        w0, w1, w2, w3 = philox4x32_10(first + np.uint64(k), c1, c2, c3, key0, key1)
        _store(words, k, w0, w1, w2, w3)


@inline
def philox_listed_into(count, c0s, c1s, c2, c3, key0, key1, words):
    """Words of the counters ``(c0s[k], c1s[k], c2, c3)``, k < count (many short rows at once)."""
    for k in range(count):
        w0, w1, w2, w3 = philox4x32_10(c0s[k], c1s[k], c2, c3, key0, key1)
        _store(words, k, w0, w1, w2, w3)


@kernel
def _philox_block_words(first_counter, count, seed, words):
    key0, key1 = key_words(seed)
    philox_words_into(first_counter, count, key0, key1, words)


def philox_words(first_counter: int, count: int, seed: int) -> np.ndarray:
    """The Numba generator alone: words of counters ``(lo32(c), hi32(c), 0, 0)``, for tests."""
    words = np.empty(4 * count, dtype=np.uint32)
    _philox_block_words(np.uint64(first_counter), count, np.uint64(seed), words)
    return words.reshape(count, 4)
