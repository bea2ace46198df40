"""The engine's public functions, and the one place that decides how a mask is made.

Every call goes through ``_route``, which reads the seed and the mode once:

- eager (not tracing): a ``None`` seed is drawn here as a Python int
  (``draw_seed``), and the kernel runs directly (``op``), through a plain
  ``autograd.Function`` when a gradient is needed;
- under ``torch.compile``: the seed becomes a 0-dim int64 tensor (drawn inside
  the graph when ``None``, made by arithmetic from an int seed) and the call
  traces the tensor-argument ops of ``engine.traced``, which also take the rate
  and the scale as tensors. An int that crosses into a graph is a constant of
  it, and so would be the rate: a rate that changes every step
  (``dk.DropoutSchedule``) would recompile the graph every step.

The rate ``p`` is not checked here: the public function that received it (the
functionals, the layers) checks it once at its boundary. Seeds and offsets are
checked here, once, in ``_route``.
"""

from __future__ import annotations

import operator
import threading

import torch
from torch import Tensor

from dropkit.engine import op, traced
from dropkit.engine.reference import check_seed_offset, lane_threshold

_U64 = (1 << 64) - 1


def draw_seed(generator: torch.Generator | None = None) -> int:
    """One 63-bit draw from ``generator`` (torch's default CPU generator when None).

    ``torch.manual_seed(s)`` therefore makes every seedless dropkit call reproducible.
    """
    if generator is None and not torch.compiler.is_compiling():
        return _draw_default()
    device = generator.device if generator is not None else "cpu"
    seed = torch.empty((), dtype=torch.int64, device=device).random_(generator=generator)
    return int(seed.item())  # random_ on int64 draws from [0, 2**63)


# One 0-dim int64 CPU tensor per thread that draws seeds from the default
# generator: making a tensor for every draw was two thirds of a draw's ~3 us,
# and eager dropout draws once per call. It never leaves this module, and each
# thread has its own, so two threads cannot read each other's draw.
_draws = threading.local()


def _draw_default() -> int:
    """``draw_seed()``: the same draw from torch's default CPU generator, outside tracing."""
    try:
        scratch = _draws.seed
    except AttributeError:
        # a tensor made under inference mode could not be written outside it
        with torch.inference_mode(False):
            scratch = _draws.seed = torch.empty((), dtype=torch.int64, device="cpu")
    return scratch.random_().item()  # random_ on int64 draws from [0, 2**63)


