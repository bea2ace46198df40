"""Masks keyed by sample, step and call: ``mask_keys`` and the keyed engine ops.

Inside ``with mask_keys(seed, step, sample_ids):`` every dropkit functional
and layer derives a sample's mask from ``(seed, step, call index, sample id,
element position within the sample)`` (docs/mask-spec.md, "Keyed masks";
docs/keyed-masks.md for DDP, gradient accumulation, checkpointing). A
sample's mask then does not depend on the rest of the batch, its position in
it, the micro-batch it falls in or the rank that holds it.

The call index counts the mask-drawing calls since the context was entered
(one forward pass); each call takes its keys once, at forward time, and its
backward regenerates the mask from those keys: nothing per element is saved.

The state is thread-local: each thread (a DDP process's main thread, an
autograd worker recomputing a checkpoint) sees only the keys it entered.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dropkit.engine import keyed_reference, op
from dropkit.engine.keyed_reference import WORD_LIMIT, check_keys
from dropkit.engine.reference import lane_threshold

__all__ = ["Keys", "active", "keyed_dropout", "keyed_keep_mask", "keyed_uniform", "mask_keys",
           "regenerated", "take"]


@dataclass(frozen=True)
class Keys:
    """The keys of one call: ``ids`` holds one id per row (a CPU int64 tensor)."""

    seed: int
    step: int
    call: int
    ids: torch.Tensor


class _State:
    def __init__(self, seed: int, step: int, sample_ids, shared_id, call: int = 0,
                 recompute: bool = False) -> None:
        self.seed, self.step = seed, step
        self.sample_ids, self.shared_id = sample_ids, shared_id
        self.call = call
        self.recompute = recompute

    def copy(self, call: int, recompute: bool) -> _State:
        return _State(self.seed, self.step, self.sample_ids, self.shared_id, call, recompute)


_local = threading.local()


def _never_traced(fn):
    """``fn``, which torch.compile runs eagerly instead of tracing it (``torch.compiler.disable``).

    Keyed masks are made eagerly: traced, the Numba kernels' numpy arguments
    would become tensors. The disabled function is made only once torch._dynamo
    is loaded (nothing can trace before): making it at import would import
    torch._dynamo with dropkit (measured: ``import dropkit`` 0.06 -> 1.8 s).
    """
    @functools.wraps(fn)
    def call(*args, **kwargs):
        disabled = _DISABLED.get(fn)
        if disabled is None:
            if "torch._dynamo" not in sys.modules:
                return fn(*args, **kwargs)
            disabled = _disabled(fn)
        return disabled(*args, **kwargs)

    _NEVER_TRACED.append(fn)
    return call


_NEVER_TRACED: list[Callable] = []
_DISABLED: dict[Callable, Callable] = {}


def _disabled(fn: Callable) -> Callable:
    """``torch.compiler.disable(fn)``, made once."""
    disabled = _DISABLED.get(fn)
    if disabled is None:
        disabled = _DISABLED[fn] = torch.compiler.disable(fn)
    return disabled


def _prepare_never_traced() -> None:
    """Make every disabled function now (on entering ``mask_keys``, which runs eagerly), so
    that torch.compile finds them made rather than tracing their making."""
    if "torch._dynamo" in sys.modules:
        for fn in _NEVER_TRACED:
            _disabled(fn)


def _stack() -> list[_State]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def active() -> _State | None:
    """The innermost ``mask_keys`` state of this thread, or None outside any.

    Reads without creating the thread's stack: under ``torch.compile`` the
    first call would otherwise change what dynamo guards on (the attribute's
    existence) and cost a recompile on the second call.
    """
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


def _check_int(value, name: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Invalid type received for argument `{name}`. Expected an int. "
            f"Received: {name}={value!r} of type {type(value).__name__}")
    value = int(value)
    if not 0 <= value < limit:
        bound = "2**64" if limit == 1 << 64 else "2**32"
        raise ValueError(
            f"Invalid value received for argument `{name}`. Expected an int in [0, {bound}). "
            f"Received: {name}={value}")
    return value


class mask_keys:  # noqa: N801 - a context manager used like torch.no_grad
    r"""Key every dropkit mask drawn inside the block by sample, step and call.

    Inside the block, the mask of sample ``n`` in the ``c``-th mask-drawing call
    is a pure function of ``(seed, step, c, sample_ids[n])`` and of each
    element's position within the sample (docs/mask-spec.md, "Keyed masks"):

    .. math::
        \text{counter} = (i \,/\!/\, 8,\ \text{id},\ \text{step},\ c \mid 2^{31}),
        \qquad \text{key} = \text{seed}

    so a sample gets the same mask whatever else is in its batch, in whatever
    position, micro-batch or data-parallel rank. Enter the block once per
    forward pass (the call index restarts at 0 on entry); run backward inside
    or after it, the masks are regenerated from keys taken at forward time.

    Args:
        seed: the Philox key, an int in ``[0, 2**64)``.
        step: the training step, an int in ``[0, 2**32)``; keep it in your checkpoint.
        sample_ids: one global id per row of the batch, a 1-D integer tensor
            with values in ``[0, 2**32)``; ``None`` means ``arange(batch)``. An
            int gives every row of every call that id: one mask shared by the
            batch (``dk.mc.predict(consistent=True)``), which also keys the
            batch-shared masks (weights, vocabulary rows) that per-sample ids
            refuse.

    Examples::

        >>> for step, (x, y, idx) in enumerate(loader):      # idx: global sample ids
        ...     with dk.mask_keys(seed=1234, step=step, sample_ids=idx):
        ...         loss = criterion(model(x), y)
        ...     loss.backward()

    Activation checkpointing: pass :meth:`checkpoint_context` as
    ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False,
    context_fn=dk.mask_keys.checkpoint_context)`` so the recompute draws the
    masks of the forward.
    """

    def __init__(self, seed: int, step: int, sample_ids: torch.Tensor | int | None = None):
        self.seed = _check_int(seed, "seed", 1 << 64)
        self.step = _check_int(step, "step", WORD_LIMIT)
        self.sample_ids = None
        self.shared_id = None
        if isinstance(sample_ids, numbers.Integral) and not isinstance(sample_ids, bool):
            self.shared_id = _check_int(sample_ids, "sample_ids", WORD_LIMIT)
        elif sample_ids is not None:
            if not isinstance(sample_ids, torch.Tensor) or sample_ids.ndim != 1 or (
                sample_ids.is_floating_point() or sample_ids.is_complex()
                or sample_ids.dtype == torch.bool
            ):
                raise TypeError(
                    "Invalid value received for argument `sample_ids`. Expected a 1-D integer "
                    "tensor (one global id per row of the batch), an int or None. Received: "
                    f"{sample_ids!r}")
            ids = sample_ids.detach().to("cpu", torch.int64)
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= WORD_LIMIT):
                raise ValueError(
                    "Invalid value received for argument `sample_ids`. Expected ids in "
                    f"[0, 2**32). Received ids from {int(ids.min())} to {int(ids.max())}")
            self.sample_ids = ids
        self._entered: list[_State] = []

    def __enter__(self) -> mask_keys:
        _prepare_never_traced()
        state = _State(self.seed, self.step, self.sample_ids, self.shared_id)
        _stack().append(state)
        self._entered.append(state)
        return self

    def __exit__(self, *exc) -> None:
        state = self._entered.pop()
        stack = _stack()
        if stack and stack[-1] is state:
            stack.pop()

    @staticmethod
    def checkpoint_context() -> tuple[contextlib.AbstractContextManager,
                                      contextlib.AbstractContextManager]:
        """The ``context_fn`` of ``torch.utils.checkpoint.checkpoint(use_reentrant=False)``.

        The first context notes the keys and the call index where the
        checkpointed region starts; the second puts them back around the
        recompute (which runs during backward, possibly after the
        ``mask_keys`` block has closed), so the recompute draws the forward's
        masks. Outside ``mask_keys`` both do nothing.
        """
        saved: dict[str, _State] = {}

        @contextlib.contextmanager
        def forward():
            state = active()
            if state is not None:
                saved["state"] = state.copy(state.call, recompute=True)
            yield

        @contextlib.contextmanager
        def recompute():
            state = saved.get("state")
            if state is None:
                yield
                return
            replay = state.copy(state.call, recompute=True)
            stack = _stack()
            stack.append(replay)
            try:
                yield
            finally:
                stack.remove(replay)

        return forward(), recompute()


# ---------------------------------------------------------------------------
# Taking the keys of one call


def take(batch: int | None, fn: str, shared_reason: str = "") -> Keys | None:
    """The keys of this call (advancing the call index), or None outside ``mask_keys``.

    ``batch``: the number of rows of the call's mask (one id each); None for a
    mask shared by the whole batch, refused with ``shared_reason`` unless the
    keys are a single shared id.
    """
    state = active()
    if state is None:
        return None
    if torch.compiler.is_compiling():
        # Under torch.compile this is a graph break: the frame is run again
        # eagerly, where it takes the keys, and the functions that make keyed
        # masks are never traced (torch.compiler.disable). Only fullgraph=True,
        # which allows no graph break, shows this message.
        raise RuntimeError(
            f"{fn}(): keyed masks (dk.mask_keys) are made eagerly, a graph break each; "
            "compile without fullgraph=True, or call the model outside torch.compile.")
    if torch._C._current_graph_task_id() != -1 and not state.recompute:
        raise RuntimeError(
            f"{fn}() drew a keyed mask during backward (an activation-checkpoint recompute?). "
            "Its call index would be counted again and give other masks than the forward's: "
            "use torch.utils.checkpoint.checkpoint(..., use_reentrant=False, "
            "context_fn=dk.mask_keys.checkpoint_context).")
    call = state.call
    if batch is None:
        if state.shared_id is None:
            raise ValueError(
                f"{fn}() cannot key its mask by sample inside dk.mask_keys: {shared_reason} "
                "Leave it outside the mask_keys block, or use an int sample id (one mask "
                "shared by the batch, as dk.mc.predict(consistent=True) does).")
        ids = torch.tensor([state.shared_id], dtype=torch.int64)
    elif state.shared_id is not None:
        ids = torch.full((batch,), state.shared_id, dtype=torch.int64)
    elif state.sample_ids is None:
        ids = torch.arange(batch, dtype=torch.int64)
    else:
        ids = state.sample_ids
        if ids.numel() != batch:
            raise ValueError(
                f"{fn}(): dk.mask_keys was given {ids.numel()} sample ids but this call has a "
                f"batch of {batch} rows; pass one id per row of the batch (dim 0, or dim 1 "
                "for a time-major LockedDropout).")
    check_keys(state.seed, state.step, call, 0)
    state.call = call + 1
    return Keys(state.seed, state.step, call, ids)


# ---------------------------------------------------------------------------
# Backends


def _cpu():
    try:
        from dropkit.engine import keyed_cpu
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    return keyed_cpu


def _triton():
    if op.triton_backend() is None:
        return None
    from dropkit.engine import keyed_triton

    return keyed_triton


def _split(shape, batch_dim: int | None) -> tuple[int, list[int]]:
    shape = list(shape)
    if batch_dim is None:
        return 1, shape
    return shape[batch_dim], shape[:batch_dim] + shape[batch_dim + 1:]


@_never_traced
def keyed_keep_mask(shape, batch_dim: int | None, p: float, keys: Keys,
                    device=None) -> torch.Tensor:
    """Bool tensor of ``shape``, True where kept; row ``n`` of ``batch_dim`` keyed by ``ids[n]``.

    A row's elements are numbered in row-major order over the other dims;
    ``batch_dim=None`` makes the whole tensor one row. Equals
    ``keyed_reference.keyed_keep_mask_reference`` bit for bit.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    rows, rest = _split(shape, batch_dim)
    m = torch.Size(rest).numel()
    check_keys(keys.seed, keys.step, keys.call, m)
    t = lane_threshold(p)
    flat = None
    if rows * m and device.type == "cpu" and (kernels := _cpu()) is not None:
        flat = kernels.keyed_keep_mask(rows, m, t, keys.seed, keys.step, keys.call, keys.ids)
    elif rows * m and device.type == "cuda" and (kernels := _triton()) is not None:
        flat = kernels.keyed_keep_mask(rows, m, t, keys.seed, keys.step, keys.call,
                                       keys.ids, device)
    if flat is None:
        flat = keyed_reference.keyed_lanes_reference(m, keys.seed, keys.step, keys.call,
                                                     keys.ids, device) >= t
    keep = flat.reshape([rows] + rest)
    return keep.reshape(list(shape)) if batch_dim is None else keep.movedim(0, batch_dim)


