"""Kernel calls, the torch custom ops over them, and their autograd; no decisions.

Which of these a call uses (the eager ``*_impl`` functions, through a plain
``autograd.Function`` when a gradient is needed, or the tensor-argument ops of
``engine.traced`` under ``torch.compile``) is decided in one place,
``engine.api``. Eager calls skip the custom-op dispatcher because it costs as
much as the kernel on small tensors. The autograd saves nothing per element:
the backward pass is the same kernel applied to the incoming gradient, because
``grad_x = where(keep, grad * scale, 0)`` has exactly the forward's form, and
the mask is regenerated from ``(seed, offset)``.

``dropkit::philox_dropout``, ``dropkit::philox_dropout_`` and
``dropkit::philox_keep_mask`` are the same kernels as custom ops over Python
numbers (threshold, scale, seed, offset), for code that calls
``torch.ops.dropkit`` itself; dropkit's own functions trace the ops of
``engine.traced``, which take the seed and the rate as tensors and so do not
pin a compiled graph to their values.

Schema ``int`` arguments are signed 64-bit, while seeds and offsets are
unsigned 64-bit; they cross the op boundary as their two's-complement int64
bit pattern (``as_int64``) and are turned back on the other side. The eager
``*_impl`` functions take them unsigned, as ``engine.api`` holds them.

Backends, chosen per device inside the kernel call: the Numba kernels on CPU,
the Triton kernel on CUDA when triton is importable, the pure-torch reference
anywhere else.  All three produce the same bits (docs/mask-spec.md).
"""

from __future__ import annotations

import torch

from dropkit.engine import reference

_U64 = (1 << 64) - 1
_FAST_CPU_DTYPES = frozenset((torch.float32, torch.float64, torch.float16, torch.bfloat16))
# Outputs below this many elements (512 KiB in float64) are allocated directly:
# too small for the huge pages ``cpu_kernels.empty_like`` advises (2 MiB).
_SMALL_NUMEL = 1 << 16


def as_int64(value: int) -> int:
    return value - (1 << 64) if value >= (1 << 63) else value


def as_uint64(value: int) -> int:
    return value & _U64


# ---------------------------------------------------------------------------
# Backend selection


def cpu_backend():
    """The Numba module, or None when Numba is unavailable (then the reference is used)."""
    global _CPU_KERNELS
    if _CPU_KERNELS is _UNSET:
        try:
            from dropkit.engine import cpu_kernels
        except ImportError:  # pragma: no cover - numba is a dependency
            cpu_kernels = None
        _CPU_KERNELS = cpu_kernels
    return _CPU_KERNELS


def triton_backend():
    """The Triton module when triton is importable, else None."""
    global _TRITON_KERNELS
    if _TRITON_KERNELS is _UNSET:
        try:
            from dropkit.engine import triton_kernels
        except ImportError:
            triton_kernels = None
        _TRITON_KERNELS = triton_kernels
    return _TRITON_KERNELS


_UNSET = object()
_CPU_KERNELS = _UNSET
_TRITON_KERNELS = _UNSET


def _dropout_into(x: torch.Tensor, out: torch.Tensor, t: int, scale: float, seed: int,
                  offset: int) -> None:
    """Write ``where(keep, x * scale, 0)`` into ``out``; both contiguous, same shape and dtype."""
    if x.numel() == 0:
        return
    if x.device.type == "cpu" and x.dtype in _FAST_CPU_DTYPES:
        kernels = cpu_backend()
        if kernels is not None:
            kernels.dropout_into(x, out, t, scale, seed, offset)
            return
    if x.device.type == "cuda":
        kernels = triton_backend()
        if kernels is not None and kernels.supports(x):
            kernels.dropout_into(x, out, t, scale, seed, offset)
            return
    out.copy_(reference.dropout_reference(x, t / reference.THRESHOLD_ONE, scale, seed, offset))


# ---------------------------------------------------------------------------
# Custom ops


