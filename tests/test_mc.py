"""Monte-Carlo dropout: dk.mc.enable / enabled / predict."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import dropkit as dk


def _model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(10, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Dropout(0.3),  # torch's own
        nn.Linear(32, 32),
        dk.Dropout(0.2),
        nn.SELU(),
        nn.AlphaDropout(0.1),
        dk.GaussianDropout(0.1),
        nn.Linear(32, 5),
    )
    # non-trivial running statistics, as after training
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(64, 10) * 2 + 1)
    return model


def _bn_state(model):
    bn = model[1]
    return (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())


def test_enable_switches_only_dropout_layers():
    model = _model()
    switched = dk.mc.enable(model)
    assert {type(m) for m in switched} == {
        nn.Dropout, dk.Dropout, nn.AlphaDropout, dk.GaussianDropout
    }
    for m in model.modules():
        assert m.training == isinstance(m, tuple({type(s) for s in switched}))
    assert not model[1].training  # BatchNorm stays in eval mode


def test_predict_leaves_batchnorm_untouched_and_in_eval():
    model = _model()
    before = _bn_state(model)
    seen = []
    model[1].register_forward_hook(lambda m, i, o: seen.append(m.training))
    dk.mc.predict(model, torch.randn(16, 10), samples=5)
    assert seen == [False] * 5
    for a, b in zip(before, _bn_state(model), strict=True):
        assert torch.equal(a, b)


def test_modes_restored_mixed_and_after_exception():
    model = _model()
    model.train()
    model[3].eval()  # a mixed state: must come back exactly
    model[5].eval()
    modes = [m.training for m in model.modules()]
    dk.mc.predict(model, torch.randn(4, 10), samples=2)
    assert [m.training for m in model.modules()] == modes

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    bad = nn.Sequential(model, Boom())
    modes = [m.training for m in bad.modules()]
    with pytest.raises(RuntimeError, match="boom"):
        dk.mc.predict(bad, torch.randn(4, 10), samples=3)
    assert [m.training for m in bad.modules()] == modes
    with pytest.raises(RuntimeError, match="boom"), dk.mc.enabled(bad):
        assert not model[1].training and model[3].training
        bad(torch.randn(4, 10))
    assert [m.training for m in bad.modules()] == modes
    assert dk.mc.mc_dropout is dk.mc.enabled


def test_predict_equals_manual_loop_with_same_seed():
    model = _model()
    x = torch.randn(20, 10)
    torch.manual_seed(123)
    pred = dk.mc.predict(model, x, samples=12, return_samples=True)
    torch.manual_seed(123)
    with torch.no_grad(), dk.mc.enabled(model):
        probs = torch.stack([model(x).softmax(1) for _ in range(12)])
    assert torch.allclose(pred.samples, probs, atol=1e-6)
    mean = probs.mean(0)
    assert torch.allclose(pred.mean, mean, atol=1e-6)
    assert torch.allclose(pred.variance, probs.var(0, unbiased=False), atol=1e-6)
    entropy = -(mean * mean.log()).sum(1)
    expected_entropy = -(probs * probs.log()).sum(2).mean(0)
    assert torch.allclose(pred.entropy, entropy, atol=1e-5)
    assert torch.allclose(pred.expected_entropy, expected_entropy, atol=1e-5)
    assert torch.allclose(pred.mutual_information, entropy - expected_entropy, atol=1e-5)
    assert (pred.mutual_information > 0).all()  # the samples really differ
    assert (pred.entropy <= math.log(5) + 1e-6).all()
    assert torch.allclose(pred.mean.sum(1), torch.ones(20))


def test_deterministic_model_has_zero_epistemic_uncertainty():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 5))
    x = torch.randn(8, 10)
    pred = dk.mc.predict(model, x, samples=4)
    assert torch.allclose(pred.mean, model(x).softmax(1), atol=1e-6)
    assert torch.allclose(pred.variance, torch.zeros(8, 5), atol=1e-7)
    assert torch.allclose(pred.mutual_information, torch.zeros(8), atol=1e-6)
    assert pred.samples is None


def test_enlarged_batch_and_chunks():
    model = _model()
    x = torch.randn(10, 10)
    calls = []
    model[0].register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    pred = dk.mc.predict(model, x, samples=30, batch_size=300, return_samples=True)
    assert calls == [300]  # one enlarged batch
    assert pred.samples.shape == (30, 10, 5)
    # every copy got its own masks
    assert not torch.allclose(pred.samples[0], pred.samples[1])
    calls.clear()
    dk.mc.predict(model, x, samples=7, batch_size=30)
    assert calls == [30, 30, 10]  # 3 copies per pass
    calls.clear()
    dk.mc.predict(model, x, samples=2, batch_size=4)
    assert calls == [4, 4, 2, 4, 4, 2]  # x split into chunks
    # all three ways agree on a model without dropout
    det = nn.Sequential(nn.Linear(10, 5))
    a = dk.mc.predict(det, x, samples=3).mean
    b = dk.mc.predict(det, x, samples=3, batch_size=30).mean
    c = dk.mc.predict(det, x, samples=3, batch_size=3).mean
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, c, atol=1e-6)


def test_enlarged_batch_statistically_matches_loop():
    # Mean predictive probabilities of 400 samples each: the two estimates of
    # the same expectation differ by at most 5 * sqrt(2 var / S) per entry.
    model = _model()
    x = torch.randn(3, 10)
    torch.manual_seed(0)
    loop = dk.mc.predict(model, x, samples=400)
    big = dk.mc.predict(model, x, samples=400, batch_size=1200)
    bound = 5 * torch.sqrt(2 * loop.variance / 400) + 1e-6
    assert ((loop.mean - big.mean).abs() <= bound).all()


def test_shared_mask_layers_refuse_enlarged_batch():
    model = nn.Sequential(dk.WeightDrop(nn.Linear(10, 5), p=0.5))
    with pytest.raises(ValueError, match="WeightDrop"):
        dk.mc.predict(model, torch.randn(4, 10), samples=4, batch_size=16)
    pred = dk.mc.predict(model, torch.randn(4, 10), samples=4)  # the loop is fine
    assert (pred.mutual_information > 0).all()
    # WeightDrop itself is stochastic; the module it wraps stays in eval mode
    seen = []
    model[0].module.register_forward_pre_hook(lambda m, i: seen.append(m.training))
    dk.mc.predict(model, torch.randn(4, 10), samples=2)
    assert seen == [False, False]


@pytest.mark.parametrize(
    "layer, shares",
    [
        (dk.DropPath(0.5, mode="batch"), True),
        (dk.StochasticDepth(0.5, "batch"), True),
        (dk.ResidualDropPath(nn.Linear(10, 10), 0.5, mode="batch"), True),
        (dk.EmbeddingDropout(nn.Embedding(10, 10), 0.5), True),
        (dk.DropPath(0.5), False),
        (dk.ResidualDropPath(nn.Linear(10, 10), 0.5), False),
        (dk.LockedDropout(0.5, batch_first=True), False),
        (nn.Dropout(0.5), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else str(v),
)
def test_enlarged_batch_is_refused_exactly_for_batch_shared_masks(layer, shares):
    # The rule is the layer's own DropoutLayer.shares_mask_across_batch (torch's: False).
    model = nn.Sequential(layer, nn.Flatten())
    tokens = isinstance(layer, dk.EmbeddingDropout)
    x = torch.randint(0, 10, (4, 1)) if tokens else torch.randn(4, 10)
    if shares:
        with pytest.raises(ValueError, match=f"{type(layer).__name__} draws one mask"):
            dk.mc.predict(model, x, samples=4, batch_size=16)
    else:
        assert dk.mc.predict(model, x, samples=4, batch_size=16).mean.shape == (4, 10)
    dk.mc.predict(model, x, samples=2)  # the per-sample loop takes every layer


def test_outputs_and_dropkit_layers():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(10, 16), dk.ConcreteDropout(0.3), nn.Linear(16, 4), nn.LogSoftmax(1)
    ).eval()
    x = torch.randn(6, 10)
    torch.manual_seed(1)
    a = dk.mc.predict(model, x, samples=5, output="log_probs")
    assert torch.allclose(a.mean.sum(1), torch.ones(6), atol=1e-5)
    assert (a.mutual_information > 0).all()
    assert all(not m.training for m in model.modules())

    class Noisy(nn.Module):  # a user's own stochastic layer
        def forward(self, x):
            return x + torch.randn_like(x) if self.training else x

    custom = nn.Sequential(nn.Linear(10, 4), Noisy())
    # Identical passes: the mutual information is 0 up to the rounding of a mean
    # of 3 equal values (a few ulps of the entropy, ~1e-16 in float64 on some CPUs).
    plain = dk.mc.predict(custom, x, 3, return_samples=True)
    assert torch.equal(plain.samples[0], plain.samples[1])
    assert (plain.mutual_information.abs() < 1e-6).all()
    noisy = dk.mc.predict(custom, x, 3, extra_types=(Noisy,))
    assert (noisy.mutual_information > 1e-3).all()


def test_bad_arguments():
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="samples=0"):
        dk.mc.predict(model, torch.randn(2, 3), samples=0)
    with pytest.raises(ValueError, match="batch_size=0"):
        dk.mc.predict(model, torch.randn(2, 3), batch_size=0)
    with pytest.raises(ValueError, match="output='softmax'"):
        dk.mc.predict(model, torch.randn(2, 3), output="softmax")
    with pytest.raises(TypeError, match="Received: str"):
        dk.mc.enable("model")


class _TinyAWD(nn.Module):
    """Embedding dropout, locked dropout and a weight-dropped LSTM: the AWD-LSTM recipe."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = dk.EmbeddingDropout(nn.Embedding(30, 8), 0.1)
        self.lock = dk.LockedDropout(0.3, batch_first=True)
        self.rnn = dk.WeightDrop(nn.LSTM(8, 16, batch_first=True), "weight_hh_l0", 0.3)
        self.head = nn.Linear(16, 4)

    def forward(self, tokens):
        out, _ = self.rnn(self.lock(self.embed(tokens)))
        return self.head(out[:, -1])


