"""The eager path's shortcuts change nothing but the time: the seed drawn per call, the
small-tensor kernel call and the direct ``autograd.Function`` apply."""

from __future__ import annotations

import sys
import threading

import pytest
import torch

import dropkit.functional as F
from dropkit import engine
from dropkit.engine import op


def _fresh_tensor_draws(n: int) -> list[int]:
    """``draw_seed``'s definition: a new int64 tensor's ``random_`` per draw."""
    return [torch.empty((), dtype=torch.int64).random_().item() for _ in range(n)]


def test_draw_seed_is_a_fresh_tensors_random_draw():
    torch.manual_seed(123)
    expected = _fresh_tensor_draws(5)
    torch.manual_seed(123)
    assert [engine.draw_seed() for _ in range(5)] == expected


def test_threads_drawing_at_once_never_share_a_draw():
    # Each thread draws into its own scratch tensor: a shared one would let a
    # thread read another's draw (a repeated seed, and a lost one). Switching
    # threads every microsecond makes that interleaving likely.
    threads, per_thread = 4, 10000
    torch.manual_seed(7)
    expected = sorted(_fresh_tensor_draws(threads * per_thread))
    torch.manual_seed(7)
    drawn: list[list[int]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def draw(i: int) -> None:
        start.wait()
        drawn[i].extend(engine.draw_seed() for _ in range(per_thread))

    workers = [threading.Thread(target=draw, args=(i,)) for i in range(threads)]
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(previous)
    assert sorted(s for d in drawn for s in d) == expected


def test_a_thread_whose_first_draw_is_under_inference_mode_draws_outside_it_too():
    seeds = []

    def draw() -> None:
        with torch.inference_mode():
            seeds.append(engine.draw_seed())
        seeds.append(engine.draw_seed())  # an inference tensor would refuse this write

    worker = threading.Thread(target=draw)
    worker.start()
    worker.join()
    assert len(seeds) == 2


@pytest.mark.parametrize("numel", [1, 2048, 6400, (1 << 16) + 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_contiguous_cpu_calls_equal_the_general_path(numel, dtype):
    x = torch.randn(numel).to(dtype)
    params = (engine.threshold(0.3), 1 / 0.7, 2**64 - 9, 5)
    fast = op.dropout_impl(x, *params)
    strided = torch.stack([x, x], dim=1)[:, 0]  # the same values, every other element
    general = op.dropout_impl(strided, *params)
    assert fast.is_contiguous() and fast.dtype == dtype
    assert torch.equal(fast.view(torch.uint8), general.contiguous().view(torch.uint8))


def test_direct_apply_records_the_same_graph_as_function_apply():
    x = torch.randn(32, 64, requires_grad=True)
    params = (engine.threshold(0.5), 2.0, 11, 0)
    y = op.eager_dropout(x, params)
    assert type(y.grad_fn).__name__ == "EagerDropoutBackward"
    reference = op.EagerDropout.apply(x, params)
    assert torch.equal(y, reference)
    g = torch.randn_like(y)
    assert torch.equal(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(reference, x, g)[0])


def test_functorch_transforms_still_get_torchs_error():
    x = torch.randn(4, 8)
    with pytest.raises(RuntimeError, match="setup_context"):
        torch.func.grad(lambda t: F.dropout(t, 0.5, seed=1).sum())(x)


def test_importing_dropkit_does_not_import_torch_dynamo():
    # torch.compiler.disable applied at import would pull torch._dynamo in (~1.7 s)
    import subprocess

    code = "import sys, dropkit; sys.exit('torch._dynamo' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


@pytest.mark.slow  # a fresh interpreter: ~3 s
def test_keyed_masks_without_torch_compile_do_not_import_torch_dynamo():
    import subprocess

    code = ("import sys, torch, dropkit as dk\n"
            "with dk.mask_keys(seed=1, step=0, sample_ids=torch.arange(4)):\n"
            "    x = torch.randn(4, 8, requires_grad=True)\n"
            "    dk.functional.dropout(x, 0.5).sum().backward()\n"
            "sys.exit('torch._dynamo' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