def _as_int(value, name: str) -> int:
    """Python int from any integer (numpy and 0-dim integer tensors included)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int; received {name}={value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int; received {name}={value!r}") from None


def _route(seed, offset, numel: int) -> tuple[bool, int | Tensor, int]:
    """The one decision: ``(traced, seed, offset)`` for a call on ``numel`` elements.

    ``traced`` is True under ``torch.compile``; ``seed`` is then a 0-dim int64
    tensor and ``offset`` a Python int. Otherwise ``seed`` and ``offset`` are
    Python ints in [0, 2**64), checked against the counter limit. ``seed``:
    an int, ``None`` (drawn from torch's generator), or a 0-dim int64 tensor
    holding the seed's int64 bit pattern (``engine.traced``'s convention).
    """
    offset = offset if type(offset) is int else _as_int(offset, "offset")
    if torch.compiler.is_compiling():
        if seed is None:
            seed = traced.draw_seed_tensor()
        elif not isinstance(seed, Tensor):
            seed = _as_int(seed, "seed")
            check_seed_offset(seed, offset, numel)
            return True, traced.seed_tensor(seed), offset
        check_seed_offset(0, offset, numel)
        return True, seed, offset
    if seed is None:
        seed = _draw_default()
        if offset == 0:  # a drawn seed is a valid key, and offset 0 leaves every counter free
            return False, seed, 0
    elif isinstance(seed, Tensor):
        seed = int(seed) & _U64  # an int64 bit pattern
    elif type(seed) is not int:
        seed = _as_int(seed, "seed")
    check_seed_offset(seed, offset, numel)
    return False, seed, offset


def dropout(x: Tensor, p: float, scale: float, seed: int | Tensor | None = None,
            offset: int = 0) -> Tensor:
    """Differentiable ``where(keep, x * scale, 0)``; the backward regenerates the mask.

    ``p``: a probability in [0, 1], checked by the caller. ``seed``: an int in
    [0, 2**64), a 0-dim int64 tensor, or ``None`` to draw one from torch's
    generator. Returns a new tensor of ``x``'s shape, dtype and device (the
    layout of ``x * mask``). Nothing per element is saved for backward.
    """
    traced_call, seed, offset = _route(seed, offset, x.numel())
    if traced_call:
        return traced.dropout(x, p, scale, seed, offset)
    params = (lane_threshold(p), float(scale), seed, offset)
    if x.requires_grad and torch.is_grad_enabled():
        return op.eager_dropout(x, params)
    return op.dropout_impl(x, *params)


def dropout_(x: Tensor, p: float, scale: float, seed: int | Tensor | None = None,
             offset: int = 0) -> Tensor:
    """In-place ``dropout`` on ``x``; returns ``x``.

    Behaves for autograd exactly like torch's in-place ops: when autograd
    records it (grad mode on and ``x`` requiring grad, or under
    ``torch.compile``) it is a real ``x.copy_(dropout(x))``, so a leaf or a
    view of a leaf is refused with torch's own error and a non-leaf's history
    is rebased; otherwise the kernel writes into ``x`` directly and then bumps
    ``x``'s version counter, so a tensor saved for backward by another op
    (``lin(x)`` saves ``x``) makes that backward fail loudly, as after
    ``x.mul_(...)``. An inference tensor is refused outside inference mode, as
    torch does.
    """
    traced_call, seed, offset = _route(seed, offset, x.numel())
    if traced_call:
        return x.copy_(traced.dropout(x, p, scale, seed, offset))
    params = (lane_threshold(p), float(scale), seed, offset)
    if x.requires_grad and torch.is_grad_enabled():
        return x.copy_(op.eager_dropout(x, params))
    if x.is_inference():  # no version counter; writable only inside inference mode
        if not torch.is_inference_mode_enabled():
            raise RuntimeError(
                "Inplace update to inference tensor outside InferenceMode is not allowed: "
                "in-place dropout received a tensor created under torch.inference_mode(). "
                "Clone it first, or call dropout with inplace=False."
            )
        op.dropout_inplace_impl(x, *params)
        return x
    version = x._version
    op.dropout_inplace_impl(x, *params)
    if x._version == version:
        # The kernel wrote through a numpy view (or Triton), which autograd
        # cannot see; a discontiguous x was written back by copy_, which counts.
        torch.autograd.graph.increment_version(x)
    return x


def keep_mask(shape, p: float, seed: int | Tensor | None = None, offset: int = 0,
              device=None) -> Tensor:
    """Boolean tensor of ``shape``, True where the spec keeps the element for ``(seed, offset)``.

    ``p`` and ``seed`` as for :func:`dropout`.
    """
    shape = [int(s) for s in shape]
    device = torch.device(device) if device is not None else torch.device("cpu")
    traced_call, seed, offset = _route(seed, offset, torch.Size(shape).numel())
    if traced_call:
        return traced.keep_mask(shape, p, seed, offset, device)
    return op.keep_mask_impl(shape, lane_threshold(p), seed, offset, device)


def bias_dropout_add(x: Tensor, bias: Tensor | None, residual: Tensor, p: float, scale: float,
                     seed: int | Tensor | None = None, offset: int = 0) -> Tensor:
    """Differentiable ``residual + dropout(x + bias, p, scale, seed, offset)`` in one pass.

    Equal bit for bit to that sequence of engine ops (the dropout's mask is
    laid on ``x + bias``, whose shape is ``x``'s), and so are the gradients;
    nothing per element is saved for backward. Inputs the fused kernel does
    not take (mixed dtypes, broadcasting residuals, non-contiguous tensors)
    run the sequence itself, as does ``torch.compile``, which fuses the adds
    around the opaque dropout op on its own.
    """
    traced_call, seed, offset = _route(seed, offset, x.numel())
    if traced_call or not op.fusable(x, bias, residual):
        h = x if bias is None else x + bias
        return residual + dropout(h, p, scale, seed, offset)
    args = (lane_threshold(p), float(scale), seed, offset)
    if torch.is_grad_enabled() and (x.requires_grad or residual.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return op.EagerBiasDropoutAdd.apply(x, bias, residual, *args)
    return op.bias_dropout_add_impl(x, bias, residual, *args)