@_never_traced
def _keyed_dropout_values(x: torch.Tensor, p: float, scale: float, keys: Keys,
                          batch_dim: int | None) -> torch.Tensor:
    """``where(keep, x * scale, 0)`` with the keyed mask, laid out as ``op.output_like(x)``."""
    dense = x.resolve_neg().contiguous()  # the kernels read values, not a negative-bit view
    rows, _ = _split(x.shape, batch_dim)
    out = None
    if batch_dim in (0, None) and x.numel():
        flat = dense.reshape(rows, -1)
        t = lane_threshold(p)
        if (kernels := _cpu()) is not None and kernels.supports(x):
            out = kernels.keyed_dropout(flat, t, scale, keys.seed, keys.step, keys.call, keys.ids)
        elif x.device.type == "cuda" and (kernels := _triton()) is not None and kernels.supports(x):
            out = kernels.keyed_dropout(flat, t, scale, keys.seed, keys.step, keys.call, keys.ids)
    if out is None:  # 16-bit CPU tensors, other devices: the mask, then torch's own multiply
        keep = keyed_keep_mask(x.shape, batch_dim, p, keys, x.device)
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        scale_c = torch.tensor(scale, dtype=torch.float64).to(compute).item()
        scaled = (dense.to(compute) * scale_c).to(x.dtype)
        out = torch.where(keep, scaled, torch.zeros((), dtype=x.dtype, device=x.device))
    out = out.reshape(x.shape)
    if x.is_contiguous():
        return out
    like = op.output_like(x)
    return out if like.is_contiguous() else like.copy_(out)


