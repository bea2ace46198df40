"""The Triton kernel equals the pure-torch oracle.

Without a GPU the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``),
which accepts CPU tensors.  The variable is read when ``@triton.jit``
decorates a function, so the interpreted check runs in a fresh subprocess.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from dropkit.engine import reference

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed (pip install dropkit[gpu])")

CASES = [(12345, 7), (1, 1), (0, 0), (2**64 - 1, 2**32 - 3), (2**63 + 5, 2**64 - 700)]

_SCRIPT = textwrap.dedent("""
    import torch
    from dropkit.engine import reference, triton_kernels
    from dropkit.engine.reference import philox4x32

    import triton
    import triton.language as tl

    @triton.jit
    def kat(out_ptr):
        w0, w1, w2, w3 = tl.randint4x(0, tl.zeros((1,), dtype=tl.uint64))
        tl.store(out_ptr + tl.arange(0, 1), w0.to(tl.int64))
        tl.store(out_ptr + 1 + tl.arange(0, 1), w1.to(tl.int64))
        tl.store(out_ptr + 2 + tl.arange(0, 1), w2.to(tl.int64))
        tl.store(out_ptr + 3 + tl.arange(0, 1), w3.to(tl.int64))

    words = torch.zeros(4, dtype=torch.int64)
    kat[(1,)](words)
    assert tuple(words.tolist()) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8), words

    failures = []
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for n in (1, 7, 8, 9, 5000):
            x = torch.randn(n).to(dtype)
            if n >= 9:
                x[:3] = torch.tensor([float("inf"), float("nan"), -0.0])
            for seed, offset in CASES:
                out = torch.empty_like(x)
                triton_kernels.dropout_into(x, out, 19661, 1 / 0.7, seed, offset)
                ref = reference.dropout_reference(x, 19661 / 65536, 1 / 0.7, seed, offset)
                bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()]
                nan = ref.isnan()
                if not (torch.equal(out.isnan(), nan)
                        and torch.equal(out[~nan].view(bits), ref[~nan].view(bits))):
                    failures.append((dtype, n, seed, offset))
    for seed, offset in CASES:
        mask = triton_kernels.keep_mask(1001, 30000, seed, offset, "cpu")
        if not torch.equal(mask, reference.keep_mask_reference((1001,), 30000 / 65536,
                                                               seed, offset)):
            failures.append(("keep_mask", seed, offset))
    assert not failures, failures
    print("ok")
""")


def test_triton_kernel_in_interpreter_equals_reference():
    env = dict(os.environ, TRITON_INTERPRET="1")
    script = f"CASES = {CASES!r}\n" + _SCRIPT
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_triton_kernel_on_gpu_equals_reference(dtype):
    from dropkit import engine

    x = torch.randn(2**20 + 3, device="cuda").to(dtype)
    for seed, offset in CASES:
        y = engine.dropout(x, 0.3, 1 / 0.7, seed, offset)
        ref = reference.dropout_reference(x, 0.3, 1 / 0.7, seed, offset)
        torch.testing.assert_close(y, ref, rtol=0, atol=0, equal_nan=True)
        mask = engine.keep_mask(x.shape, 0.3, seed, offset, device="cuda")
        assert torch.equal(mask, reference.keep_mask_reference(x.shape, 0.3, seed, offset, "cuda"))


@pytest.mark.slow
def test_triton_kernels_compile_for_a_cuda_gpu_ahead_of_time():
    # No GPU is needed to lower the kernels to PTX and a cubin (Triton ships
    # ptxas): this catches typing errors the interpreter lets through.
    pytest.importorskip("triton.backends.nvidia")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    from dropkit.engine import triton_kernels

    target = GPUTarget("cuda", 90, 32)
    scalars = {"n": "i64", "threshold": "i32", "seed": "u64", "offset": "u64"}
    for dtype in ("fp32", "fp64", "fp16", "bf16"):
        signature = {"x_ptr": f"*{dtype}", "out_ptr": f"*{dtype}", "scale_ptr": "*fp64",
                     **scalars, "BLOCK_COUNTERS": "constexpr"}
        source = ASTSource(fn=triton_kernels._dropout_kernel, signature=signature,
                           constexprs={"BLOCK_COUNTERS": triton_kernels.BLOCK_COUNTERS})
        kernel = compile(source, target=target)
        assert "mul.hi.u32" in kernel.asm["ptx"]  # Philox's multiply-high is there
    signature = {"out_ptr": "*i8", **scalars, "BLOCK_COUNTERS": "constexpr"}
    compile(ASTSource(fn=triton_kernels._keep_mask_kernel, signature=signature,
                      constexprs={"BLOCK_COUNTERS": triton_kernels.BLOCK_COUNTERS}), target=target)