def output_like(x: torch.Tensor) -> torch.Tensor:
    """An empty tensor with the layout torch gives an element-wise op's output on ``x``.

    Dense inputs (contiguous, channels_last, any permutation) keep their
    strides; others (a slice of a permuted tensor, say) get a dense tensor
    whose dims lie in memory in the order of ``x``'s strides, which is what
    torch's TensorIterator gives ``x * mask``. Ties keep the logical order.
    """
    if x.is_contiguous():
        return torch.empty_like(x, memory_format=torch.contiguous_format)
    like = torch.empty_like(x)  # keeps the strides exactly when x is dense
    if like.stride() == x.stride():
        return like
    order = sorted(range(x.ndim), key=lambda d: -x.stride(d))
    inverse = sorted(range(x.ndim), key=lambda i: order[i])
    empty = torch.empty([x.shape[d] for d in order], dtype=x.dtype, device=x.device)
    return empty.permute(inverse)


def dropout_impl(x: torch.Tensor, threshold: int, scale: float, seed: int,
                 offset: int) -> torch.Tensor:
    """The out-of-place kernel call; ``seed``/``offset`` unsigned, in [0, 2**64).

    The mask is laid on the elements in logical (row-major) order whatever
    ``x``'s memory layout; the output has the layout of ``output_like(x)``.
    """
    if x.is_cpu and x.dtype in _FAST_CPU_DTYPES and x.is_contiguous() and not x.is_neg():
        # The common case first, with as few questions as possible: on the
        # activations of a small MLP the whole call costs about 10 us.
        numel = x.numel()
        kernels = cpu_backend()
        if numel and kernels is not None:
            if numel < _SMALL_NUMEL:
                out = torch.empty_like(x, memory_format=torch.contiguous_format)
            else:
                out = kernels.empty_like(x)
            kernels.dropout_into(x, out, threshold, scale, seed, offset)
            return out
    # a negative-bit view (x.conj().imag) holds -x in memory: the kernels read values
    dense = x.resolve_neg().contiguous()
    kernels = cpu_backend() if dense.device.type == "cpu" else None
    if kernels is not None:
        out = kernels.empty_like(dense)
    else:
        out = torch.empty_like(dense, memory_format=torch.contiguous_format)
    _dropout_into(dense, out, threshold, scale, seed, offset)
    if x.is_contiguous():
        return out
    like = output_like(x)
    return out if like.is_contiguous() else like.copy_(out)


@torch.library.custom_op("dropkit::philox_dropout", mutates_args=())
def _dropout_op(x: torch.Tensor, threshold: int, scale: float, seed: int,
                offset: int) -> torch.Tensor:
    return dropout_impl(x, threshold, scale, as_uint64(seed), as_uint64(offset))


@_dropout_op.register_fake
def _(x, threshold, scale, seed, offset):
    return output_like(x)


def _setup_context(ctx, inputs, output):
    # Only Python scalars are kept: no tensor is saved for backward.
    _, ctx.threshold, ctx.scale, ctx.seed, ctx.offset = inputs


def _backward(ctx, grad):
    grad_x = _dropout_op(grad, ctx.threshold, ctx.scale, ctx.seed, ctx.offset)
    return grad_x, None, None, None, None


_dropout_op.register_autograd(_backward, setup_context=_setup_context)


class EagerDropout(torch.autograd.Function):
    """The same forward and backward as ``_dropout_op``, for eager mode; call ``eager_dropout``.

    A Python ``custom_op`` with registered autograd costs ~20 us of dispatch
    per forward+backward, as much as the kernel itself on the small
    activations of a tutorial MLP (2048 elements). Eager calls take this
    plain ``autograd.Function`` instead; ``torch.compile`` traces the custom
    op. Both run ``dropout_impl`` and save no tensor. ``params`` is
    ``(threshold, scale, seed, offset)`` as ``dropout_impl`` takes them, in one
    argument, so that the backward returns a single ``None`` for it.
    """

    @staticmethod
    def forward(ctx, x, params):
        ctx.params = params
        return dropout_impl(x, *params)

    @staticmethod
    def backward(ctx, grad):
        # Under create_graph the backward is itself differentiable (double backward).
        if torch.is_grad_enabled():
            return eager_dropout(grad, ctx.params), None
        return dropout_impl(grad, *ctx.params), None


