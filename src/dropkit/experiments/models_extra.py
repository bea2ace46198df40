"""Networks with BatchNorm for ``dropkit run batchnorm``, registered as extra models.

``mlp-bn`` and ``cnn1d-bn`` take a ``placement`` of their dropout layers:

``none``
    no dropout.
``before-bn``
    dropout right before every BatchNorm layer (``Linear -> ReLU -> Dropout ->
    BN``): the BatchNorm collects its running statistics on dropped, rescaled
    inputs -- the "variance shift" clash of Li et al. (CVPR 2019).
``after-bn``
    dropout only after the last BatchNorm layer, before the classifier: Li
    et al.'s advice, no BatchNorm ever sees a dropped input.

Listed in :data:`EXTRA_MODELS`, which ``models.py`` adds to its registry when
the registry is first read (so ``dropkit run compare --model mlp-bn`` works too:
there, a dropout regularizer means ``before-bn``). Nothing here changes another
module at import time.
"""

from __future__ import annotations

import torch
from torch import nn

from dropkit.experiments import models
from dropkit.experiments.regularizers import Regularizer

PLACEMENTS = ("none", "before-bn", "after-bn")


def _drop(p: float, placement: str, where: str, kind: str) -> nn.Module:
    import dropkit as dk

    if placement != where or p == 0.0:
        return nn.Identity()
    return dk.Dropout(p) if kind == "element" else dk.Dropout1d(p)


class MLPBN(nn.Module):
    """in-W-W-out MLP with BatchNorm: two blocks ``Linear -> ReLU -> [drop] -> BN``."""

    def __init__(
        self, in_features: int, n_classes: int, p: float, placement: str, width: int = 256
    ) -> None:
        super().__init__()
        if placement not in PLACEMENTS:
            raise ValueError(
                f"Unknown dropout placement {placement!r}. Choose one of: {', '.join(PLACEMENTS)}."
            )
        self.body = nn.Sequential(
            nn.Linear(in_features, width),
            nn.ReLU(),
            _drop(p, placement, "before-bn", "element"),
            nn.BatchNorm1d(width),
            nn.Linear(width, width),
            nn.ReLU(),
            _drop(p, placement, "before-bn", "element"),
            nn.BatchNorm1d(width),
        )
        self.head = nn.Sequential(
            _drop(p, placement, "after-bn", "element"), nn.Linear(width, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class CNN1dBN(nn.Module):
    """The MNIST-1D CNN (3 stride-2 convolutions) with BatchNorm after each convolution:
    ``Conv -> ReLU -> [channel drop] -> BN``; channel dropout (``dk.Dropout1d``)."""

    def __init__(
        self, in_features: int, n_classes: int, p: float, placement: str, channels: int = 25
    ) -> None:
        super().__init__()
        if placement not in PLACEMENTS:
            raise ValueError(
                f"Unknown dropout placement {placement!r}. Choose one of: {', '.join(PLACEMENTS)}."
            )
        layers: list[nn.Module] = []
        for i, (k, pad) in enumerate(((5, 1), (3, 1), (3, 1))):
            layers += [
                nn.Conv1d(1 if i == 0 else channels, channels, k, stride=2, padding=pad),
                nn.ReLU(),
                _drop(p, placement, "before-bn", "channel"),
                nn.BatchNorm1d(channels),
            ]
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.features.eval()(torch.zeros(2, 1, in_features)).shape[1]
        self.features.train()
        self.head = nn.Sequential(
            _drop(p, placement, "after-bn", "element"), nn.Linear(flat, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(1)))


def build(name: str, in_features: int, n_classes: int, p: float, placement: str) -> nn.Module:
    if name == "mlp-bn":
        return MLPBN(in_features, n_classes, p, placement)
    if name == "cnn1d-bn":
        return CNN1dBN(in_features, n_classes, p, placement)
    raise ValueError(f"Unknown BatchNorm model {name!r}. Choose one of: mlp-bn, cnn1d-bn.")


def _registry_builder(name: str):
    def builder(in_features: int, n_classes: int, reg: Regularizer, p: float) -> nn.Module:
        if reg.droppath:
            raise ValueError(
                f"Regularizer 'droppath' needs residual branches; {name} has "
                "none. Use --model resmlp."
            )
        if reg.dropout == "classic":
            raise ValueError(f"{name} supports inverted dropout only")
        return build(name, in_features, n_classes, p, "before-bn" if reg.dropout else "none")

    return builder


BN_MODELS = ("mlp-bn", "cnn1d-bn")

_BN_SPECS = (
    models.ModelSpec(
        "mlp-bn",
        "in-256-256-out MLP with BatchNorm (Linear -> ReLU -> [dropout] -> BN)",
        _registry_builder("mlp-bn"),
        {"epochs": 500, "batch_size": 100, "lr": 1e-3, "p": 0.5},
        "Two BatchNorm layers, each fed by a dropout layer in the 'before-bn' placement.",
    ),
    models.ModelSpec(
        "cnn1d-bn",
        "the MNIST-1D CNN with BatchNorm after each of its 3 convolutions",
        _registry_builder("cnn1d-bn"),
        {"epochs": 500, "batch_size": 100, "lr": 3e-3, "p": 0.5},
        "Three BatchNorm layers fed by channel dropout in the 'before-bn' placement.",
    ),
)


def _gru_builder(in_features: int, n_classes: int, reg: Regularizer, p: float) -> nn.Module:
    from dropkit.experiments.recurrent_models import GRUClassifier

    if reg.droppath or reg.dropout == "classic":
        raise ValueError("gru supports 'none' and inverted 'dropout' (between layers) only")
    return GRUClassifier("between-layers" if reg.dropout else "none", p, n_classes)


#: the models defined here, in the order ``dropkit run --help`` lists them
EXTRA_MODELS: tuple[models.ModelSpec, ...] = (
    *_BN_SPECS,
    models.ModelSpec(
        "gru",
        "2-layer GRU (64 units) reading MNIST-1D as a sequence of 40 steps, last step -> linear",
        _gru_builder,
        {"epochs": 10, "batch_size": 128, "lr": 1e-2, "p": 0.25},
        "The MNIST-1D paper's recurrent baseline (a GRU, ~91% test accuracy); with "
        "--regularizers dropout, torch's dropout between the stacked layers.",
    ),
)
