"""The public base of dropkit's dropout-family layers.

What the rest of the library needs to know about a layer, in one place:
:mod:`dropkit.mc` switches every :class:`DropoutLayer` (and torch's own
dropout modules) to training mode and asks whether a layer shares one mask
across the batch; :class:`dropkit.DropoutSchedule` and the experiments read
and set ``p``. A layer of your own that derives from :class:`DropoutLayer`
is treated like dropkit's.
"""

from __future__ import annotations

from torch import nn

__all__ = ["DropoutLayer"]


class DropoutLayer(nn.Module):
    r"""Base class of the dropout family: random in training mode, deterministic in eval mode.

    It adds no state, no ``__init__``, no ``forward`` and no ``extra_repr``,
    so a subclass's ``state_dict``, ``repr`` and pickles are what they would
    be without it. dropkit's ``Dropout``, ``Dropout1d/2d/3d``,
    ``AlphaDropout`` and ``FeatureAlphaDropout`` derive from it *and* from
    their torch class (torch's first in the bases, so torch's behaviour wins
    wherever both would say something), and stay drop-ins:
    ``isinstance(dk.Dropout(), nn.Dropout)`` is ``True``.

    What a subclass provides:

    * ``p``: the drop probability, in ``[0, 1]``. A plain attribute where it
      is configured (schedulers may set it); a read-only property where it
      is computed, e.g. :class:`~dropkit.ConcreteDropout`'s learned
      :math:`\sigma(\ell)`. The base only declares it.
    * :attr:`shares_mask_across_batch`: ``False`` unless overridden.

    Examples::

        >>> class Noise(dropkit.layers.DropoutLayer):
        ...     def __init__(self, p):
        ...         super().__init__()
        ...         self.p = p
        ...     def forward(self, x):
        ...         return x + self.p * torch.randn_like(x) if self.training else x
        >>> dropkit.mc.is_dropout_layer(Noise(0.1))
        True
    """

    # Declared, not defined: there is no sensible default rate, and a layer that
    # forgets to set one should fail loudly (AttributeError) rather than report 0.
    p: float

    #: Whether one mask (or one decision) is drawn for the whole batch rather
    #: than one per sample: rows of a batch then are not independent draws,
    #: so :func:`dropkit.mc.predict` cannot stack copies of an input into one
    #: batch to get independent samples. ``True`` for ``WeightDrop`` (one
    #: weight mask per call) and ``EmbeddingDropout`` (one decision per
    #: vocabulary row); ``DropPath``, ``StochasticDepth`` and
    #: ``ResidualDropPath`` say ``mode == "batch"``.
    shares_mask_across_batch: bool = False