class _Regenerated(torch.autograd.Function):
    """``affine(linear(x))`` whose backward is ``linear(grad)``, the mask regenerated.

    ``linear`` is a closure over Python ints and the call's ids (no mask, no
    per-element tensor), so autograd keeps nothing per element; the keys were
    taken at forward time, so the backward draws exactly the forward's masks.
    """

    @staticmethod
    def forward(ctx, x, linear, affine):
        ctx.linear = linear
        y = linear(x)
        return y if affine is None else affine(y)

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():  # create_graph: the backward is itself differentiable
            return _Regenerated.apply(grad, ctx.linear, None), None, None
        return ctx.linear(grad), None, None


@_never_traced
def regenerated(x: torch.Tensor, linear: Callable[[torch.Tensor], torch.Tensor],
                affine: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Differentiable ``affine(linear(x))`` for a mask-linear ``linear``; nothing saved."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _Regenerated.apply(x, linear, affine)
    y = linear(x)
    return y if affine is None else affine(y)


def keyed_dropout(x: torch.Tensor, p: float, scale: float, keys: Keys,
                  batch_dim: int | None = 0) -> torch.Tensor:
    """Differentiable element-wise ``where(keep, x * scale, 0)`` with the keyed mask."""
    return regenerated(x, lambda t: _keyed_dropout_values(t, p, scale, keys, batch_dim))


@_never_traced
def keyed_uniform(shape, batch_dim: int, keys: Keys, device=None) -> torch.Tensor:
    """float64 uniforms in (0, 1), one Philox word per element, keyed per row (the spec's)."""
    return keyed_reference.keyed_uniform_reference(shape, batch_dim, keys.seed, keys.step,
                                                   keys.call, keys.ids, device)
