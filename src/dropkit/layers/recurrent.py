"""Dropout for sequences and embeddings: the AWD-LSTM family.

Merity, Keskar & Socher, "Regularizing and Optimizing LSTM Language Models"
(ICLR 2018) combine three ideas, each one module here: the same mask at every
time step (:class:`LockedDropout`, Gal & Ghahramani 2016), dropping whole word
vectors (:class:`EmbeddingDropout`), and dropping the *weights* of the
recurrent matrices (:class:`WeightDrop`, DropConnect of Wan et al. 2013).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn
from torch.func import functional_call

from dropkit import functional as F
from dropkit.functional.recurrent import _drop_weight
from dropkit.layers.base import DropoutLayer

__all__ = ["LockedDropout", "EmbeddingDropout", "WeightDrop", "DropConnect"]


class LockedDropout(DropoutLayer):
    r"""Variational dropout: one mask per sequence, shared over all time steps.

    .. math::
        y_{t,n,h} = \frac{m_{n,h}}{1-p}\,x_{t,n,h}, \qquad m_{n,h} \sim \mathrm{Bernoulli}(1-p)

    Dropout with a fresh mask per step on a recurrent state is averaged away
    by the recurrence (and destroys what it carries); a mask locked over time
    is the Bayesian-motivated fix that makes dropout work for RNNs
    (Gal & Ghahramani, "A Theoretically Grounded Application of Dropout in
    Recurrent Neural Networks", NeurIPS 2016). Identity in eval.

    Args:
        p: probability of a unit to be dropped for the whole sequence. Default: 0.5.
        batch_first: input is :math:`(N, T, H)` instead of :math:`(T, N, H)`,
            as for ``nn.LSTM``. Default: ``False``.

    Shape:
        - Input: :math:`(T, N, H)`, :math:`(N, T, H)` with ``batch_first``, or
          :math:`(T, H)`. Output: same shape.

    Examples::

        >>> lock = dropkit.LockedDropout(p=0.3)
        >>> out, _ = lstm(lock(embedded))      # (T, N, H)
    """

    __constants__ = ["p", "batch_first"]

    def __init__(self, p: float = 0.5, *, batch_first: bool = False) -> None:
        super().__init__()
        self.p = F._check_p(p)
        self.batch_first = bool(batch_first)

    def forward(self, x: Tensor) -> Tensor:
        return F.locked_dropout(x, self.p, self.training, batch_first=self.batch_first)

    def extra_repr(self) -> str:
        return f"p={self.p}, batch_first={self.batch_first}"


class EmbeddingDropout(DropoutLayer):
    r"""Drop whole word vectors: rows of an embedding matrix, the same for the whole batch.

    .. math::
        y_{\dots} = \frac{m_w}{1-p}\,W_w,\quad w = \text{input}_{\dots},\qquad
        m_w \sim \mathrm{Bernoulli}(1-p)\ \text{per vocabulary row}

    Every occurrence of a dropped word in the batch becomes the zero vector
    (Gal & Ghahramani, 2016; AWD-LSTM's ``embedded_dropout``). Wraps an
    existing :class:`torch.nn.Embedding` and honours its ``padding_idx``,
    ``max_norm``, ``scale_grad_by_freq`` and ``sparse``; ``state_dict`` is the
    embedding's under the prefix ``embedding.``. Identity in eval.

    Args:
        embedding: the ``nn.Embedding`` to look up in.
        p: probability of a word (row) to be dropped. Default: 0.1.

    Shape:
        - Input: integer indices :math:`(*)`. Output: :math:`(*, D)`.

    Examples::

        >>> emb = dropkit.EmbeddingDropout(nn.Embedding(10000, 400), p=0.1)
        >>> vectors = emb(tokens)          # (T, N) -> (T, N, 400)
    """

    # One keep decision per vocabulary row, for every occurrence in the batch.
    shares_mask_across_batch = True

    def __init__(self, embedding: nn.Embedding, p: float = 0.1) -> None:
        super().__init__()
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(
                "Invalid type received for argument `embedding`. Expected an nn.Embedding. "
                f"Received: {type(embedding).__name__}"
            )
        self.embedding = embedding
        self.p = F._check_p(p)

    def forward(self, input: Tensor) -> Tensor:
        e = self.embedding
        return F.embedding_dropout(
            input,
            e.weight,
            self.p,
            self.training,
            padding_idx=e.padding_idx,
            max_norm=e.max_norm,
            norm_type=e.norm_type,
            scale_grad_by_freq=e.scale_grad_by_freq,
            sparse=e.sparse,
        )

    def extra_repr(self) -> str:
        return f"p={self.p}"


class WeightDrop(DropoutLayer):
    r"""Drop the *weights* of a wrapped module (DropConnect), fresh mask every call.

    .. math::
        y = f\!\left(x;\ \frac{W \odot M}{1-p}\right), \qquad M_{ij} \sim \mathrm{Bernoulli}(1-p)

    for each named weight :math:`W`; eval uses :math:`W` itself. On an
    ``nn.LSTM``/``nn.GRU`` with ``weights=("weight_hh_l0",)`` this is
    AWD-LSTM's weight-dropped LSTM: the hidden-to-hidden mask is drawn once
    per forward call, so it is shared by every time step.

    Unlike the classic implementation, the parameters are *not* re-registered
    as ``<name>_raw`` and replaced by plain tensors: they stay where they are,
    and the forward pass calls the module with the dropped weights through
    :func:`torch.func.functional_call`. So ``state_dict`` keys are the wrapped
    module's (``wrapper.module.state_dict()`` loads into a plain module and
    back), optimisers see ordinary parameters, and there is no
    ``flatten_parameters`` dance on the CPU. On CUDA, cuDNN warns that the
    dropped weights are not one contiguous chunk; that warning is expected
    here (the weights are new every call) and silenced.

    "DropConnect" (Wan et al., 2013) approximates the test-time output by
    moment matching; like AWD-LSTM and Keras-era ports, this uses the
    inverted-scaled weights in training and the plain weights in eval.

    Args:
        module: the module whose weights to drop (``nn.Linear``, ``nn.LSTM``, ...).
        weights: names of its parameters to drop (dotted names reach into
            submodules). Default: ``("weight",)``.
        p: probability of a weight to be zeroed. Default: 0.5.

    Shape:
        - Whatever ``module`` takes and returns.

    Examples::

        >>> lstm = dropkit.WeightDrop(nn.LSTM(400, 1150), ("weight_hh_l0",), p=0.5)
        >>> out, (h, c) = lstm(x)

    Reference: Wan et al., "Regularization of Neural Networks using
    DropConnect", ICML 2013; Merity et al., ICLR 2018.
    """

    # One weight mask per forward call, seen by every sample of the batch.
    shares_mask_across_batch = True

    def __init__(
        self, module: nn.Module, weights: str | Sequence[str] = ("weight",), p: float = 0.5
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(
                "Invalid type received for argument `module`. Expected an nn.Module. "
                f"Received: {type(module).__name__}"
            )
        names = (weights,) if isinstance(weights, str) else tuple(weights)
        if not names or not all(isinstance(n, str) for n in names):
            raise ValueError(
                "Invalid value received for argument `weights`. Expected a parameter name or "
                f"a non-empty sequence of names. Received: weights={weights!r}"
            )
        own = dict(module.named_parameters())
        for name in names:
            if name not in own:
                raise ValueError(
                    f"Invalid value received for argument `weights`: {type(module).__name__} "
                    f"has no parameter {name!r}. Its parameters are: {', '.join(own)}"
                )
        self.module = module
        self.weights = names
        self.p = F._check_p(p)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.training or self.p == 0.0:
            return self.module(*args, **kwargs)
        dropped = {
            name: _drop_weight(self.module.get_parameter(name), self.p) for name in self.weights
        }
        if not isinstance(self.module, nn.RNNBase):
            return functional_call(self.module, dropped, args, kwargs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not part of single contiguous chunk.*")
            return functional_call(self.module, dropped, args, kwargs)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, p={self.p}"


# Wan et al.'s name for dropping weights. Not to be confused with drop path
# (stochastic depth), which some libraries also call "drop connect".
DropConnect = WeightDrop