# ``Function.apply`` is a Python wrapper around torch's C ``_FunctionBase.apply``
# that binds default arguments (for a ``setup_context`` we do not define),
# routes functorch transforms and unwraps tensors left over from a finished
# transform. For one tensor and no transform, calling the C ``apply`` after
# ``unwrap_if_dead`` is the same call, and it saved ~5 us of a ~75 us
# forward+backward on 2048 elements. Torch internals: without them, the wrapper.
try:
    _apply_dropout = torch._C._FunctionBase.__dict__["apply"].__get__(None, EagerDropout)
    _transforms_active = torch._C._are_functorch_transforms_active
    _unwrap_if_dead = torch._C._functorch.unwrap_if_dead
except (AttributeError, KeyError):  # pragma: no cover - another torch
    _apply_dropout = None


def eager_dropout(x: torch.Tensor, params: tuple[int, float, int, int]) -> torch.Tensor:
    """``EagerDropout.apply(x, params)``: differentiable ``dropout_impl(x, *params)``."""
    if _apply_dropout is None or _transforms_active():
        return EagerDropout.apply(x, params)  # functorch's route, or its error
    return _apply_dropout(_unwrap_if_dead(x), params)


@torch.library.custom_op("dropkit::philox_dropout_", mutates_args=("x",))
def _dropout_inplace_op(x: torch.Tensor, threshold: int, scale: float, seed: int,
                        offset: int) -> None:
    dropout_inplace_impl(x, threshold, scale, as_uint64(seed), as_uint64(offset))


def dropout_inplace_impl(x: torch.Tensor, threshold: int, scale: float, seed: int,
                         offset: int) -> None:
    """The in-place kernel call; ``seed``/``offset`` unsigned."""
    if x.is_contiguous() and not x.is_neg():
        _dropout_into(x, x, threshold, scale, seed, offset)
    else:  # a copy of the values (never x's own memory), written back by copy_
        dense = x.resolve_neg().contiguous()
        _dropout_into(dense, dense, threshold, scale, seed, offset)
        x.copy_(dense)


@torch.library.custom_op("dropkit::philox_keep_mask", mutates_args=())
def _keep_mask_op(shape: list[int], threshold: int, seed: int, offset: int,
                  device: torch.device) -> torch.Tensor:
    return keep_mask_impl(shape, threshold, as_uint64(seed), as_uint64(offset), device)


def keep_mask_impl(shape: list[int], threshold: int, seed: int, offset: int,
                   device: torch.device) -> torch.Tensor:
    """Bool mask of ``shape``; ``seed``/``offset`` unsigned."""
    numel = torch.Size(shape).numel()
    if device.type == "cpu" and numel:
        kernels = cpu_backend()
        if kernels is not None:
            return kernels.keep_mask(numel, threshold, seed, offset).reshape(shape)
    if device.type == "cuda" and numel:
        kernels = triton_backend()
        if kernels is not None:
            return kernels.keep_mask(numel, threshold, seed, offset, device).reshape(shape)
    u = reference.lanes_reference(numel, seed, offset, device)
    return (u >= threshold).reshape(shape)


@_keep_mask_op.register_fake
def _(shape, threshold, seed, offset, device):
    return torch.empty(shape, dtype=torch.bool, device=device)


# ---------------------------------------------------------------------------
# Fused bias + dropout + residual add


# Measured with a (1,) bias at 1M float32 elements: period 1 made the fused
# kernel 2.3x slower than the unfused sequence.
_MIN_BIAS_PERIOD = 1024


