"""The regularizers that ``dropkit run`` compares, and how each one is applied.

A regularizer acts in one (or two) of three places: inside the model (dropout,
DropPath: see ``models.py``), in the loss (L1), or in the optimiser step (L2 as
weight decay, the max-norm constraint). This module names them and holds the
loss and step parts; the model part is read from :attr:`Regularizer.dropout`
and :attr:`Regularizer.droppath` by the model builders.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Regularizer:
    name: str
    description: str
    #: "inverted" (scale by 1/(1-p) in training), "classic" (scale by 1-p at test time) or None
    dropout: str | None = None
    droppath: bool = False
    l2: bool = False
    l1: bool = False
    max_norm: bool = False

    @property
    def uses_p(self) -> bool:
        """Whether the drop probability ``p`` means anything for this regularizer."""
        return self.dropout is not None or self.droppath


REGULARIZERS: dict[str, Regularizer] = {
    r.name: r
    for r in (
        Regularizer("none", "no regularization"),
        Regularizer("dropout", "dropkit's inverted dropout (dk.Dropout)", dropout="inverted"),
        Regularizer(
            "dropout-classic",
            "the original formulation: train x*m, test x*(1-p) (dk.Dropout(inverted=False))",
            dropout="classic",
        ),
        Regularizer("l2", "L2 penalty on the weights (Adam weight_decay)", l2=True),
        Regularizer("l1", "L1 penalty on the weights, added to the loss", l1=True),
        Regularizer(
            "dropout+maxnorm",
            "inverted dropout plus a max-norm constraint on each unit's incoming weights "
            "(Srivastava et al. 2014)",
            dropout="inverted",
            max_norm=True,
        ),
        Regularizer(
            "droppath",
            "stochastic depth on residual branches (dk.DropPath, linear depth schedule; "
            "resmlp only)",
            droppath=True,
        ),
    )
}


def names() -> list[str]:
    return list(REGULARIZERS)


def get(name: str) -> Regularizer:
    try:
        return REGULARIZERS[name]
    except KeyError:
        raise ValueError(
            f"Unknown regularizer {name!r}. Choose one of: {', '.join(names())}."
        ) from None


def _weights(model: nn.Module) -> list[torch.nn.Parameter]:
    """Weight matrices and kernels (not biases, not normalisation scales): what penalties act on."""
    return [p for n, p in model.named_parameters() if p.ndim > 1 and n.endswith("weight")]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Optimiser groups: weight decay on weights only (biases and norms are left alone)."""
    weights = {id(p) for p in _weights(model)}
    decay = [p for p in model.parameters() if id(p) in weights]
    rest = [p for p in model.parameters() if id(p) not in weights]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    return groups


def l1_penalty(model: nn.Module) -> torch.Tensor:
    return sum(p.abs().sum() for p in _weights(model))


@torch.no_grad()
def apply_max_norm(model: nn.Module, max_norm: float) -> None:
    """Project each unit's incoming weight vector onto the ball of radius ``max_norm``.

    For ``nn.Linear`` (out, in) and ``nn.Conv1d`` (out, in, k) the incoming
    weights of output unit ``j`` are ``weight[j]``, so ``renorm`` over dim 0.
    """
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d):
            m.weight.copy_(torch.renorm(m.weight, p=2, dim=0, maxnorm=max_norm))
