"""Argument checks and mask helpers shared by every functional and module of the package."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from dropkit import engine
from dropkit.engine import keyed

_DROP_PATH_MODES = ("row", "batch")


def _check_p(p: float, name: str = "p") -> float:
    """Return ``p`` as a float after checking it is a probability.

    Under ``torch.compile`` a rate that changes between calls (``dk.DropoutSchedule``)
    reaches here as a ``torch.SymFloat`` (which dynamo presents as a ``float``, so
    the test is ``is_compiling``): it is checked by comparisons only, which dynamo
    turns into guards on the range, and returned as it is. ``float(p)`` or
    ``math.isfinite(p)`` would pin the graph to its value and recompile it for the
    next one. ``0 <= p <= 1`` also rejects NaN and inf.
    """
    if type(p) is float and 0.0 <= p <= 1.0:  # the common case, in either mode
        return p
    if isinstance(p, torch.SymFloat | torch.SymInt) or (
            torch.compiler.is_compiling() and isinstance(p, numbers.Real)
            and not isinstance(p, bool)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(
                f"Invalid value received for argument `{name}`. Expected a float between 0 "
                f"and 1 (the drop probability). Received: {name}={p!r}"
            )
        return p
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(
            f"Invalid type received for argument `{name}`. Expected a float between 0 and 1 "
            f"(the drop probability). Received: {name}={p!r} of type {type(p).__name__}"
        )
    value = float(p)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"Invalid value received for argument `{name}`. Expected a float between 0 and 1 "
            f"(the drop probability). Received: {name}={p!r}"
        )
    return value


# The dtypes that pass every check of ``_check_input`` on their own: a dense,
# non-nested tensor of one of them needs no other question asked.
_PLAIN_FLOAT_DTYPES = frozenset((torch.float32, torch.float64, torch.float16, torch.bfloat16))


def _check_input(x: Tensor, fn: str) -> None:
    if (isinstance(x, Tensor) and x.dtype in _PLAIN_FLOAT_DTYPES and x.layout == torch.strided
            and not x.is_nested and not x.is_meta):
        return  # the common case, in a third of the time of the questions below
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}() expects a torch.Tensor as input; received {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(
            f"{fn}() expects a floating-point tensor; received a tensor of dtype={x.dtype}. "
            "Dropout of integer or boolean tensors is not defined: cast with .float() first."
        )
    if x.is_complex():
        raise TypeError(f"{fn}() does not support complex tensors; received dtype={x.dtype}")
    if x.is_nested:
        raise TypeError(
            f"{fn}() does not support nested tensors; received a nested tensor. Apply it to "
            "each component (x.unbind()) or to the padded tensor (x.to_padded_tensor(0))."
        )
    if x.layout != torch.strided:
        raise TypeError(
            f"{fn}() supports dense (torch.strided) tensors only; received layout={x.layout}. "
            "Convert with x.to_dense(), or drop the stored values (x.values()) of a sparse tensor."
        )
    if x.device.type == "meta":
        raise TypeError(
            f"{fn}() needs a tensor with data; received a tensor on device='meta'. "
            "Materialise it (e.g. torch.empty_like(x, device='cpu')) first."
        )


def _check_seed(seed: int | None) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"Invalid type received for argument `seed`. Expected an int in [0, 2**64) or None. "
            f"Received: seed={seed!r} of type {type(seed).__name__}"
        )
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(
            f"Invalid value received for argument `seed`. Expected an int in [0, 2**64) or None. "
            f"Received: seed={seed}"
        )
    return seed


def _check_spatial_rank(x: Tensor, spatial_dims: int, fn: str) -> bool:
    """Check ``x`` is ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``; True if unbatched."""
    batched, unbatched = spatial_dims + 2, spatial_dims + 1
    if x.ndim not in (batched, unbatched):
        raise ValueError(
            f"{fn}() expects a {unbatched}D (unbatched) or {batched}D (batched) input, "
            f"(N, C, ...) with {spatial_dims} spatial dim(s); received a {x.ndim}D input "
            f"of shape {tuple(x.shape)}"
        )
    return x.ndim == unbatched


def _check_mode(mode: str) -> str:
    """Check a drop-path ``mode`` against the choices."""
    if mode not in _DROP_PATH_MODES:
        raise ValueError(
            f"Invalid value received for argument `mode`. Expected one of "
            f"{_DROP_PATH_MODES}. Received: mode={mode!r}"
        )
    return mode


def _keep_scale(p: float, rescale: bool) -> float:
    """The factor applied to kept values: ``1/(1-p)`` when rescaling, else 1.

    At ``p == 1`` nothing is kept, so the factor is irrelevant; 0 avoids the
    division by zero that would otherwise turn ``0 * inf`` into NaN.
    """
    if not rescale:
        return 1.0
    return 0.0 if p == 1.0 else 1.0 / (1.0 - p)


def _keep_mask(shape: tuple[int, ...], p: float, seed: int | None, device) -> Tensor:
    if seed is None and keyed.active() is not None:
        # a function that has not learned keyed masks: refuse rather than draw an unkeyed one
        raise RuntimeError(
            "This dropkit function does not key its masks by sample yet, so it cannot run "
            "inside dk.mask_keys; call it outside the block or pass seed= explicitly.")
    return engine.keep_mask(shape, p, seed, device=device)  # the engine draws a None seed


def _apply_mask(x: Tensor, keep: Tensor, scale: float | Tensor, inplace: bool) -> Tensor:
    """``where(keep, x * scale, 0)`` for a mask that broadcasts against ``x``.

    ``where`` rather than a multiply by the mask, so dropped entries are
    exactly 0 even where ``x`` holds inf or NaN. ``scale`` is a float, or a
    0-dim tensor when it is computed from the mask (DropBlock). In place, the
    result goes back through ``x.copy_``: a torch in-place op, so ``x``'s
    version counter moves and autograd raises where it would for ``x.mul_``.
    """
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    unscaled = isinstance(scale, float) and scale == 1.0
    out = torch.where(keep, x if unscaled else x * scale, zero)
    if inplace:
        return x.copy_(out)
    return out


def _noise_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A generator for continuous noise, seeded from ``seed`` or the engine.

    ``None`` (torch's default generator) while tracing under torch.compile
    without a seed: a generator object cannot be traced, the default one can.
    """
    if seed is None and torch.compiler.is_compiling():
        return None
    if seed is None:
        seed = engine.draw_seed()
    return torch.Generator(device=device).manual_seed(seed)


