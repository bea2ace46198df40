"""The mask engine: counter-based Philox masks, fused kernels, no mask stored for backward.

The scheme is written down in ``docs/mask-spec.md``.  ``reference`` is the
pure-torch oracle, ``cpu_kernels`` the fused Numba kernels, ``triton_kernels``
the GPU kernel, ``op`` the custom ops and autograd that tie them together, ``traced``
the tensor-argument ops ``torch.compile`` traces, and ``api`` the public functions,
which decide between eager kernels and traced ops in one place.
Numba and Triton are imported lazily, on the first call that needs them, so
``import dropkit`` stays fast.
"""

from dropkit.engine.api import bias_dropout_add, draw_seed, dropout, dropout_, keep_mask
from dropkit.engine.reference import threshold

__all__ = ["bias_dropout_add", "draw_seed", "dropout", "dropout_", "keep_mask", "threshold"]
