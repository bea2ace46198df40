"""The mask engine: counter-based Philox masks, fused kernels, no mask stored for backward.

The scheme is written down in ``docs/mask-spec.md``.  ``reference`` is the
pure-torch oracle, ``cpu_kernels`` the fused Numba kernels, ``triton_kernels``
the GPU kernel, and ``op`` the custom ops and autograd that tie them together.
Numba and Triton are imported lazily, on the first call that needs them, so
``import dropkit`` stays fast.
"""

from dropkit.engine.op import bias_dropout_add, draw_seed, dropout, dropout_, keep_mask
from dropkit.engine.reference import threshold

__all__ = ["bias_dropout_add", "draw_seed", "dropout", "dropout_", "keep_mask", "threshold"]
