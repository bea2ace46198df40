"""The networks ``dropkit run`` trains, with their per-model default settings.

Every builder takes the input size, the number of classes, the regularizer and
the drop probability, and puts dropout (or DropPath) where that family of
network conventionally has it:

- ``tutorial-mlp``: in-64-64-out, ReLU, dropout after each hidden layer (the
  tutorials' network).
- ``wide-mlp``: in-512-512-out, the same with wide layers: it overfits MNIST-1D,
  so dropout has something to fix.
- ``cnn1d``: the MNIST-1D paper's small CNN (three stride-2 convolutions of 25
  channels), channel dropout (``dk.Dropout1d``) after the first two
  convolutions and element-wise dropout before the classifier.
- ``resmlp``: residual MLP blocks ``x + DropPath(W2 relu(W1 LN(x)))``; dropout
  inside each branch, or DropPath on the branches with the linear depth schedule
  ``dk.drop_path_rates(depth, p)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dropkit.experiments.regularizers import Regularizer


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    build: Callable[..., nn.Module]
    #: training defaults for this model: epochs, batch_size, lr, p
    defaults: dict[str, Any] = field(default_factory=dict)
    #: why the defaults are what they are (shown in the report)
    why: str = ""


class _ClassicScale(nn.Module):
    """Turn an inverted dropout into the classic one: multiply by (1 - p) always.

    Inverted dropout gives ``x*m/(1-p)`` in training and ``x`` at test time;
    times ``(1-p)`` that is ``x*m`` and ``x*(1-p)``: the original formulation.
    Used for channel dropout, whose module has only the inverted form.
    """

    def __init__(self, inner: nn.Module, p: float) -> None:
        super().__init__()
        self.inner = inner
        self.keep = 1.0 - p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.keep


def dropout_layer(reg: Regularizer, p: float, kind: str = "element") -> nn.Module:
    """The dropout module for ``reg`` at rate ``p`` (``nn.Identity`` when it has none)."""
    if reg.dropout is None or p == 0.0:
        return nn.Identity()
    import dropkit as dk

    if kind == "element":
        return dk.Dropout(p, inverted=reg.dropout == "inverted")
    layer = dk.Dropout1d(p)
    return layer if reg.dropout == "inverted" else _ClassicScale(layer, p)


def _mlp(width: int) -> Callable[..., nn.Module]:
    def build(in_features: int, n_classes: int, reg: Regularizer, p: float) -> nn.Module:
        _no_droppath(reg, f"{width}-wide MLP")
        return nn.Sequential(
            nn.Linear(in_features, width),
            nn.ReLU(),
            dropout_layer(reg, p),
            nn.Linear(width, width),
            nn.ReLU(),
            dropout_layer(reg, p),
            nn.Linear(width, n_classes),
        )

    return build


def _no_droppath(reg: Regularizer, what: str) -> None:
    if reg.droppath:
        raise ValueError(
            f"Regularizer 'droppath' needs residual branches; the {what} has none. "
            "Use --model resmlp."
        )


class CNN1d(nn.Module):
    """The MNIST-1D paper's CNN: 3 stride-2 convolutions (25 channels) and a linear head."""

    def __init__(
        self, in_features: int, n_classes: int, reg: Regularizer, p: float, channels: int = 25
    ) -> None:
        super().__init__()
        _no_droppath(reg, "cnn1d")
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1),
            nn.ReLU(),
            dropout_layer(reg, p, "channel"),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            dropout_layer(reg, p, "channel"),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features.eval()(torch.zeros(1, 1, in_features)).shape[1]
        self.features.train()
        self.head = nn.Sequential(dropout_layer(reg, p), nn.Linear(flat, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(1)))


class ResidualBlock(nn.Module):
    """``x + drop_path(W2 relu(W1 layernorm(x)))`` (pre-norm, as in ResMLP/ViT blocks)."""

    def __init__(self, width: int, hidden: int, dropout: nn.Module, drop_path: nn.Module) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, hidden),
            nn.ReLU(),
            dropout,
            nn.Linear(hidden, width),
        )
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.branch(x))


class ResMLP(nn.Module):
    def __init__(
        self,
        in_features: int,
        n_classes: int,
        reg: Regularizer,
        p: float,
        width: int = 128,
        depth: int = 4,
    ) -> None:
        super().__init__()
        import dropkit as dk

        rates = dk.drop_path_rates(depth, p) if reg.droppath else [0.0] * depth
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.Sequential(
            *(
                ResidualBlock(
                    width,
                    2 * width,
                    dropout_layer(reg, p),
                    dk.DropPath(rate) if rate > 0 else nn.Identity(),
                )
                for rate in rates
            )
        )
        self.head = nn.Sequential(nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec(
            "tutorial-mlp",
            "in-64-64-out MLP, ReLU, dropout after each hidden layer (the tutorials' network)",
            _mlp(64),
            {"epochs": 500, "batch_size": 100, "lr": 1e-3, "p": 0.5},
            "p = 0.5 is the tutorials' setting. Trained to its best validation epoch "
            "without dropout, this network overfits MNIST-1D (its training accuracy runs "
            "far ahead of its validation accuracy); with dropout 0.5 it cannot fit the "
            "training set much better than the validation set (docs/experiments.md).",
        ),
        ModelSpec(
            "wide-mlp",
            "in-512-512-out MLP, ReLU, dropout after each hidden layer",
            _mlp(512),
            {"epochs": 500, "batch_size": 100, "lr": 1e-3, "p": 0.5},
            "Fits the MNIST-1D training examples perfectly and overfits, so dropout has "
            "something to fix. p = 0.5 tops the sweep under the validation protocol "
            "(dropkit run sweep-p, docs/experiments.md: 71.0%, with 0.3-0.6 within about "
            "two seed stds); at a fixed 40-epoch budget the top was 0.3.",
        ),
        ModelSpec(
            "cnn1d",
            "the MNIST-1D paper's CNN: 3 stride-2 Conv1d (25 channels), channel dropout",
            CNN1d,
            {"epochs": 500, "batch_size": 100, "lr": 3e-3, "p": 0.1},
            "The architecture of the MNIST-1D paper's CNN baseline; a small p because "
            "channel dropout on 25 channels removes a lot of signal.",
        ),
        ModelSpec(
            "resmlp",
            "residual MLP: stem, 4 pre-norm blocks (128-256-128), DropPath on the branches",
            ResMLP,
            {"epochs": 500, "batch_size": 100, "lr": 1e-3, "p": 0.1},
            "A network with residual branches, so that DropPath has something to drop.",
        ),
    )
}


def _registry() -> dict[str, ModelSpec]:
    """MODELS plus ``models_extra.EXTRA_MODELS`` (imported here, on first use: that
    module builds on this one, so it cannot be imported at the top)."""
    from dropkit.experiments.models_extra import EXTRA_MODELS

    return {**MODELS, **{m.name: m for m in EXTRA_MODELS if m.name not in MODELS}}


def names() -> list[str]:
    return list(_registry())


def get(name: str) -> ModelSpec:
    try:
        return _registry()[name]
    except KeyError:
        raise ValueError(f"Unknown model {name!r}. Choose one of: {', '.join(names())}.") from None


def build_model(
    name: str, in_features: int, n_classes: int, reg: Regularizer, p: float
) -> nn.Module:
    """Build model ``name`` with regularizer ``reg`` at drop probability ``p``."""
    return get(name).build(in_features, n_classes, reg, p)