def _bias_period(bias: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``bias`` flat and contiguous, its values repeating along the flat elements of ``shape``.

    A bias over the trailing dims of ``x`` (``(d,)`` against ``(B, T, d)``,
    leading 1s allowed) is already periodic; any other broadcast (``(C, 1, 1)``
    against ``(N, C, H, W)``) is expanded to the full shape, one period.
    """
    dims = list(bias.shape)
    while dims and dims[0] == 1:
        dims.pop(0)
    if not dims or list(shape[len(shape) - len(dims):]) == dims:
        period = bias.reshape(-1).contiguous()
        # The kernels walk the bias in runs of one period: a short one (a
        # scalar bias has period 1) is repeated to a whole number of periods of
        # at least _MIN_BIAS_PERIOD elements, still a period of the same values.
        if period.numel() < _MIN_BIAS_PERIOD:
            period = period.repeat(-(-_MIN_BIAS_PERIOD // period.numel()))
        return period
    return bias.expand(shape).contiguous().reshape(-1)


def bias_dropout_add_impl(x: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor,
                          threshold: int, scale: float, seed: int, offset: int) -> torch.Tensor:
    """``residual + where(keep, (x + bias) * scale, 0)`` in one pass; seed/offset unsigned.

    ``x`` and ``residual`` contiguous, of one shape, dtype and device; ``bias``
    None or broadcastable to ``x`` without changing its shape (``bias_dropout_add``
    checks all of it). Each intermediate is rounded as the unfused sequence rounds it.
    """
    period = None if bias is None else _bias_period(bias.detach(), x.shape)
    if x.device.type == "cpu" and x.dtype in _FAST_CPU_DTYPES:
        kernels = cpu_backend()
        if kernels is not None:
            out = kernels.empty_like(x)
            kernels.bias_dropout_add_into(x, period, residual, out, threshold, scale, seed,
                                          offset)
            return out
    if x.device.type == "cuda":
        kernels = triton_backend()
        if kernels is not None and kernels.supports(x):
            out = torch.empty_like(x, memory_format=torch.contiguous_format)
            kernels.bias_dropout_add_into(x, period, residual, out, threshold, scale, seed,
                                          offset)
            return out
    p = threshold / reference.THRESHOLD_ONE
    return reference.bias_dropout_add_reference(x, bias, residual, p, scale, seed, offset)


class EagerBiasDropoutAdd(torch.autograd.Function):
    """Autograd of the fused ``residual + dropout(x + bias)``; saves no tensor.

    ``grad_h = where(keep, grad * scale, 0)`` is the dropout backward (the mask
    regenerated), ``grad_x = grad_h``, ``grad_bias`` its sum over the broadcast
    dims (``sum_to_size``, the reduction autograd uses for ``x + bias``) and
    ``grad_residual = grad``: the gradients of the unfused sequence, bit for bit.
    """

    @staticmethod
    def forward(ctx, x, bias, residual, threshold, scale, seed, offset):
        ctx.params = (threshold, scale, seed, offset)
        ctx.bias_shape = None if bias is None else bias.shape
        return bias_dropout_add_impl(x, bias, residual, threshold, scale, seed, offset)

    @staticmethod
    def backward(ctx, grad):
        need_x, need_bias, need_residual = ctx.needs_input_grad[:3]
        grad_h = grad_bias = None
        if need_x or need_bias:
            if torch.is_grad_enabled():  # create_graph: keep the backward differentiable
                grad_h = eager_dropout(grad, ctx.params)
            else:
                grad_h = dropout_impl(grad, *ctx.params)
        if need_bias:
            grad_bias = grad_h.sum_to_size(ctx.bias_shape)
        return (grad_h if need_x else None, grad_bias, grad if need_residual else None,
                None, None, None, None)


def fusable(x: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor) -> bool:
    """True when the one-pass kernel computes exactly what the unfused sequence computes.

    One dtype and device, contiguous ``x`` and ``residual`` of one shape (the
    output is then contiguous, as the sequence's is), a bias that broadcasts
    to ``x`` without growing it. Anything else takes the unfused sequence.
    """
    if not (isinstance(residual, torch.Tensor) and residual.shape == x.shape
            and residual.dtype == x.dtype and residual.device == x.device
            and x.is_contiguous() and residual.is_contiguous() and x.numel()):
        return False
    if x.layout != torch.strided or residual.layout != torch.strided:
        return False
    if x.is_neg() or residual.is_neg() or (bias is not None and bias.is_neg()):
        return False  # negative-bit views: the sequence reads their values
    if bias is None:
        return True
    if not (bias.dtype == x.dtype and bias.device == x.device and bias.layout == torch.strided):
        return False
    # broadcasts to x without growing it (by hand: torch.broadcast_shapes costs ~30 us)
    if bias.ndim > x.ndim:
        return False
    return all(b == 1 or b == s for b, s in zip(bias.shape[::-1], x.shape[::-1], strict=False))
