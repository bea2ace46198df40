"""dropkit.bn: the variance-shift diagnostic against its closed form, and recalibration."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import dropkit as dk
from dropkit import bn


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny networks: a second OpenMP thread only adds waiting on a loaded machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------
# the analytic variance shift
# --------------------------------------------------------------------------
def _analytic(p: float, c: float, v: float) -> tuple[float, float, float]:
    """Train variance, eval variance and their ratio for N(c, v) through inverted dropout."""
    q = 1.0 - p
    train = (c * c + v) / q - c * c
    return train, v, q * v / (c * c + v - q * c * c)


def _var_estimate_sd(raw: list[float], n: int) -> float:
    """Standard deviation of the sample variance of n iid draws with raw moments raw[1..4].

    Var(s^2) = (mu4 - sigma^4) / n + O(1/n^2), mu4 the fourth central moment.
    """
    m1, m2, m3, m4 = raw[1], raw[2], raw[3], raw[4]
    sigma2 = m2 - m1**2
    mu4 = m4 - 4 * m1 * m3 + 6 * m1**2 * m2 - 3 * m1**4
    return math.sqrt((mu4 - sigma2**2) / n)


def _tolerances(p: float, c: float, v: float, n: int, channels: int) -> tuple[float, float]:
    """Relative 1-sigma errors of the channel-averaged train and eval variances.

    x ~ N(c, v): E[x^k] for k = 1..4. After inverted dropout y = m x / q with
    m ~ Bernoulli(q) independent of x: E[y^k] = q E[x^k] / q^k = E[x^k] / q^(k-1).
    The C channels are independent, so averaging them divides the sd by sqrt(C).
    """
    q = 1.0 - p
    ex = [1.0, c, c * c + v, c**3 + 3 * c * v, c**4 + 6 * c * c * v + 3 * v * v]
    ey = [ex[k] / q ** max(k - 1, 0) for k in range(5)]
    train, evalv, _ = _analytic(p, c, v)
    sd_train = _var_estimate_sd(ey, n) / math.sqrt(channels) / train
    sd_eval = _var_estimate_sd(ex, n) / math.sqrt(channels) / evalv
    return sd_train, sd_eval


@pytest.mark.parametrize(
    "p, c, v",
    [
        (0.1, 0.0, 1.0),
        (0.5, 0.0, 1.0),
        (0.5, 1.0, 1.0),
        (0.2, 2.0, 0.5),
        (0.7, 0.5, 2.0),
        (0.5, 3.0, 1.0),
    ],
)
@pytest.mark.parametrize("layer", ["torch", "dropkit"])
def test_variance_shift_matches_the_analytic_ratio(p, c, v, layer):
    # Dropout straight into BatchNorm: the BN input is y = dropout(x), x ~ N(c, v).
    torch.manual_seed(1234)
    n, channels = 4096, 32
    drop = nn.Dropout(p) if layer == "torch" else dk.Dropout(p)
    model = nn.Sequential(drop, nn.BatchNorm1d(channels))
    x = c + math.sqrt(v) * torch.randn(n, channels)
    batches = list(torch.split(x, 512))  # 8 batches: the pooled variance spans batches

    shift = bn.variance_shift(model, batches)
    assert list(shift) == ["1"]
    rec = shift["1"]
    want_train, want_eval, want_ratio = _analytic(p, c, v)
    sd_train, sd_eval = _tolerances(p, c, v, n, channels)
    # 5 sigma on each variance (the 12 cases x 2 variances then fail by chance with
    # probability ~1e-5); the ratio's relative error is at most the sum of the two.
    assert rec.train_var == pytest.approx(want_train, rel=5 * sd_train)
    assert rec.eval_var == pytest.approx(want_eval, rel=5 * sd_eval)
    assert rec.ratio == pytest.approx(want_ratio, rel=5 * (sd_train + sd_eval))
    assert rec.ratio == pytest.approx(rec.eval_var / rec.train_var)
    assert rec.running_var == pytest.approx(1.0)  # a fresh layer: running_var = ones
    assert rec["ratio"] == rec.ratio and rec.as_dict()["train_var"] == rec.train_var


def test_variance_shift_is_one_without_dropout_before_bn():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4)
    )
    x = torch.randn(2000, 8)
    rec = bn.variance_shift(model, x)["1"]
    assert rec.ratio == pytest.approx(1.0, abs=1e-12)


def _model_with_stats() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(10, 32),
        nn.Dropout(0.4),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Linear(32, 32),
        dk.Dropout(0.3),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Linear(32, 3),
    )
    x = torch.randn(600, 10) * 2 + 1
    y = torch.randint(0, 3, (600,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for xb, yb in zip(torch.split(x, 50), torch.split(y, 50), strict=True):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
    return model, x


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_variance_shift_leaves_the_model_untouched(mode):
    model, x = _model_with_stats()
    if mode == "eval":
        model.eval()
    elif mode == "mixed":
        model.train()
        model[1].eval()  # an unusual mix must come back as it was too
        model[6].eval()
    modes = [m.training for m in model.modules()]
    before = _snapshot(model)
    assert any(k.endswith("num_batches_tracked") for k in before)

    shift = bn.variance_shift(model, [(xb, None) for xb in torch.split(x, 100)])

    assert set(shift) == {"2", "6"}
    assert [m.training for m in model.modules()] == modes
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    for rec in shift.values():
        assert rec.ratio < 1.0  # dropout feeds both BN layers


def test_variance_shift_reports_the_running_var_as_found():
    model, x = _model_with_stats()
    shift = bn.variance_shift(model, x)
    assert shift["2"].running_var == pytest.approx(float(model[2].running_var.mean()))
    assert shift["6"].running_var == pytest.approx(float(model[6].running_var.mean()))


def _eval_input_stats(model: nn.Module, x: torch.Tensor, index: int):
    seen = []
    h = model[index].register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach()))
    model.eval()
    with torch.no_grad():
        for xb in torch.split(x, 100):
            model(xb)
    h.remove()
    inputs = torch.cat(seen).double()
    return inputs.mean(0), inputs.var(0, unbiased=True)


@pytest.mark.parametrize("as_", ["tensor", "tensors", "tuples", "loader"])
def test_recalibrate_matches_the_eval_mode_input_statistics(as_):
    model, x = _model_with_stats()
    model.train()
    if as_ == "tensor":
        data = x
    elif as_ == "tensors":
        data = list(torch.split(x, 100))
    elif as_ == "tuples":
        data = [(xb, torch.zeros(len(xb))) for xb in torch.split(x, 100)]
    else:
        ds = torch.utils.data.TensorDataset(x, torch.zeros(len(x)))
        data = torch.utils.data.DataLoader(ds, batch_size=100)
    before = bn.variance_shift(model, x)
    weights = {k: v.clone() for k, v in model.named_parameters()}

    out = bn.recalibrate(model, data)

    assert out is model
    assert model.training and all(m.training for m in model.modules())  # mode restored
    for k, v in model.named_parameters():
        assert torch.equal(v, weights[k])
    for index in (2, 6):
        mean, var = _eval_input_stats(model, x, index)
        layer = model[index]
        # an exact cumulative average (float32 storage), not a momentum update
        torch.testing.assert_close(layer.running_var.double(), var, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
    batches = 1 if as_ == "tensor" else 6
    assert int(model[2].num_batches_tracked) == batches
    after = bn.variance_shift(model, x)
    for name in ("2", "6"):
        # the running variance now equals the eval-mode variance (channel means)
        assert after[name].running_var == pytest.approx(after[name].eval_var, rel=1e-5)
        assert before[name].running_var != pytest.approx(before[name].eval_var, rel=1e-3)


def test_recalibrate_conv_batchnorm_and_batch_size():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(1, 8, 5, padding=2),
        dk.Dropout1d(0.3),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 40, 10),
    )
    x = torch.randn(256, 1, 40)
    model.train()
    model(x)
    bn.recalibrate(model, x, batch_size=64)
    assert model.training  # restored as found
    seen = []
    h = model[2].register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    model.eval()
    with torch.no_grad():
        model(x)
    h.remove()
    inp = seen[0].transpose(0, 1).reshape(8, -1).double()
    torch.testing.assert_close(model[2].running_var.double(), inp.var(1), rtol=1e-5, atol=1e-6)
    assert int(model[2].num_batches_tracked) == 4
    shift = bn.variance_shift(model, x, batch_size=64)
    assert shift["2"].running_var == pytest.approx(shift["2"].eval_var, rel=1e-5)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="no BatchNorm"):
        bn.variance_shift(nn.Linear(3, 3), torch.randn(4, 3))
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    with pytest.raises(TypeError, match="iterable of batches"):
        bn.variance_shift(model, 3)
    with pytest.raises(TypeError, match="each batch"):
        bn.recalibrate(model, [("x", 1)])
    with pytest.raises(ValueError, match="empty"):
        bn.variance_shift(model, [])


def test_exported_from_the_package():
    assert dk.bn.variance_shift is bn.variance_shift
    assert dk.bn.recalibrate is bn.recalibrate


# --------------------------------------------------------------------------
# the formula as a function, and the prediction beside the measurement
# --------------------------------------------------------------------------
@pytest.mark.parametrize("p, c, v", [(0.0, 1.0, 1.0), (0.1, 0.0, 1.0), (0.5, 1.0, 1.0),
                                     (0.7, 0.5, 2.0)])
def test_expected_ratio_is_the_closed_form(p, c, v):
    # one channel: q v / (c^2 + v - q c^2)
    assert bn.expected_ratio(torch.tensor([c]), torch.tensor([v]), p) == pytest.approx(
        _analytic(p, c, v)[2]
    )


def test_expected_ratio_averages_the_variances_over_channels():
    c, v = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])
    q = 0.5
    # mean v over mean((c^2 + v)/q - c^2), as variance_shift averages: not the mean ratio
    want = 1.0 / ((1 / q + (2 / q - 1)) / 2)
    assert bn.expected_ratio(c, v, 0.5) == pytest.approx(want)
    assert bn.expected_ratio(0.0, 1.0, 0.5) == pytest.approx(0.5)  # scalars too
    with pytest.raises(ValueError, match="argument `p`.*Received: p=1.0"):
        bn.expected_ratio(c, v, 1.0)


def _fed_model() -> nn.Module:
    # the first BN fed by torch's dropout, a nested one by dropkit's channel dropout,
    # a third by nothing (a ReLU before it)
    return nn.Sequential(
        nn.Linear(6, 16), nn.Dropout(0.3), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Sequential(nn.Unflatten(1, (4, 4)), dk.Dropout1d(0.5), nn.BatchNorm1d(4),
                      nn.Flatten()),
        nn.ReLU(), nn.BatchNorm1d(16),
    )


def test_dropouts_feeding_finds_the_layer_right_before_each_bn():
    model = _fed_model()
    feeding = bn.dropouts_feeding(model)
    assert list(feeding) == ["2", "4.2"]
    assert feeding["2"] is model[1] and feeding["4.2"] is model[4][1]
    # AlphaDropout keeps mean and variance: the formula does not describe it
    assert bn.dropouts_feeding(nn.Sequential(nn.AlphaDropout(0.5), nn.BatchNorm1d(3))) == {}


def test_predicted_shift_beside_the_measured_one():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), dk.Dropout(0.4), nn.BatchNorm1d(64), nn.ReLU(),
                          nn.Linear(64, 4), nn.BatchNorm1d(4))
    x = torch.randn(4096, 8) * 2 + 1
    before = _snapshot(model)
    model.train()
    predicted = bn.predicted_shift(model, x, batch_size=512)
    assert list(predicted) == ["2"]  # only the BN fed by dropout has a closed form
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the prediction from the dropout input's moments
    h = model[0](x).detach().double()
    want = bn.expected_ratio(h.mean(0), h.var(0), 0.4)
    assert predicted["2"] == pytest.approx(want, rel=1e-9)
    measured = bn.variance_shift(model, x, batch_size=512)["2"].ratio
    assert measured == pytest.approx(predicted["2"], rel=0.05)
    assert bn.predicted_shift(nn.Sequential(nn.BatchNorm1d(3)), torch.randn(8, 3)) == {}


def test_sweep_variance_shift_follows_the_formula_and_restores_the_rates():
    torch.manual_seed(0)
    model = _fed_model()
    x = torch.randn(4096, 6) + 0.5
    rates = [0.0, 0.2, 0.5, 0.8]
    sweep = bn.sweep_variance_shift(model, x, rates, batch_size=512)
    assert sweep.layer == "2" and sweep.rates == rates
    assert sweep.measured[0] == pytest.approx(1.0)
    for rate, got, want in zip(rates, sweep.measured, sweep.predicted, strict=True):
        assert got == pytest.approx(want, abs=0.03), rate
    assert sweep.predicted[1] > sweep.predicted[2] > sweep.predicted[3]
    assert model[1].p == 0.3 and model[4][1].p == 0.5  # put back
    # a later layer: measured, but its shift compounds the earlier one's (no closed form)
    later = bn.sweep_variance_shift(model, x, [0.5], layer="4.2", batch_size=512)
    assert later.layer == "4.2" and later.measured[0] < later.predicted[0]
    # channel dropout straight into BN: the formula holds there too
    channel = nn.Sequential(nn.Unflatten(1, (4, 8)), dk.Dropout1d(0.5), nn.BatchNorm1d(4))
    sweep = bn.sweep_variance_shift(channel, torch.randn(4096, 32) + 1.0, [0.5], batch_size=512)
    assert sweep.layer == "2"
    assert sweep.measured[0] == pytest.approx(sweep.predicted[0], abs=0.03)


def test_sweep_refuses_what_it_cannot_measure():
    model = _fed_model()
    x = torch.randn(64, 6)
    with pytest.raises(ValueError, match="`layer`: '6' is not .* Choose one of: 2, 4.2"):
        bn.sweep_variance_shift(model, x, [0.5], layer="6")
    with pytest.raises(ValueError, match="`rates`.*Received: 1.0"):
        bn.sweep_variance_shift(model, x, [0.5, 1.0])
    assert model[1].p == 0.3
    with pytest.raises(ValueError, match="fed directly by a dropout layer"):
        bn.sweep_variance_shift(nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6)), x, [0.5])


def test_eval_over_running():
    rec = bn.VarianceShift(train_var=2.0, eval_var=1.0, running_var=4.0, ratio=0.5)
    assert rec.eval_over_running == 0.25
    assert "eval_over_running" not in rec.as_dict()  # the record's fields as before
    assert math.isnan(bn.VarianceShift(2.0, 1.0, None, 0.5).eval_over_running)


def test_new_tools_exported():
    for name in ("expected_ratio", "dropouts_feeding", "predicted_shift", "sweep_variance_shift",
                 "ShiftSweep"):
        assert name in bn.__all__ and getattr(dk.bn, name) is getattr(bn, name)
