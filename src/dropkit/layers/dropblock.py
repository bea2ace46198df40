"""DropBlock: drop contiguous regions of conv feature maps, and its p schedule.

Element-wise dropout barely regularises conv features: a dropped activation's
neighbours carry almost the same information. DropBlock drops whole
``block_size x block_size`` regions instead (Ghiasi, Lin & Le, NeurIPS 2018);
the paper ramps ``p`` up linearly from 0 over training, which
:class:`LinearScheduler` does for any module with a ``p`` attribute.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import torch.fx
from torch import Tensor, nn

from dropkit import functional as F
from dropkit.functional.dropblock import _check_eps, drop_block2d, drop_block3d
from dropkit.layers.base import DropoutLayer

__all__ = ["DropBlock2d", "DropBlock3d", "dropblock_schedule", "LinearScheduler"]


# torch.fx (torchvision's feature extraction) records each functional as one
# leaf node instead of tracing into its argument checks, as torchvision does.
torch.fx.wrap("drop_block2d")
torch.fx.wrap("drop_block3d")


class _DropBlockNd(DropoutLayer):
    """Validates the configuration once and owns ``extra_repr``.

    The arguments are torchvision's ``DropBlock2d(p, block_size, inplace=False,
    eps=1e-06)``, plus dropkit's defaults for ``p`` and ``block_size`` and its
    keyword ``scale_by_keep``.
    """

    __constants__ = ["p", "block_size", "inplace", "eps", "scale_by_keep"]
    _spatial_dims = 2

    def __init__(
        self,
        p: float = 0.1,
        block_size: int | tuple[int, ...] = 7,
        inplace: bool = False,
        eps: float = 1e-06,
        *,
        scale_by_keep: bool = True,
    ) -> None:
        super().__init__()
        self.p = F._check_p(p)
        self.block_size = F._check_block_size(block_size, self._spatial_dims)
        self.inplace = bool(inplace)
        self.eps = _check_eps(eps)
        self.scale_by_keep = bool(scale_by_keep)

    def extra_repr(self) -> str:
        return (
            f"p={self.p}, block_size={self.block_size}, inplace={self.inplace}, "
            f"eps={self.eps}, scale_by_keep={self.scale_by_keep}"
        )


class DropBlock2d(_DropBlockNd):
    r"""Zero contiguous ``block_size x block_size`` regions of each channel.

    Block corners are drawn as :math:`\mathrm{Bernoulli}(\gamma)` on the
    :math:`(H-b+1)(W-b+1)` positions where a whole block fits, with

    .. math::
        \gamma = \frac{p}{b^2}\,\frac{HW}{(H-b+1)(W-b+1)}, \qquad
        y = x \odot M\,\frac{\operatorname{numel}(M)}{\operatorname{sum}(M) + \epsilon}

    where :math:`M` is 0 inside every block. Overlaps make the dropped fraction
    slightly below ``p``; the renormalisation by the kept fraction keeps the
    mean. A feature map smaller than the block shrinks the block to the map.
    Each (sample, channel) gets its own mask. Eval mode and ``p=0`` return the
    input itself; ``p=1`` gives zeros.

    A drop-in for ``torchvision.ops.DropBlock2d(p, block_size, inplace=False,
    eps=1e-06)``: the same arguments in the same places, ``ValueError`` for a
    bad ``p`` or ``block_size``; dropkit also takes even and ``(bh, bw)``
    blocks and unbatched input, and stores ``block_size`` as a tuple.

    Args:
        p: the target fraction of dropped units (the paper's ``1 - keep_prob``). Default: 0.1.
        block_size: side of the square block, or ``(bh, bw)``. Default: 7.
        inplace: write the result into the input with torch in-place ops. Default: ``False``.
        eps: added to the kept count :math:`\operatorname{sum}(M)`. Default: 1e-6.
        scale_by_keep: renormalise by the kept fraction. Default: ``True``.

    Shape:
        - Input: :math:`(N, C, H, W)` or :math:`(C, H, W)`. Output: same shape.

    Examples::

        >>> m = dropkit.DropBlock2d(0.1, 5)
        >>> y = m(torch.randn(8, 64, 28, 28))
        >>> m = dropkit.DropBlock2d(p=0.1, block_size=5, inplace=True)  # torchvision's keywords

    Reference: Ghiasi, Lin & Le, "DropBlock: A regularization method for
    convolutional networks", NeurIPS 2018.
    """

    def forward(self, x: Tensor) -> Tensor:
        return drop_block2d(
            x, self.p, self.block_size, self.inplace, self.eps, self.training,
            scale_by_keep=self.scale_by_keep,
        )


class DropBlock3d(_DropBlockNd):
    r"""Zero contiguous ``block_size``-cubes of each channel of a volume.

    As :class:`DropBlock2d`, with

    .. math::
        \gamma = \frac{p}{b^3}\,\frac{DHW}{(D-b+1)(H-b+1)(W-b+1)}, \qquad
        y = x \odot M\,\frac{\operatorname{numel}(M)}{\operatorname{sum}(M) + \epsilon}

    A drop-in for ``torchvision.ops.DropBlock3d(p, block_size, inplace=False, eps=1e-06)``.

    Args:
        p: the target fraction of dropped units. Default: 0.1.
        block_size: side of the cube, or ``(bd, bh, bw)``. Default: 7.
        inplace: write the result into the input with torch in-place ops. Default: ``False``.
        eps: added to the kept count :math:`\operatorname{sum}(M)`. Default: 1e-6.
        scale_by_keep: renormalise by the kept fraction. Default: ``True``.

    Shape:
        - Input: :math:`(N, C, D, H, W)` or :math:`(C, D, H, W)`. Output: same shape.

    Examples::

        >>> m = dropkit.DropBlock3d(0.1, 3)
        >>> y = m(torch.randn(2, 8, 16, 16, 16))
    """

    _spatial_dims = 3

    def forward(self, x: Tensor) -> Tensor:
        return drop_block3d(
            x, self.p, self.block_size, self.inplace, self.eps, self.training,
            scale_by_keep=self.scale_by_keep,
        )


def _check_steps(total_steps: int) -> int:
    if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral) or (
        total_steps < 1
    ):
        raise ValueError(
            "Invalid value received for argument `total_steps`. Expected a positive int. "
            f"Received: total_steps={total_steps!r}"
        )
    return int(total_steps)


def dropblock_schedule(step: int, total_steps: int, p: float, start: float = 0.0) -> float:
    r"""The linear ramp of the DropBlock paper: ``start`` at step 0 to ``p`` at ``total_steps``.

    .. math::
        p_{\text{step}} = \text{start} + (p - \text{start})\,
            \min\!\left(1, \frac{\text{step}}{\text{total\_steps}}\right)

    Ghiasi et al. found a fixed ``p`` from the start hurts; ramping from 0
    (``keep_prob`` from 1) is more robust. Steps past the end stay at ``p``.

    Examples::

        >>> [dropblock_schedule(s, 4, 0.2) for s in range(6)]
        [0.0, 0.05, 0.1, 0.15000000000000002, 0.2, 0.2]
    """
    total_steps = _check_steps(total_steps)
    p = F._check_p(p)
    start = F._check_p(start, "start")
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(
            "Invalid value received for argument `step`. Expected a non-negative int. "
            f"Received: step={step!r}"
        )
    return start + (p - start) * min(1.0, step / total_steps)


class LinearScheduler:
    """Ramp the ``p`` of one or more modules linearly; call :meth:`step` once per step.

    Works for any module with a ``p`` attribute (DropBlock, Dropout, DropPath).
    Sets ``p = start`` on construction. Like a learning-rate scheduler, it
    has ``state_dict``/``load_state_dict`` so a resumed run continues the ramp.

    Args:
        modules: a module or an iterable of modules whose ``p`` to set. A
            module containing others (a whole model) is *not* searched: pass
            the dropout layers themselves, e.g.
            ``[m for m in model.modules() if isinstance(m, DropBlock2d)]``.
        p: the final value. Default: the first module's current ``p``.
        total_steps: steps to reach ``p``.
        start: the value at step 0. Default: 0.

    Examples::

        >>> block = dropkit.DropBlock2d(p=0.1, block_size=5)
        >>> sched = dropkit.LinearScheduler(block, total_steps=1000)
        >>> for batch in loader:
        ...     loss = train_step(batch); sched.step()
    """

    def __init__(
        self,
        modules: nn.Module | Iterable[nn.Module],
        *,
        total_steps: int,
        p: float | None = None,
        start: float = 0.0,
    ) -> None:
        self.modules = [modules] if isinstance(modules, nn.Module) else list(modules)
        if not self.modules:
            raise ValueError("Invalid value received for argument `modules`: it is empty.")
        for m in self.modules:
            if not hasattr(m, "p"):
                raise TypeError(
                    f"LinearScheduler needs modules with a `p` attribute; received "
                    f"{type(m).__name__}"
                )
        self.total_steps = _check_steps(total_steps)
        self.p = F._check_p(self.modules[0].p if p is None else p)
        self.start = F._check_p(start, "start")
        self.step_count = 0
        self._apply()

    def current(self) -> float:
        """The value of ``p`` at the current step."""
        return dropblock_schedule(self.step_count, self.total_steps, self.p, self.start)

    def _apply(self) -> None:
        value = self.current()
        for m in self.modules:
            m.p = value

    def step(self) -> float:
        """Advance one step, set ``p`` on the modules and return it."""
        self.step_count += 1
        self._apply()
        return self.current()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "total_steps": self.total_steps,
                "p": self.p, "start": self.start}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.total_steps = _check_steps(state["total_steps"])
        self.p = F._check_p(state["p"])
        self.start = F._check_p(state["start"], "start")
        self._apply()
