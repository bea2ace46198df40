"""The fused bias-dropout-add kernels equal the step-by-step reference bit for bit.

``residual + dropout(x + bias)`` rounds three times in the 16-bit dtypes; the
Numba and Triton kernels must round at the same places, lay the mask on the
same elements and give the same bits on any thread count.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from dropkit import engine
from dropkit.engine import cpu_kernels, reference

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
CASES = [(12345, 7), (0, 0), (2**64 - 1, 2**32 - 3)]


def assert_same_bits(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal bit patterns, except that any NaN equals any NaN (payloads are not specified)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    nan = expected.isnan()
    assert torch.equal(actual.isnan(), nan)
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[actual.element_size()]
    assert torch.equal(actual[~nan].view(bits), expected[~nan].view(bits))


def _inputs(shape, dtype, bias_shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(shape, generator=gen)).to(dtype)
    residual = torch.randn(shape, generator=gen).to(dtype)
    bias = None if bias_shape is None else torch.randn(bias_shape, generator=gen).to(dtype)
    if x.numel() >= 9:  # specials; 1e-6 and -1e-6 are float16 subnormals
        x.view(-1)[:6] = torch.tensor([float("inf"), float("nan"), -0.0, 1e-6, 7e4, -3.0])
        residual.view(-1)[:6] = torch.tensor([-0.0, 1.0, -0.0, -1e-6, 7e4, float("-inf")])
    return x, bias, residual


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,bias_shape", [
    ((1,), (1,)), ((3, 5), (5,)), ((9, 77), None), ((4, 3, 1000), (1000,)),
    ((4, 3, 100), (3, 100)), ((2, 3, 4, 5), (3, 1, 1)), ((5, 7), (1, 7)),
    # short periods, repeated to a longer one before the kernel
    ((4, 3, 1000), (1,)), ((6, 500), (1, 1)), ((40, 3), (3,)),
])
def test_cpu_kernel_equals_reference(dtype, shape, bias_shape):
    x, bias, residual = _inputs(shape, dtype, bias_shape)
    for seed, offset in CASES:
        out = engine.bias_dropout_add(x, bias, residual, 0.3, 1 / 0.7, seed, offset)
        assert_same_bits(out, reference.bias_dropout_add_reference(
            x, bias, residual, 0.3, 1 / 0.7, seed, offset))


@pytest.mark.parametrize("dtype", DTYPES)
def test_any_thread_count_gives_the_same_bits(dtype):
    # parts start at chunk boundaries that are not multiples of the bias period
    n = 37 * cpu_kernels.BLOCK_ELEMENTS + 5
    x, bias, residual = _inputs((n // 1000, 1000), dtype, (1000,))
    assert x.numel() >= cpu_kernels.PARALLEL_MIN_ELEMENTS  # the split path is taken
    expected = reference.bias_dropout_add_reference(x, bias, residual, 30000 / 65536, 1.25,
                                                    2**64 - 3, 2**32 - 1)
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3, 5):
            torch.set_num_threads(count)
            out = torch.empty_like(x)
            cpu_kernels.bias_dropout_add_into(x, bias, residual, out, 30000, 1.25, 2**64 - 3,
                                              2**32 - 1)
            assert_same_bits(out, expected)
    finally:
        torch.set_num_threads(threads)


def test_inputs_the_kernel_does_not_take_run_the_sequence():
    x, bias, residual = _inputs((6, 8), torch.float32, (8,))
    cases = [
        (x.t().contiguous().t(), bias, residual),  # a non-contiguous x
        (x, bias.double(), residual),  # mixed dtypes promote
        (x, bias, residual[:1]),  # a broadcasting residual
        (x[:, :1], bias, residual),  # a bias that grows x
    ]
    for a, b, r in cases:
        out = engine.bias_dropout_add(a, b, r, 0.4, 1 / 0.6, 9)
        expected = r + engine.dropout(a + b, 0.4, 1 / 0.6, 9)
        assert_same_bits(out, expected)


_SCRIPT = textwrap.dedent("""
    import torch
    from dropkit.engine import cpu_kernels, reference, triton_kernels

    def same(a, b):
        bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        nan = b.isnan()
        return torch.equal(a.isnan(), nan) and torch.equal(a[~nan].view(bits), b[~nan].view(bits))

    failures = []
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for shape in [(1,), (3, 5), (9, 77), (2, 3, 1000)]:
            gen = torch.Generator().manual_seed(1)
            x = (3 * torch.randn(shape, generator=gen)).to(dtype)
            r = torch.randn(shape, generator=gen).to(dtype)
            b = torch.randn(shape[-1], generator=gen).to(dtype)
            if x.numel() >= 9:
                x.view(-1)[:4] = torch.tensor([float("inf"), float("nan"), -0.0, 1e-6])
                r.view(-1)[:4] = torch.tensor([-0.0, 1.0, -0.0, -1e-6])
            for bias in (b, None):
                for seed, offset in CASES:
                    on_triton, on_cpu = torch.empty_like(x), torch.empty_like(x)
                    triton_kernels.bias_dropout_add_into(x, bias, r, on_triton, 19661, 1 / 0.7,
                                                         seed, offset)
                    cpu_kernels.bias_dropout_add_into(x, bias, r, on_cpu, 19661, 1 / 0.7,
                                                      seed, offset)
                    ref = reference.bias_dropout_add_reference(x, bias, r, 19661 / 65536,
                                                               1 / 0.7, seed, offset)
                    if not (same(on_triton, on_cpu) and same(on_cpu, ref)):
                        failures.append((dtype, shape, bias is None, seed, offset))
    assert not failures, failures
    print("ok")
