"""What ``dropkit bench`` times: one function per kind of row, each returning its JSON row.

- :func:`time_dropout`: ``dropkit.functional.dropout`` against
  ``torch.nn.functional.dropout`` and the memory-bound ``torch.mul(x, s, out=y)``
  on a large flat tensor, forward, backward and forward + backward;
- :func:`time_small_forward_backward`: forward + backward on the small
  activations of an MLP (``(32, 64)``), where the cost is per call, not per element;
- :func:`time_keep_mask`: the bool mask alone, against torch's ``bernoulli_``;
- :func:`time_bias_dropout_add`: the fused op against its unfused spelling;
- :func:`time_residual_mlp`: a training step with ``ResidualDropPath`` against ``DropPath``.

Every row times its contenders side by side (``dropkit.bench_timing``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch

from dropkit.bench_timing import (
    format_size,
    interleave,
    median_ratio,
    saved_bytes_per_element,
    summary_ms,
)

CONTENDERS = ("dropkit", "torch", "mul")
# "forward" allocates its output, as F.dropout does; "forward in place" writes
# into its input (inplace=True), as the multiply writes into an existing tensor:
# the fair test of the kernel against a memory pass.
PHASES = ("forward", "forward in place", "backward", "forward+backward")
FUSED_WIDTH = 1024  # the bias_dropout_add rows use x of (n / 1024, 1024) and a (1024,) bias


def _phase_functions(name: str, x: torch.Tensor, grad: torch.Tensor, p: float,
                     out: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The three timed callables of one contender."""
    scale = 1.0 / (1.0 - p)
    # a copy of x for the in-place phase, which scales it a little more on
    # every call (2**16 after 16 calls at p = 0.5: far from overflow)
    own = x.clone()
    if name == "mul":
        def once():
            return torch.mul(x, scale, out=out)

        def twice():
            torch.mul(x, scale, out=out)
            return torch.mul(grad, scale, out=out)

        def in_place():
            return own.mul_(scale)

        return {"forward": once, "forward in place": in_place, "backward": once,
                "forward+backward": twice}

    if name.startswith("dropkit"):
        from dropkit.functional import dropout as fn
    else:
        fn = torch.nn.functional.dropout
    leaf = x.detach().requires_grad_()
    kept = {}

    def forward():
        with torch.no_grad():
            return fn(x, p, training=True)

    def forward_in_place():
        with torch.no_grad():
            return fn(own, p, training=True, inplace=True)

    def backward():
        if "y" not in kept:  # one graph, kept alive across repetitions
            kept["y"] = fn(leaf, p, training=True)
        return torch.autograd.grad(kept["y"], leaf, grad, retain_graph=True)

    def forward_backward():
        y = fn(leaf, p, training=True)
        return torch.autograd.grad(y, leaf, grad)

    return {"forward": forward, "forward in place": forward_in_place, "backward": backward,
            "forward+backward": forward_backward}


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_dropout(n: int, dtype_name: str, p: float, repeat: int,
                 on_progress: Callable[[str, int], None] | None = None) -> dict:
    """One large row: every phase of every contender on ``n`` elements, wall time.

    Each repetition times every phase of every contender once, the contenders'
    order rotated every repetition. ``on_progress(description, repetitions
    done)`` is told where the row is.
    """
    from dropkit import engine
    from dropkit.functional import dropout as dk_dropout

    report = on_progress or (lambda description, done: None)
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=gen).to(dtype)
    grad = torch.randn(n, generator=gen).to(dtype)
    out = torch.empty_like(x)
    label = f"{dtype_name} {format_size(n)}"
    report(f"{label}: warm-up (Numba compile or cache)", 0)
    start = time.perf_counter()
    engine.dropout(x, p, 2.0, seed=1)
    first_call_s = time.perf_counter() - start
    funcs = {name: _phase_functions(name, x, grad, p, out) for name in CONTENDERS}
    for name in CONTENDERS:  # warm every path once, untimed
        for phase in PHASES:
            funcs[name][phase]()
    times = {(name, phase): [] for name in CONTENDERS for phase in PHASES}
    for r in range(repeat):
        report(f"{label}: repetition {r + 1}", r)
        turn = r % len(CONTENDERS)
        order = CONTENDERS[turn:] + CONTENDERS[:turn]  # rotate who goes first
        for phase in PHASES:
            for name in order:
                times[(name, phase)].append(_timed(funcs[name][phase]))
    report(label, repeat)
    del funcs
    row = {"dtype": dtype_name, "numel": n, "p": p, "repeat": repeat,
           "dropkit_first_call_s": first_call_s, "phases": {}}
    for phase in PHASES:
        dk, tt, mul = (times[(name, phase)] for name in CONTENDERS)
        row["phases"][phase] = {
            **summary_ms({name: times[(name, phase)] for name in CONTENDERS}),
            "speedup_over_torch": median_ratio(tt, dk),
            "dropkit_over_mul": median_ratio(dk, mul),
            "torch_over_mul": median_ratio(tt, mul),
        }
    row["saved_bytes_per_element"] = {
        "dropkit": saved_bytes_per_element(lambda t: dk_dropout(t, p), x),
        "torch": saved_bytes_per_element(lambda t: torch.nn.functional.dropout(t, p), x),
    }
    return row