def _noise_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype continuous noise is drawn and combined in: the inputs' own precision,
    float32 at least (16-bit noise is drawn in float32 and rounded once)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _check_block_size(block_size, spatial_dims: int) -> tuple[int, ...]:
    sizes = (block_size,) * spatial_dims if isinstance(block_size, numbers.Integral) else block_size
    ok = (
        isinstance(sizes, tuple | list)
        and len(sizes) == spatial_dims
        and all(isinstance(b, numbers.Integral) and not isinstance(b, bool) and b >= 1
                for b in sizes)
    )
    if not ok:
        raise ValueError(
            f"Invalid value received for argument `block_size`. Expected a positive int or a "
            f"tuple of {spatial_dims} positive ints. Received: block_size={block_size!r}"
        )
    return tuple(int(b) for b in sizes)


def _call_keys(seed: int | None, x: Tensor, batch_dim: int | None, fn: str,
               unbatched: bool = False, shared_reason: str = "") -> keyed.Keys | None:
    """The keys of this call inside ``dk.mask_keys``; None outside it or with an explicit seed.

    Called exactly where a function draws its mask, so calls that draw
    nothing (eval, ``p=0``, empty inputs) take no call index. ``batch_dim``:
    the dim of ``x`` holding the samples; None for a mask shared by the batch
    (refused with ``shared_reason`` unless the keys are one shared id).
    """
    if seed is not None or keyed.active() is None:
        return None
    if batch_dim is None:
        return keyed.take(None, fn, shared_reason)
    if unbatched or x.ndim <= batch_dim:
        raise ValueError(
            f"{fn}(): keyed masks (dk.mask_keys) need a batch of samples, but received an "
            f"unbatched input of shape {tuple(x.shape)}; add the batch dim (x.unsqueeze(0)).")
    return keyed.take(x.shape[batch_dim], fn)


def _keyed_mask_apply(x: Tensor, mask_shape, batch_dim: int | None, p: float, scale: float,
                      keys: keyed.Keys, inplace: bool) -> Tensor:
    """``where(keep, x * scale, 0)`` with a keyed mask of ``mask_shape`` broadcast over ``x``.

    The backward regenerates the mask from the call's keys: nothing is saved.
    """
    def linear(t: Tensor) -> Tensor:
        keep = keyed.keyed_keep_mask(mask_shape, batch_dim, p, keys, t.device)
        return _apply_mask(t, keep, scale, inplace=False)

    out = keyed.regenerated(x, linear)
    return x.copy_(out) if inplace else out
