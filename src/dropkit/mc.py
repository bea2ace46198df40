"""Monte-Carlo dropout: predictive uncertainty from a network trained with dropout.

Keep dropout *on* at test time, run the same input ``samples`` times and average
the softmax outputs (Gal & Ghahramani, "Dropout as a Bayesian Approximation",
ICML 2016). The spread of the samples measures the model's uncertainty; the
mutual information between prediction and weights separates what the model does
not know (epistemic) from noise in the data (Houlsby et al., 2011, "BALD").

Only dropout-family layers are switched to their stochastic (training) mode:
BatchNorm keeps using and *not updating* its running statistics, and every
other module stays in eval mode. The original mode of every submodule is
restored afterwards, also when the forward pass raises.

    >>> with dropkit.mc.enabled(model):         # drive the sampling yourself
    ...     outs = [model(x) for _ in range(30)]
    >>> pred = dropkit.mc.predict(model, x, samples=30)
    >>> pred.mean, pred.entropy, pred.mutual_information
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import dropkit.layers
from dropkit.engine import draw_seed
from dropkit.engine.keyed import mask_keys
from dropkit.layers.base import DropoutLayer

__all__ = [
    "DROPOUT_TYPES",
    "MCPrediction",
    "enable",
    "enabled",
    "mc_dropout",
    "is_dropout",
    "is_dropout_layer",
    "predict",
    "restore_modes",
]

#: The module types switched to training mode by :func:`enable`, for
#: ``isinstance``: torch's dropout base class (of ``nn.Dropout``,
#: ``Dropout1d/2d/3d``, ``AlphaDropout``, ``FeatureAlphaDropout``, and of
#: users' subclasses of them) and dropkit's :class:`~dropkit.DropoutLayer`.
#: These two decide; the layer classes :mod:`dropkit.layers` exports follow
#: (each a ``DropoutLayer``, so they change no ``isinstance`` answer), for code
#: that enumerates the family, in the package's order.
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.dropout._DropoutNd,
    DropoutLayer,
    *dict.fromkeys(  # unique (DropConnect is WeightDrop)
        cls
        for cls in (getattr(dropkit.layers, name) for name in dropkit.layers.__all__)
        if isinstance(cls, type) and issubclass(cls, DropoutLayer) and cls is not DropoutLayer
    ),
)


def is_dropout_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a dropout-family layer: random in training mode,
    deterministic in eval mode.

    The one rule of the library (MC dropout, the schedules, the experiments):
    an instance of :class:`~dropkit.DropoutLayer` (every dropkit layer, and
    yours if it derives from it) or of torch's dropout base class (torch's
    ``nn.Dropout*``, ``AlphaDropout``, ``FeatureAlphaDropout``).
    """
    return isinstance(module, DROPOUT_TYPES)


def is_dropout(module: nn.Module, extra_types: Sequence[type] = ()) -> bool:
    """Whether :func:`enable` switches ``module`` to training mode:
    :func:`is_dropout_layer`, or an instance of one of ``extra_types``."""
    return is_dropout_layer(module) or isinstance(module, tuple(extra_types))


@contextlib.contextmanager
def restore_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: every submodule's ``training`` flag, as found, is put back on exit
    (also on an exception), whatever the block switched.

    Examples::

        >>> with dropkit.mc.restore_modes(model):
        ...     model.eval()
        ...     y = model(x)
        >>> model.training   # as before the block
    """
    modes = [(m, m.training) for m in model.modules()] if isinstance(model, nn.Module) else []
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


_OUTPUTS = ("logits", "probs", "log_probs")


def enable(model: nn.Module, extra_types: Sequence[type] = ()) -> list[nn.Module]:
    """Put ``model`` in eval mode, then only its dropout-family layers in training mode.

    Only each dropout layer's *own* flag is set: a :class:`~dropkit.WeightDrop`
    around an ``nn.LSTM`` drops weights while the LSTM itself stays in eval
    mode. Returns the switched layers. Does not remember the previous modes:
    use :func:`enabled` to get them back.

    Args:
        model: the network.
        extra_types: further module classes to treat as dropout (your own
            stochastic layers).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"Invalid type received for argument `model`. Expected an nn.Module. "
            f"Received: {type(model).__name__}"
        )
    model.eval()
    switched = [m for m in model.modules() if is_dropout(m, extra_types)]
    for m in switched:
        m.training = True
    return switched