def time_small_forward_backward(shape: Sequence[int], dtype_name: str, p: float, repeat: int,
                                number: int = 200) -> dict:
    """``y = dropout(x, p); y.backward(g)`` with ``x`` of ``shape`` requiring grad, dropkit
    against torch, in CPU time of the process.

    At these sizes the kernels take a few microseconds and the rest of a call
    is per-call overhead (argument checks, the seed, autograd), so each timing
    is ``number`` calls in a row. CPU time rather than wall time: both run on
    the calling thread alone, and time spent waiting for a core on a shared
    machine is not theirs.
    """
    from dropkit.functional import dropout

    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(tuple(shape), generator=gen).to(dtype)
    grad = torch.randn(tuple(shape), generator=gen).to(dtype)
    leaves = {name: x.clone().requires_grad_() for name in ("dropkit", "torch")}
    functions = {"dropkit": dropout, "torch": torch.nn.functional.dropout}

    def forward_backward(name: str) -> Callable[[], None]:
        fn, leaf = functions[name], leaves[name]
        return lambda: fn(leaf, p, training=True).backward(grad)

    times = interleave({name: forward_backward(name) for name in functions}, repeat,
                       clock=time.process_time, number=number)
    return {"dtype": dtype_name, "shape": list(shape), "numel": x.numel(), "p": p,
            "repeat": repeat, "number": number, "clock": "process_time",
            **summary_ms(times), "speedup_over_torch": median_ratio(times["torch"],
                                                                     times["dropkit"])}


def time_keep_mask(n: int, p: float, repeat: int) -> dict:
    """``engine.keep_mask`` against torch's Bernoulli draw of a bool mask, interleaved.

    The mask alone is what channel dropout, DropPath, LockedDropout and the
    other structured layers draw (their masks are small; this shows the rate).
    """
    from dropkit import engine

    contenders = {
        "dropkit": lambda: engine.keep_mask((n,), p, seed=1),
        "torch": lambda: torch.empty(n, dtype=torch.bool).bernoulli_(1.0 - p),
    }
    times = interleave(contenders, repeat)
    return {"numel": n, **summary_ms(times),
            "speedup_over_torch": median_ratio(times["torch"], times["dropkit"])}


def time_bias_dropout_add(n: int, dtype: torch.dtype, p: float, repeat: int) -> dict:
    """``dk.bias_dropout_add`` against ``r + dk.dropout(x + b)`` and torch's sequence.

    Forward under ``no_grad``, and forward + backward into ``x``, ``b`` and ``r``.
    """
    from dropkit.functional import bias_dropout_add, dropout

    width = FUSED_WIDTH if n % FUSED_WIDTH == 0 else n
    gen = torch.Generator().manual_seed(0)
    x, residual, grad = (torch.randn(n // width, width, generator=gen).to(dtype)
                         for _ in range(3))
    bias = torch.randn(width, generator=gen).to(dtype)
    leaves = [t.detach().requires_grad_() for t in (x, bias, residual)]
    sequences = {
        "fused": lambda a, b, r: bias_dropout_add(a, b, r, p),
        "unfused": lambda a, b, r: r + dropout(a + b, p),
        "torch": lambda a, b, r: r + torch.nn.functional.dropout(a + b, p),
    }

    def forward(fn):
        def call():
            with torch.no_grad():
                return fn(x, bias, residual)
        return call

    def forward_backward(fn):
        return lambda: torch.autograd.grad(fn(*leaves), leaves, grad)

    row = {"dtype": str(dtype).removeprefix("torch."), "numel": n, "width": width, "p": p,
           "repeat": repeat, "phases": {}}
    for phase, wrap in (("forward", forward), ("forward+backward", forward_backward)):
        times = interleave({name: wrap(fn) for name, fn in sequences.items()}, repeat)
        row["phases"][phase] = {
            **summary_ms(times),
            "speedup_over_unfused": median_ratio(times["unfused"], times["fused"]),
            "speedup_over_torch": median_ratio(times["torch"], times["fused"]),
        }
    return row


def _residual_mlp_models(batch: int, tokens: int, width: int, depth: int, max_rate: float):
    """The same pre-norm MLP blocks twice: with ``ResidualDropPath`` and with ``DropPath``."""
    import copy

    from torch import nn

    from dropkit.functional import drop_path_rates
    from dropkit.layers import DropPath, ResidualDropPath

    def mlp() -> nn.Module:
        return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(),
                             nn.Linear(4 * width, width))

    class MultiplyByZero(nn.Module):
        def __init__(self, branches, rates):
            super().__init__()
            self.branches = nn.ModuleList(branches)
            self.paths = nn.ModuleList(DropPath(r) for r in rates)

        def forward(self, x):
            for branch, path in zip(self.branches, self.paths, strict=True):
                x = x + path(branch(x))
            return x

    rates = drop_path_rates(depth, max_rate)
    branches = [mlp() for _ in rates]
    skipping = nn.Sequential(*(ResidualDropPath(b, r) for b, r in zip(branches, rates,
                                                                         strict=True)))
    zeroing = MultiplyByZero(copy.deepcopy(branches), rates)
    return {"ResidualDropPath": skipping, "DropPath": zeroing}, rates


def time_residual_mlp(batch: int, tokens: int, width: int, depth: int, max_rate: float,
                      repeat: int) -> dict:
    """One training step of the residual MLP stack, ``ResidualDropPath`` against ``DropPath``."""
    torch.manual_seed(0)
    models, rates = _residual_mlp_models(batch, tokens, width, depth, max_rate)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, tokens, width, generator=gen)
    target = torch.randn(batch, tokens, width, generator=gen)

    def training_step(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

        def step():
            optimizer.zero_grad(set_to_none=True)
            loss = (model(x) - target).square().mean()
            loss.backward()
            optimizer.step()
        return step

    times = interleave({name: training_step(m) for name, m in models.items()}, repeat)
    return {
        "config": {"batch": batch, "tokens": tokens, "width": width, "depth": depth,
                   "max_rate": max_rate},
        "mean_rate": statistics.fmean(rates),
        "repeat": repeat,
        **summary_ms(times),
        "speedup": median_ratio(times["DropPath"], times["ResidualDropPath"]),
    }
