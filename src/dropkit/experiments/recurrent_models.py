"""Recurrent classifiers for ``dropkit run recurrent``: one GRU, five ways to drop.

MNIST-1D is read as a sequence of 40 steps of one value each. Every variant
shares the same skeleton -- a per-step linear embedding of the scalar input,
a stack of GRU layers, the last step's output, a linear classifier -- and
differs only in *where* dropout sits and *how often* its mask is redrawn:

``none``
    no dropout.
``naive``
    a fresh mask at every time step on the input of each GRU layer *and* on
    its recurrent state ``h_{t-1}``, then dropout on the classifier input.
    This is dropout applied to a recurrent net as if it were a feed-forward
    one: the setting of the tutorials' claim "dropout does not suit recurrent
    networks". Because the state itself is dropped, each unit's memory is
    erased with probability ``p`` at every step (Zaremba et al., 2014, and
    Gal & Ghahramani, 2016, explain why this hurts). It needs a hand-written
    recurrence loop (:class:`NaiveDropoutGRU`): ``nn.GRU`` cannot drop inside
    its loop.
``locked``
    :class:`dropkit.LockedDropout`: one mask per sequence, reused at every
    step, on the input of each GRU layer and on the classifier input
    (variational dropout on the non-recurrent connections, Gal & Ghahramani,
    2016; the AWD-LSTM's "locked dropout", Merity et al., 2018).
``weightdrop``
    :class:`dropkit.WeightDrop` on every layer's hidden-to-hidden weights
    (DropConnect on the recurrent matrix, one mask per forward: the AWD-LSTM
    recipe), plus dropout on the classifier input.
``between-layers``
    torch's own ``nn.GRU(dropout=p)``: a fresh mask per step on the outputs of
    every layer but the last (Zaremba et al., 2014: drop the non-recurrent
    connections only), plus dropout on the classifier input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import dropkit as dk

RECURRENT_VARIANTS: tuple[str, ...] = ("none", "naive", "locked", "weightdrop", "between-layers")


def check_variant(variant: str) -> str:
    if variant not in RECURRENT_VARIANTS:
        raise ValueError(
            f"Unknown recurrent variant {variant!r}. Choose one of: "
            f"{', '.join(RECURRENT_VARIANTS)}."
        )
    return variant


class NaiveDropoutGRU(nn.Module):
    r"""A GRU unrolled by hand that draws a fresh dropout mask at every time step.

    For each layer :math:`l` and step :math:`t`, with masks
    :math:`m_t, r_t \sim \mathrm{Bernoulli}(1-p)` drawn anew at every step:

    .. math::
        h^{l}_t = \mathrm{GRUCell}\big(\tfrac{m_t}{1-p} \odot h^{l-1}_t,\;
                                      \tfrac{r_t}{1-p} \odot h^{l}_{t-1}\big)

    with :math:`h^0_t = x_t`. Dropping :math:`h_{t-1}` before the cell drops it
    from the gates *and* from the carried state, so memory is erased at every
    step -- on purpose: this is the naive setting the claim is about.

    Args:
        input_size, hidden_size, num_layers: as for ``nn.GRU``.
        p: drop probability of both masks.

    Shape:
        - Input: :math:`(N, T, H_{in})` (batch first). Output: :math:`(N, T, H)`
          and the final states :math:`(L, N, H)`, like ``nn.GRU(batch_first=True)``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, p: float = 0.0):
        super().__init__()
        self.hidden_size = hidden_size
        self.cells = nn.ModuleList(
            nn.GRUCell(input_size if i == 0 else hidden_size, hidden_size)
            for i in range(num_layers)
        )
        # Two modules (not one functional call) so a forward hook can watch each mask.
        self.input_drop = dk.Dropout(p)
        self.state_drop = dk.Dropout(p)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n, steps, _ = x.shape
        states = [x.new_zeros(n, self.hidden_size) for _ in self.cells]
        outputs = []
        for t in range(steps):
            inp = x[:, t]
            for i, cell in enumerate(self.cells):
                states[i] = cell(self.input_drop(inp), self.state_drop(states[i]))
                inp = states[i]
            outputs.append(inp)
        return torch.stack(outputs, dim=1), torch.stack(states)


class GRUClassifier(nn.Module):
    """Embedding -> dropout variant -> stacked GRU -> last step -> classifier."""

    def __init__(
        self,
        variant: str,
        p: float,
        n_classes: int,
        *,
        embed: int = 32,
        hidden: int = 64,
        layers: int = 2,
    ) -> None:
        super().__init__()
        self.variant = check_variant(variant)
        p = p if variant != "none" else 0.0
        self.embed = nn.Linear(1, embed)
        self.head_drop: nn.Module = nn.Identity() if p == 0 else dk.Dropout(p)
        self.head = nn.Linear(hidden, n_classes)
        if variant == "naive":
            self.rnn: nn.Module = NaiveDropoutGRU(embed, hidden, layers, p)
        elif variant == "locked":
            # One GRU module per layer so a locked mask can sit on every layer's input.
            self.rnn = nn.ModuleList(
                nn.GRU(embed if i == 0 else hidden, hidden, batch_first=True) for i in range(layers)
            )
            self.locked = nn.ModuleList(
                dk.LockedDropout(p, batch_first=True) for _ in range(layers + 1)
            )
            self.head_drop = nn.Identity()  # the last locked mask covers the classifier input
        elif variant == "weightdrop":
            gru = nn.GRU(embed, hidden, num_layers=layers, batch_first=True)
            weights = tuple(f"weight_hh_l{i}" for i in range(layers))
            self.rnn = dk.WeightDrop(gru, weights=weights, p=p)
        elif variant == "between-layers":
            self.rnn = nn.GRU(embed, hidden, num_layers=layers, batch_first=True, dropout=p)
        else:
            self.rnn = nn.GRU(embed, hidden, num_layers=layers, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        seq = self.embed(x.unsqueeze(-1))  # (N, T) -> (N, T, E): one scalar per step
        if self.variant == "locked":
            for drop, gru in zip(self.locked, self.rnn, strict=False):
                seq, _ = gru(drop(seq))
            seq = self.locked[-1](seq)
        else:
            seq, _ = self.rnn(seq)
        return self.head(self.head_drop(seq[:, -1]))
