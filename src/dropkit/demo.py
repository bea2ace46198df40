"""``dropkit demo``: the classic tutorial check, done right.

A 5x5 tensor of ones goes through dropout in train and eval mode, for the
inverted and the classic formulation. The expected value of the training
output must equal the eval output; the demo prints both, then shows the bug of
scaling at train *and* test time, which breaks that equality by a factor
``1 - p``.
"""

from __future__ import annotations

import torch

from dropkit import functional as F

# Enough draws that the printed Monte-Carlo mean is within ~0.01 of its
# expectation (standard error sqrt(p/(1-p)/n) ~ 0.0045 for p=0.5).
_MEAN_DRAWS = 2000


def _format(t: torch.Tensor) -> str:
    rows = ["  [" + "  ".join(f"{v:4.2f}" for v in row.tolist()) + "]" for row in t]
    return "\n".join(rows)


def _train_mean(p: float, inverted: bool) -> float:
    x = torch.ones(_MEAN_DRAWS, 5, 5)
    return float(F.dropout(x, p, training=True, inverted=inverted).mean())


def main(p: float = 0.5, seed: int = 0) -> int:
    p = F._check_p(p)
    torch.manual_seed(seed)
    x = torch.ones(5, 5)
    keep = 1.0 - p
    print(f"dropkit demo: a 5x5 tensor of ones through dropout with p={p} (drop probability)\n")

    cases = [
        ("inverted (dropkit default, as torch.nn.Dropout)", True,
         f"train: x*m/(1-p), kept entries = 1/(1-p) = {1 / keep if keep else 0:.2f};  "
         "eval: x"),
        ("classic (Srivastava et al. 2014)", False,
         f"train: x*m, kept entries = 1;  eval: x*(1-p) = {keep:.2f}"),
    ]
    for title, inverted, rule in cases:
        train = F.dropout(x, p, training=True, inverted=inverted)
        evaluated = F.dropout(x, p, training=False, inverted=inverted)
        print(f"== {title}\n   {rule}")
        print(f"train mode (one draw, {int((train == 0).sum())} of 25 dropped):")
        print(_format(train))
        print("eval mode:")
        print(_format(evaluated))
        mean = _train_mean(p, inverted)
        print(
            f"E[train output] ~ {mean:.3f} (mean of {_MEAN_DRAWS} draws of 25)  "
            f"vs eval output {float(evaluated[0, 0]):.3f}  -> "
            f"{'consistent' if abs(mean - float(evaluated[0, 0])) < 0.02 else 'MISMATCH'}\n"
        )

    # The tutorial bug: rescale by 1/(1-p) in training AND multiply by (1-p) at test time.
    mean = _train_mean(p, inverted=True)
    wrong_eval = float(F.dropout(x, p, training=False, inverted=False)[0, 0])
    print("== the bug: scaling at train AND test time (inverted train rule + classic eval rule)")
    print(
        f"E[train output] ~ {mean:.3f} but eval output = {wrong_eval:.3f}: "
        f"the network sees activations {keep:.2f}x as large at test time as it was "
        "trained on.\n   Scale once: at train time (inverted) or at test time (classic), "
        "never both."
    )
    return 0