""")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                    reason="triton is not installed (pip install dropkit[gpu])")
def test_triton_kernel_in_interpreter_equals_cpu_kernel_and_reference():
    # TRITON_INTERPRET is read when @triton.jit decorates: a fresh process
    env = dict(os.environ, TRITON_INTERPRET="1")
    script = f"CASES = {CASES!r}\n" + _SCRIPT
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_kernel_on_gpu_equals_reference(dtype):
    x, bias, residual = _inputs((2**12 + 3, 256), dtype, (256,))
    x, bias, residual = x.cuda(), bias.cuda(), residual.cuda()
    for seed, offset in CASES:
        out = engine.bias_dropout_add(x, bias, residual, 0.3, 1 / 0.7, seed, offset)
        expected = reference.bias_dropout_add_reference(x, bias, residual, 0.3, 1 / 0.7, seed,
                                                        offset)
        assert_same_bits(out.cpu(), expected.cpu())


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_kernel_compiles_for_a_cuda_gpu_without_fma():
    # An FMA would round (x + b) * s + r once where the sequence rounds twice.
    pytest.importorskip("triton.backends.nvidia")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    from dropkit.engine import triton_kernels

    scalars = {"n": "i64", "period": "i64", "threshold": "i32", "seed": "u64", "offset": "u64"}
    for dtype in ("fp32", "fp64", "fp16", "bf16"):
        signature = {"x_ptr": f"*{dtype}", "bias_ptr": f"*{dtype}", "residual_ptr": f"*{dtype}",
                     "out_ptr": f"*{dtype}", "scale_ptr": "*fp64", **scalars,
                     "HAS_BIAS": "constexpr", "BLOCK_COUNTERS": "constexpr"}
        source = ASTSource(fn=triton_kernels._bias_dropout_add_kernel, signature=signature,
                           constexprs={"HAS_BIAS": True,
                                       "BLOCK_COUNTERS": triton_kernels.BLOCK_COUNTERS})
        kernel = compile(source, target=GPUTarget("cuda", 90, 32),
                         options={"enable_fp_fusion": False})
        assert "mul.hi.u32" in kernel.asm["ptx"] and "fma" not in kernel.asm["ptx"]
