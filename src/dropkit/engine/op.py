"""The engine's public functions, the torch custom ops behind them, and their autograd.

``dropout`` is one ``torch.library.custom_op`` (``dropkit::philox_dropout``)
with a fake implementation, so ``torch.compile(fullgraph=True)`` traces it as
a single opaque node, and an autograd formula that saves nothing per element:
the backward pass is the same op applied to the incoming gradient, because
``grad_x = where(keep, grad * scale, 0)`` has exactly the forward's form, and
the mask is regenerated from ``(seed, offset)``.  The ops are what
``torch.compile`` sees; eager calls run the same ``*_impl`` functions directly
(through a plain ``autograd.Function`` when a gradient is needed), because the
custom-op dispatcher costs as much as the kernel on small tensors.

Schema ``int`` arguments are signed 64-bit, while seeds and offsets are
unsigned 64-bit; they cross the op boundary as their two's-complement int64
bit pattern (``_as_int64``) and are turned back on the other side.

Backends, chosen per device inside the op: the Numba kernels on CPU, the
Triton kernel on CUDA when triton is importable, the pure-torch reference
anywhere else.  All three produce the same bits (docs/mask-spec.md).
"""

from __future__ import annotations

import operator

import torch

from dropkit.engine import reference
from dropkit.engine.reference import check_seed_offset, threshold