@contextlib.contextmanager
def enabled(model: nn.Module, extra_types: Sequence[type] = ()) -> Iterator[nn.Module]:
    """Context manager: MC dropout inside the block, every module's own mode restored after.

    Examples::

        >>> with dropkit.mc.enabled(model):
        ...     probs = torch.stack([model(x).softmax(-1) for _ in range(30)])
    """
    with restore_modes(model):
        enable(model, extra_types)
        yield model


# Another name in common use for the same context manager.
mc_dropout = enabled


@dataclass
class MCPrediction:
    """The summary of ``samples`` stochastic forward passes.

    Attributes:
        mean: predictive probabilities :math:`\\bar p = \\frac1S\\sum_s p_s`, shape of one output.
        variance: per-class variance of :math:`p_s` over samples (population, ``1/S``).
        entropy: predictive entropy :math:`H[\\bar p] = -\\sum_c \\bar p_c \\log \\bar p_c`
            (total uncertainty, nats), the class dim reduced.
        expected_entropy: :math:`\\frac1S\\sum_s H[p_s]` (aleatoric part).
        mutual_information: ``entropy - expected_entropy`` (BALD; epistemic part), >= 0.
        samples: the stacked :math:`p_s`, shape ``(S, *output)``, only with
            ``return_samples=True``; otherwise ``None`` (memory stays O(output)).
    """

    mean: Tensor
    variance: Tensor
    entropy: Tensor
    expected_entropy: Tensor
    mutual_information: Tensor
    samples: Tensor | None = None


def _shares_mask_across_batch(module: nn.Module) -> bool:
    # Stacked copies of the input would all see such a layer's one mask: the
    # samples would not be independent. The layer says so itself
    # (DropoutLayer.shares_mask_across_batch); torch's dropout layers draw per
    # element or per (sample, channel).
    return isinstance(module, DropoutLayer) and bool(module.shares_mask_across_batch)


def _to_probs(out: Tensor, output: str, class_dim: int) -> Tensor:
    out = out.double()
    if output == "logits":
        return out.softmax(class_dim)
    if output == "log_probs":
        return out.exp()
    return out


def _check_positive_int(value, name: str, allow_none: bool = False) -> int | None:
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"Invalid value received for argument `{name}`. Expected a positive int"
            f"{' or None' if allow_none else ''}. Received: {name}={value!r}"
        )
    return int(value)