def test_predict_on_a_recurrent_model():
    torch.manual_seed(0)
    model = _TinyAWD()
    model.train()
    tokens = torch.randint(0, 30, (5, 7))
    pred = dk.mc.predict(model, tokens, samples=6)
    assert pred.mean.shape == (5, 4) and (pred.mutual_information > 0).all()
    assert all(m.training for m in model.modules())  # train mode given back
    with pytest.raises(ValueError, match="EmbeddingDropout, WeightDrop"):
        dk.mc.predict(model, tokens, samples=6, batch_size=30)


# ---------------------------------------------------- the one dropout rule
def test_is_dropout_layer_covers_every_dropkit_layer_and_torch_dropout():
    import dropkit.layers

    exported = [
        getattr(dropkit.layers, n)
        for n in dropkit.layers.__all__
        if isinstance(getattr(dropkit.layers, n), type)
        and issubclass(getattr(dropkit.layers, n), nn.Module)
    ]
    assert len(exported) >= 15
    for cls in exported:
        assert cls in dk.mc.DROPOUT_TYPES or issubclass(cls, dk.mc.DROPOUT_TYPES), cls
    for module in (nn.Dropout(0.1), nn.Dropout2d(0.1), nn.AlphaDropout(0.1), dk.Dropout(0.1),
                   dk.DropPath(0.1), dk.GaussianDropout(0.1), dk.LockedDropout(0.1)):
        assert dk.mc.is_dropout_layer(module), module
    for module in (nn.Linear(2, 2), nn.BatchNorm1d(2), nn.ReLU(), nn.Sequential()):
        assert not dk.mc.is_dropout_layer(module), module

    class MyDropout(dk.Dropout):  # a user's subclass counts too
        pass

    assert dk.mc.is_dropout_layer(MyDropout(0.1))

    class MyLayer(dk.DropoutLayer):  # a user's layer on dropkit's base counts too
        def forward(self, x):
            return x

    assert dk.mc.is_dropout_layer(MyLayer()) and issubclass(MyLayer, dk.mc.DROPOUT_TYPES)
    assert dk.mc.is_dropout(nn.ReLU(), extra_types=(nn.ReLU,))


def test_restore_modes_puts_every_flag_back_even_on_error():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), dk.Dropout(0.5))
    net.train()
    net[1].eval()
    before = [m.training for m in net.modules()]
    with pytest.raises(RuntimeError), dk.mc.restore_modes(net):
        net.eval()
        net[2].train()
        raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == before
    with dk.mc.restore_modes(net):
        net.eval()
    assert [m.training for m in net.modules()] == before