_U64 = (1 << 64) - 1
_FAST_CPU_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _as_int(value, name: str) -> int:
    """Python int from any integer (numpy and 0-dim integer tensors included)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int; received {name}={value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int; received {name}={value!r}") from None


def _as_int64(value: int) -> int:
    return value - (1 << 64) if value >= (1 << 63) else value


def _as_uint64(value: int) -> int:
    return value & _U64


def draw_seed(generator: torch.Generator | None = None) -> int:
    """One 63-bit draw from ``generator`` (torch's default CPU generator when None).

    ``torch.manual_seed(s)`` therefore makes every seedless dropkit call reproducible.
    """
    device = generator.device if generator is not None else "cpu"
    seed = torch.empty((), dtype=torch.int64, device=device).random_(generator=generator)
    return int(seed.item())  # random_ on int64 draws from [0, 2**63)


# ---------------------------------------------------------------------------
# Backend selection


def _cpu_kernels():
    """The Numba module, or None when Numba is unavailable (then the reference is used)."""
    global _CPU_KERNELS
    if _CPU_KERNELS is _UNSET:
        try:
            from dropkit.engine import cpu_kernels
        except ImportError:  # pragma: no cover - numba is a dependency
            cpu_kernels = None
        _CPU_KERNELS = cpu_kernels
    return _CPU_KERNELS


def _triton_kernels():
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
        kernels = _cpu_kernels()
        if kernels is not None:
            kernels.dropout_into(x, out, t, scale, seed, offset)
            return
    if x.device.type == "cuda":
        kernels = _triton_kernels()
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


def _dropout_impl(x: torch.Tensor, threshold: int, scale: float, seed: int,
                  offset: int) -> torch.Tensor:
    """The out-of-place kernel call; ``seed``/``offset`` as int64 bit patterns.

    The mask is laid on the elements in logical (row-major) order whatever
    ``x``'s memory layout; the output has the layout of ``output_like(x)``.
    """
    dense = x.contiguous()
    kernels = _cpu_kernels() if dense.device.type == "cpu" else None
    if kernels is not None:
        out = kernels.empty_like(dense)
    else:
        out = torch.empty_like(dense, memory_format=torch.contiguous_format)
    _dropout_into(dense, out, threshold, scale, _as_uint64(seed), _as_uint64(offset))
    if x.is_contiguous():
        return out
    like = output_like(x)
    return out if like.is_contiguous() else like.copy_(out)


@torch.library.custom_op("dropkit::philox_dropout", mutates_args=())
def _dropout_op(x: torch.Tensor, threshold: int, scale: float, seed: int,
                offset: int) -> torch.Tensor:
    return _dropout_impl(x, threshold, scale, seed, offset)


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


class _EagerDropout(torch.autograd.Function):
    """The same forward and backward as ``_dropout_op``, for eager mode.

    A Python ``custom_op`` with registered autograd costs ~20 us of dispatch
    per forward+backward, as much as the kernel itself on the small
    activations of a tutorial MLP (2048 elements: ~6 us). Eager calls take
    this plain ``autograd.Function`` instead; ``torch.compile`` traces the
    custom op. Both run ``_dropout_impl`` and save no tensor.
    """

    @staticmethod
    def forward(ctx, x, threshold, scale, seed, offset):
        ctx.params = (threshold, scale, seed, offset)
        return _dropout_impl(x, threshold, scale, seed, offset)

    @staticmethod
    def backward(ctx, grad):
        # Under create_graph the backward is itself differentiable (double backward).
        if torch.is_grad_enabled():
            return _EagerDropout.apply(grad, *ctx.params), None, None, None, None
        return _dropout_impl(grad, *ctx.params), None, None, None, None


@torch.library.custom_op("dropkit::philox_dropout_", mutates_args=("x",))
def _dropout_inplace_op(x: torch.Tensor, threshold: int, scale: float, seed: int,
                        offset: int) -> None:
    _dropout_inplace_impl(x, threshold, scale, seed, offset)


def _dropout_inplace_impl(x: torch.Tensor, threshold: int, scale: float, seed: int,
                          offset: int) -> None:
    """The in-place kernel call; ``seed``/``offset`` as int64 bit patterns."""
    seed, offset = _as_uint64(seed), _as_uint64(offset)
    if x.is_contiguous():
        _dropout_into(x, x, threshold, scale, seed, offset)
    else:
        dense = x.contiguous()
        _dropout_into(dense, dense, threshold, scale, seed, offset)
        x.copy_(dense)


@torch.library.custom_op("dropkit::philox_keep_mask", mutates_args=())
def _keep_mask_op(shape: list[int], threshold: int, seed: int, offset: int,
                  device: torch.device) -> torch.Tensor:
    return _keep_mask_impl(shape, threshold, seed, offset, device)


def _keep_mask_impl(shape: list[int], threshold: int, seed: int, offset: int,
                    device: torch.device) -> torch.Tensor:
    seed, offset = _as_uint64(seed), _as_uint64(offset)
    numel = torch.Size(shape).numel()
    if device.type == "cpu" and numel:
        kernels = _cpu_kernels()
        if kernels is not None:
            return kernels.keep_mask(numel, threshold, seed, offset).reshape(shape)
    if device.type == "cuda" and numel:
        kernels = _triton_kernels()
        if kernels is not None:
            return kernels.keep_mask(numel, threshold, seed, offset, device).reshape(shape)
    u = reference.lanes_reference(numel, seed, offset, device)
    return (u >= threshold).reshape(shape)


@_keep_mask_op.register_fake
def _(shape, threshold, seed, offset, device):
    return torch.empty(shape, dtype=torch.bool, device=device)


# ---------------------------------------------------------------------------
# Public functions


def keep_mask(shape, p: float, seed: int, offset: int = 0, device=None) -> torch.Tensor:
    """Boolean tensor of ``shape``, True where the spec keeps the element for ``(seed, offset)``."""
    shape = [int(s) for s in shape]
    seed, offset = _as_int(seed, "seed"), _as_int(offset, "offset")
    check_seed_offset(seed, offset, torch.Size(shape).numel())
    device = torch.device(device) if device is not None else torch.device("cpu")
    mask_op = _keep_mask_op if torch.compiler.is_compiling() else _keep_mask_impl
    return mask_op(shape, threshold(p), _as_int64(seed), _as_int64(offset), device)


def dropout(x: torch.Tensor, p: float, scale: float, seed: int, offset: int = 0) -> torch.Tensor:
    """Differentiable ``where(keep, x * scale, 0)``; the backward regenerates the mask.

    Returns a new contiguous tensor of ``x``'s shape, dtype and device.
    Nothing per element is saved for backward.
    """
    seed, offset = _as_int(seed, "seed"), _as_int(offset, "offset")
    check_seed_offset(seed, offset, x.numel())
    args = (threshold(p), float(scale), _as_int64(seed), _as_int64(offset))
    if torch.compiler.is_compiling():
        return _dropout_op(x, *args)
    if torch.is_grad_enabled() and x.requires_grad:
        return _EagerDropout.apply(x, *args)
    return _dropout_impl(x, *args)


def dropout_(x: torch.Tensor, p: float, scale: float, seed: int, offset: int = 0) -> torch.Tensor:
    """In-place ``dropout`` on ``x``; returns ``x``.

    Behaves for autograd exactly like torch's in-place ops: when autograd
    records it (grad mode on and ``x`` requiring grad) it is a real
    ``x.copy_(dropout(x))``, so a leaf or a view of a leaf is refused with
    torch's own error and a non-leaf's history is rebased; otherwise the
    kernel writes into ``x`` directly and then bumps ``x``'s version counter,
    so a tensor saved for backward by another op (``lin(x)`` saves ``x``)
    makes that backward fail loudly, as after ``x.mul_(...)``. An inference
    tensor is refused outside inference mode, as torch does.
    """
    seed, offset = _as_int(seed, "seed"), _as_int(offset, "offset")
    check_seed_offset(seed, offset, x.numel())
    args = (threshold(p), float(scale), _as_int64(seed), _as_int64(offset))
    if torch.compiler.is_compiling():
        _dropout_inplace_op(x, *args)  # functionalized: the graph sees the mutation
        return x
    if torch.is_grad_enabled() and x.requires_grad:
        return x.copy_(dropout(x, p, scale, seed, offset))
    if x.is_inference():  # no version counter; writable only inside inference mode
        if not torch.is_inference_mode_enabled():
            raise RuntimeError(
                "Inplace update to inference tensor outside InferenceMode is not allowed: "
                "in-place dropout received a tensor created under torch.inference_mode(). "
                "Clone it first, or call dropout with inplace=False."
            )
        _dropout_inplace_impl(x, *args)
        return x
    version = x._version
    _dropout_inplace_impl(x, *args)
    if x._version == version:
        # The kernel wrote through a numpy view (or Triton), which autograd
        # cannot see; a discontiguous x was written back by copy_, which counts.
        torch.autograd.graph.increment_version(x)
    return x


# ---------------------------------------------------------------------------
# Fused bias + dropout + residual add


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
        return bias.reshape(-1).contiguous()
    return bias.expand(shape).contiguous().reshape(-1)


def _bias_dropout_add_impl(x: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor,
                           threshold: int, scale: float, seed: int, offset: int) -> torch.Tensor:
    """``residual + where(keep, (x + bias) * scale, 0)`` in one pass; seed/offset as int64 bits.

    ``x`` and ``residual`` contiguous, of one shape, dtype and device; ``bias``
    None or broadcastable to ``x`` without changing its shape (``bias_dropout_add``
    checks all of it). Each intermediate is rounded as the unfused sequence rounds it.
    """
    seed, offset = _as_uint64(seed), _as_uint64(offset)
    period = None if bias is None else _bias_period(bias.detach(), x.shape)
    if x.device.type == "cpu" and x.dtype in _FAST_CPU_DTYPES:
        kernels = _cpu_kernels()
        if kernels is not None:
            out = kernels.empty_like(x)
            kernels.bias_dropout_add_into(x, period, residual, out, threshold, scale, seed,
                                          offset)
            return out
    if x.device.type == "cuda":
        kernels = _triton_kernels()
        if kernels is not None and kernels.supports(x):
            out = torch.empty_like(x, memory_format=torch.contiguous_format)
            kernels.bias_dropout_add_into(x, period, residual, out, threshold, scale, seed,
                                          offset)
            return out
    p = threshold / reference.THRESHOLD_ONE
    return reference.bias_dropout_add_reference(x, bias, residual, p, scale, seed, offset)


class _EagerBiasDropoutAdd(torch.autograd.Function):
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
        return _bias_dropout_add_impl(x, bias, residual, threshold, scale, seed, offset)

    @staticmethod
    def backward(ctx, grad):
        need_x, need_bias, need_residual = ctx.needs_input_grad[:3]
        grad_h = grad_bias = None
        if need_x or need_bias:
            if torch.is_grad_enabled():  # create_graph: keep the backward differentiable
                grad_h = _EagerDropout.apply(grad, *ctx.params)
            else:
                grad_h = _dropout_impl(grad, *ctx.params)
        if need_bias:
            grad_bias = grad_h.sum_to_size(ctx.bias_shape)
        return (grad_h if need_x else None, grad_bias, grad if need_residual else None,
                None, None, None, None)


def _fusable(x: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor) -> bool:
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
    if bias is None:
        return True
    if not (bias.dtype == x.dtype and bias.device == x.device and bias.layout == torch.strided):
        return False
    # broadcasts to x without growing it (by hand: torch.broadcast_shapes costs ~30 us)
    if bias.ndim > x.ndim:
        return False
    return all(b == 1 or b == s for b, s in zip(bias.shape[::-1], x.shape[::-1], strict=False))


def bias_dropout_add(x: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor,
                     p: float, scale: float, seed: int, offset: int = 0) -> torch.Tensor:
    """Differentiable ``residual + dropout(x + bias, p, scale, seed, offset)`` in one pass.

    Equal bit for bit to that sequence of engine ops (the dropout's mask is
    laid on ``x + bias``, whose shape is ``x``'s), and so are the gradients;
    nothing per element is saved for backward. Inputs the fused kernel does
    not take (mixed dtypes, broadcasting residuals, non-contiguous tensors)
    run the sequence itself, as does ``torch.compile``, which fuses the adds
    around the opaque dropout op on its own.
    """
    seed, offset = _as_int(seed, "seed"), _as_int(offset, "offset")
    if torch.compiler.is_compiling() or not _fusable(x, bias, residual):
        h = x if bias is None else x + bias
        return residual + dropout(h, p, scale, seed, offset)
    check_seed_offset(seed, offset, x.numel())
    args = (threshold(p), float(scale), _as_int64(seed), _as_int64(offset))
    if torch.is_grad_enabled() and (x.requires_grad or residual.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _EagerBiasDropoutAdd.apply(x, bias, residual, *args)
    return _bias_dropout_add_impl(x, bias, residual, *args)