@torch.no_grad()
def predict(
    model: nn.Module,
    x: Tensor,
    samples: int = 30,
    batch_size: int | None = None,
    *,
    output: str = "logits",
    class_dim: int = 1,
    return_samples: bool = False,
    extra_types: Sequence[type] = (),
    consistent: bool = False,
    seed: int | None = None,
) -> MCPrediction:
    r"""Monte-Carlo dropout prediction: ``samples`` stochastic passes of ``x``, summarised.

    .. math::
        \bar p = \frac1S \sum_s p_s,\quad
        H[\bar p] = -\sum_c \bar p_c \log \bar p_c,\quad
        I = H[\bar p] - \frac1S \sum_s H[p_s]

    Dropout-family layers run in training mode, everything else (BatchNorm
    included) in eval mode; every module's mode is restored afterwards, also
    on an exception. Runs under ``torch.no_grad()``.

    Args:
        model: a classifier; its output has classes on ``class_dim``.
        x: the input batch, batch on dim 0.
        samples: the number :math:`S` of stochastic passes. Default: 30.
        batch_size: the most input rows per forward pass. ``None`` (default):
            one pass of ``x`` per sample, the same draws as a manual loop. With
            ``batch_size >= 2 * len(x)``, ``batch_size // len(x)`` copies of
            ``x`` run as one enlarged batch (faster where memory allows; each
            row gets its own masks); with ``batch_size < len(x)``, ``x`` is
            split into chunks. Models with layers that share one mask across
            the batch (``DropoutLayer.shares_mask_across_batch``: ``WeightDrop``,
            ``EmbeddingDropout``, ``DropPath``/``ResidualDropPath`` with
            ``mode="batch"``) cannot be enlarged and raise.
        output: what the model returns: ``"logits"`` (softmax applied),
            ``"probs"`` or ``"log_probs"``.
        class_dim: the class dimension of the output. Default: 1.
        return_samples: also return the stacked per-sample probabilities.
        extra_types: further module classes to treat as dropout.
        consistent: MC sample ``j`` uses one mask per layer, shared by every
            input: the passes run inside ``dk.mask_keys(seed, 0, sample_ids=j)``
            (sample id ``j`` for every row), so the result does not depend on
            ``batch_size``, on how ``x`` is split into calls, or on what else
            is in it; two equal inputs get equal samples. Batch-shared masks
            (``WeightDrop``, ``EmbeddingDropout``, ``DropPath(mode="batch")``)
            are keyed too. ``False`` (default): fresh masks per row and pass.
        seed: the key of the consistent masks; ``None`` draws one from torch's
            default generator. Only with ``consistent=True``.

    Returns:
        :class:`MCPrediction` (float32, on the output's device).

    Reference: Gal & Ghahramani, "Dropout as a Bayesian Approximation:
    Representing Model Uncertainty in Deep Learning", ICML 2016; Houlsby et
    al., "Bayesian Active Learning for Classification and Preference
    Learning", 2011 (BALD).
    """
    samples = _check_positive_int(samples, "samples")
    batch_size = _check_positive_int(batch_size, "batch_size", allow_none=True)
    if output not in _OUTPUTS:
        raise ValueError(
            f"Invalid value received for argument `output`. Expected one of {_OUTPUTS}. "
            f"Received: output={output!r}"
        )
    if not isinstance(x, Tensor) or x.ndim == 0:
        raise TypeError("predict() expects `x` as a tensor with the batch on dim 0")
    if seed is not None and not consistent:
        raise ValueError("predict(): `seed` keys the masks of consistent=True; pass "
                         "consistent=True or leave seed=None (use torch.manual_seed instead).")
    if consistent:
        seed = draw_seed() if seed is None else seed
        mask_keys(seed, 0)  # checks the seed now, not after a first forward pass

    def keys(first: int, count: int, rows: int):
        """Sample ``j``'s keys: id ``j`` for every row (rows of copy ``k`` get ``first + k``)."""
        if not consistent:
            return contextlib.nullcontext()
        if count == 1:
            return mask_keys(seed, 0, first)
        return mask_keys(seed, 0, torch.arange(first, first + count).repeat_interleave(rows))

    n = x.shape[0]
    copies = 1 if batch_size is None else max(1, min(samples, batch_size // max(n, 1)))
    chunk = n if batch_size is None or batch_size >= n else batch_size
    if copies > 1:
        shared = [type(m).__name__ for m in model.modules() if _shares_mask_across_batch(m)]
        if shared:
            raise ValueError(
                f"Invalid value received for argument `batch_size`: {batch_size} would run "
                f"{copies} copies of x in one batch, but {', '.join(sorted(set(shared)))} "
                "draws one mask for the whole batch, so the copies would not be independent "
                "samples. Use batch_size=None or batch_size <= len(x)."
            )

    sum_p = sum_p2 = sum_h = None
    kept: list[Tensor] = []

    def add(probs: Tensor) -> None:  # probs: (k, *output), float64
        nonlocal sum_p, sum_p2, sum_h
        dim = class_dim if class_dim < 0 else class_dim + 1
        h = -torch.special.xlogy(probs, probs).sum(dim)
        sp, sp2, sh = probs.sum(0), probs.pow(2).sum(0), h.sum(0)
        sum_p = sp if sum_p is None else sum_p + sp
        sum_p2 = sp2 if sum_p2 is None else sum_p2 + sp2
        sum_h = sh if sum_h is None else sum_h + sh
        if return_samples:
            kept.append(probs.float())

    with enabled(model, extra_types):
        done = 0
        while done < samples:
            k = min(copies, samples - done)
            if k > 1:
                with keys(done, k, n):
                    out = model(torch.cat([x] * k, dim=0))
                probs = _to_probs(out, output, class_dim)
                add(probs.reshape((k, n) + tuple(probs.shape[1:])))
            else:
                parts = []
                for i in range(0, n, chunk):
                    with keys(done, 1, n):  # one forward pass per block: call indices from 0
                        parts.append(model(x[i : i + chunk]))
                out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
                add(_to_probs(out, output, class_dim).unsqueeze(0))
            done += k

    mean = sum_p / samples
    variance = (sum_p2 / samples - mean.pow(2)).clamp_(min=0.0)
    entropy = -torch.special.xlogy(mean, mean).sum(class_dim)
    expected_entropy = sum_h / samples
    mutual_information = (entropy - expected_entropy).clamp_(min=0.0)
    return MCPrediction(
        mean=mean.float(),
        variance=variance.float(),
        entropy=entropy.float(),
        expected_entropy=expected_entropy.float(),
        mutual_information=mutual_information.float(),
        samples=torch.cat(kept, dim=0) if return_samples else None,
    )
