"""LockedDropout, EmbeddingDropout and WeightDrop (DropConnect).

Tolerances: a dropped fraction over n independent Bernoulli(p) decisions is
checked to 5 binomial standard deviations, 5 sqrt(p (1 - p) / n). Note n
counts the *decisions* (units of a sequence, vocabulary rows, weights), not
the elements they are broadcast over.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

import dropkit as dk


def _within_binomial(fraction: float, p: float, n: int) -> bool:
    return abs(fraction - p) <= 5 * math.sqrt(p * (1 - p) / n)


# ------------------------------------------------------------- LockedDropout
@pytest.mark.parametrize("batch_first", [False, True])
def test_locked_mask_shared_over_time(batch_first):
    torch.manual_seed(0)
    p, T, N, H = 0.3, 7, 64, 128
    shape = (N, T, H) if batch_first else (T, N, H)
    y = dk.LockedDropout(p, batch_first=batch_first)(torch.ones(shape))
    steps = y.unbind(1 if batch_first else 0)
    for step in steps[1:]:
        assert torch.equal(step, steps[0])
    mask = steps[0] != 0  # (N, H): one decision per sequence and unit
    assert _within_binomial(1 - mask.float().mean().item(), p, N * H)
    assert not torch.equal(mask[0], mask[1])  # different sequences, different masks
    assert torch.allclose(steps[0][mask], torch.full_like(steps[0][mask], 1 / (1 - p)))


def test_locked_unbatched_eval_grad_errors():
    torch.manual_seed(1)
    y = dk.locked_dropout(torch.ones(5, 16), 0.5)
    assert all(torch.equal(y[t], y[0]) for t in range(5))
    m = dk.LockedDropout(0.4).eval()
    x = torch.randn(4, 3, 8, requires_grad=True)
    assert m(x) is x
    m.train()
    torch.manual_seed(2)
    out = m(x)
    out.sum().backward()
    torch.manual_seed(2)
    assert torch.allclose(x.grad, m(torch.ones(4, 3, 8)))
    assert dk.LockedDropout(0.2)(torch.ones(3, 2, 4, dtype=torch.bfloat16)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"4D input of shape \(1, 2, 3, 4\)"):
        m(torch.ones(1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"p=1.2"):
        dk.LockedDropout(1.2)
    assert repr(dk.LockedDropout(0.2, batch_first=True)) == "LockedDropout(p=0.2, batch_first=True)"


# ---------------------------------------------------------- EmbeddingDropout
def test_embedding_drops_whole_rows_with_rate_p():
    torch.manual_seed(0)
    V, D, p = 20_000, 4, 0.25
    emb = dk.EmbeddingDropout(nn.Embedding(V, D), p)
    out = emb(torch.arange(V))
    row_zero = (out == 0).all(-1)
    assert torch.equal((out == 0).any(-1), row_zero)  # whole vectors, never part of one
    assert _within_binomial(row_zero.float().mean().item(), p, V)
    kept = ~row_zero
    assert torch.allclose(out[kept], emb.embedding.weight[kept] / (1 - p))


def test_embedding_same_word_same_decision_within_batch():
    torch.manual_seed(1)
    emb = dk.EmbeddingDropout(nn.Embedding(50, 8), 0.5)
    tokens = torch.randint(0, 50, (30, 16))
    out = emb(tokens)
    dropped = (out == 0).all(-1)
    for word in tokens.unique():
        decisions = dropped[tokens == word]
        assert decisions.all() or not decisions.any()


def test_embedding_grad_eval_state_dict_padding():
    torch.manual_seed(2)
    base = nn.Embedding(30, 5, padding_idx=0)
    emb = dk.EmbeddingDropout(base, 0.5)
    tokens = torch.arange(30)
    out = emb(tokens)
    out.sum().backward()
    kept = ~(out == 0).all(-1)
    expected = kept.float().unsqueeze(-1).expand(30, 5) * 2.0
    expected[0] = 0.0  # padding row gets no gradient, as in nn.Embedding
    assert torch.equal(base.weight.grad, expected)
    emb.eval()
    assert torch.equal(emb(tokens), base(tokens))
    assert list(emb.state_dict()) == ["embedding.weight"]
    with pytest.raises(TypeError, match="nn.Embedding. Received: Linear"):
        dk.EmbeddingDropout(nn.Linear(3, 3), 0.1)
    with pytest.raises(TypeError, match="integer indices"):
        emb.train()(torch.ones(3))
    with pytest.raises(ValueError, match=r"p=-1"):
        dk.EmbeddingDropout(base, -1)


# ----------------------------------------------------------------- WeightDrop
def test_weightdrop_linear_drops_weights_with_rate_p():
    torch.manual_seed(0)
    p, n_in, n_out = 0.4, 64, 128
    lin = nn.Linear(n_in, n_out)
    wd = dk.WeightDrop(lin, ("weight",), p)
    eye = torch.eye(n_in, requires_grad=False)
    y = wd(eye)  # rows are W_eff^T + b
    w_eff = (y - lin.bias).T.detach()
    dropped = w_eff.abs() < 1e-6
    assert _within_binomial(dropped.float().mean().item(), p, n_in * n_out)
    assert torch.allclose(w_eff[~dropped], lin.weight.detach()[~dropped] / (1 - p), atol=1e-5)
    # grad of sum(y) w.r.t. W_eff is 1 everywhere, so W.grad = mask / (1 - p)
    y.sum().backward()
    assert torch.allclose(lin.weight.grad, (~dropped).float() / (1 - p))
    # a fresh mask every call, one mask for all rows of the batch
    w_eff2 = (wd(eye) - lin.bias).T.detach()
    assert not torch.equal(w_eff2.abs() < 1e-6, dropped)
    # eval: the module itself
    wd.eval()
    x = torch.randn(5, n_in)
    assert torch.equal(wd(x), lin(x))
    assert dk.DropConnect is dk.WeightDrop


def _train_steps(model, steps=5, batch_first=False):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randn(6, 4, 8)
    target = torch.randn(6, 4, 16)
    losses = []
    for _ in range(steps):
        out, _ = model(x)
        loss = (out - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("rnn_cls", [nn.LSTM, nn.GRU])
def test_weightdrop_rnn_trains_on_cpu_without_warnings_and_round_trips(rnn_cls):
    torch.manual_seed(0)
    rnn = rnn_cls(8, 16, num_layers=2)
    plain_keys = list(rnn.state_dict())
    wd = dk.WeightDrop(rnn, ("weight_hh_l0", "weight_hh_l1"), p=0.3)
    before = rnn.weight_hh_l0.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no flatten_parameters / contiguity warnings
        losses = _train_steps(wd, steps=8)
    assert losses[-1] < losses[0]
    assert not torch.equal(rnn.weight_hh_l0, before)  # the real parameter was trained
    # parameters are not re-registered: same names, same objects, no `_raw`
    assert list(wd.state_dict()) == ["module." + k for k in plain_keys]
    assert not any(k.endswith("_raw") for k in wd.state_dict())
    assert {id(q) for q in wd.parameters()} == {id(q) for q in rnn.parameters()}
    # the plain module in eval runs on the trained weights (nothing stale left behind)
    fresh = rnn_cls(8, 16, num_layers=2)
    fresh.load_state_dict(wd.module.state_dict())
    x = torch.randn(5, 3, 8)
    wd.eval()
    assert torch.allclose(wd(x)[0], fresh(x)[0])
    assert torch.allclose(rnn(x)[0], fresh(x)[0])
    # state_dict round trip into a new wrapper, and back into a plain module
    other = dk.WeightDrop(rnn_cls(8, 16, num_layers=2), ("weight_hh_l0",), 0.3)
    other.load_state_dict(wd.state_dict())
    assert torch.allclose(other.eval()(x)[0], fresh(x)[0])
    clone = copy.deepcopy(wd)
    assert torch.allclose(clone(x)[0], fresh(x)[0])


def test_weightdrop_hidden_mask_is_fresh_per_call_and_grads_flow():
    torch.manual_seed(1)
    lstm = nn.LSTM(4, 6, batch_first=True)
    wd = dk.WeightDrop(lstm, "weight_hh_l0", 0.5)
    x = torch.randn(2, 5, 4)
    a, b = wd(x)[0], wd(x)[0]
    assert not torch.allclose(a, b)
    a.sum().backward()
    assert lstm.weight_hh_l0.grad is not None and lstm.weight_ih_l0.grad is not None
    # about half of the hidden-to-hidden gradient entries are exactly 0
    zero_fraction = (lstm.weight_hh_l0.grad == 0).float().mean().item()
    assert _within_binomial(zero_fraction, 0.5, lstm.weight_hh_l0.numel())


def test_weightdrop_bad_arguments():
    with pytest.raises(ValueError, match=r"no parameter 'weight_hh'.*weight_ih_l0"):
        dk.WeightDrop(nn.LSTM(2, 3), ("weight_hh",), 0.5)
    with pytest.raises(ValueError, match=r"weights=\(\)"):
        dk.WeightDrop(nn.Linear(2, 3), (), 0.5)
    with pytest.raises(TypeError, match="Received: function"):
        dk.WeightDrop(lambda x: x, ("weight",), 0.5)
    with pytest.raises(ValueError, match=r"p=1.5"):
        dk.WeightDrop(nn.Linear(2, 3), ("weight",), 1.5)
    assert "weights=('weight',), p=0.2" in repr(dk.WeightDrop(nn.Linear(2, 3), p=0.2))
