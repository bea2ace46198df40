"""DropoutSchedule: early / late / standard dropout over optimizer steps."""

from __future__ import annotations

import inspect
import io
import math
import warnings

import pytest
import torch
from torch import nn

import dropkit as dk
from dropkit import mc


def _mlp(*drops: nn.Module) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(8, 8)]
    for d in drops:
        layers += [d, nn.Linear(8, 8)]
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------
# f(t)
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mode,shape,expected",
    [
        # until = 4; t = 0, 1, 2, 3 (= until - 1), 4 (= until), 5, 100
        ("standard", "linear", [1, 1, 1, 1, 1, 1, 1]),
        ("standard", "constant", [1, 1, 1, 1, 1, 1, 1]),
        ("early", "constant", [1, 1, 1, 1, 0, 0, 0]),
        ("early", "linear", [1, 0.75, 0.5, 0.25, 0, 0, 0]),
        ("late", "constant", [0, 0, 0, 0, 1, 1, 1]),
        ("late", "linear", [0, 0, 0, 0, 1, 1, 1]),  # shape is for the early phase only
    ],
)
def test_factor_by_mode_and_shape(mode, shape, expected):
    schedule = dk.DropoutSchedule(_mlp(dk.Dropout(0.4)), mode, 4, shape=shape)
    steps = [0, 1, 2, 3, 4, 5, 100]
    assert [schedule.factor_at(t) for t in steps] == expected
    # and the layer follows it, step by step
    seen = {}
    for t in range(101):
        if t in steps:
            seen[t] = schedule.rates()["1"]
        schedule.step()
    assert [seen[t] for t in steps] == [0.4 * f for f in expected]


def test_factor_is_set_at_construction():
    late = dk.Dropout(0.3)
    schedule = dk.DropoutSchedule(_mlp(late), "late", until=10)
    assert late.p == 0.0 and schedule.factor == 0.0 and schedule.step_count == 0


def test_until_zero():
    assert dk.DropoutSchedule(_mlp(dk.Dropout(0.3)), "early", 0).factor == 0.0  # never on
    assert dk.DropoutSchedule(_mlp(dk.Dropout(0.3)), "late", 0).factor == 1.0  # always on


def test_step_returns_the_new_factor():
    schedule = dk.DropoutSchedule(_mlp(dk.Dropout(0.3)), "early", 4)
    assert [schedule.step() for _ in range(5)] == [0.75, 0.5, 0.25, 0.0, 0.0]


# --------------------------------------------------------------------------
# which layers, and how
# --------------------------------------------------------------------------
def test_drop_path_depth_schedule_is_kept():
    rates = dk.drop_path_rates(6, 0.3)
    paths = nn.ModuleList(dk.DropPath(r) for r in rates)
    schedule = dk.DropoutSchedule(paths, "early", 10)
    for _ in range(3):
        schedule.step()
    now = [m.p for m in paths]
    assert now[0] == 0.0  # the first block had rate 0 and keeps it
    assert now == pytest.approx([r * 0.7 for r in rates], rel=1e-15, abs=0)
    for i in range(2, 6):  # the ratios between blocks are those of the depth schedule
        assert now[i] / now[1] == pytest.approx(rates[i] / rates[1], rel=1e-12)


TORCH_LAYERS = [nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                nn.FeatureAlphaDropout]


@pytest.mark.parametrize("cls", TORCH_LAYERS, ids=lambda c: c.__name__)
def test_torch_dropout_modules_are_scheduled(cls):
    layer = cls(0.4)
    schedule = dk.DropoutSchedule(_mlp(layer), "early", 4, shape="linear")
    schedule.step()
    assert layer.p == pytest.approx(0.3, abs=1e-15)


FAMILY = [
    lambda p: dk.Dropout(p),
    lambda p: dk.Dropout2d(p),
    lambda p: dk.AlphaDropout(p),
    lambda p: dk.FeatureAlphaDropout(p),
    lambda p: dk.DropPath(p),
    lambda p: dk.StochasticDepth(p, "row"),
    lambda p: dk.DropBlock2d(p, 3),
    lambda p: dk.DropBlock3d(p, 3),
    lambda p: dk.GaussianDropout(p),
    lambda p: dk.LockedDropout(p),
    lambda p: dk.EmbeddingDropout(nn.Embedding(10, 4), p),
    lambda p: dk.WeightDrop(nn.Linear(4, 4), p=p),
]


# layers other engineers may add to the family, where this checkout has them
FAMILY += [
    pytest.param(make, marks=pytest.mark.skipif(not hasattr(dk, name), reason=f"no dk.{name}"))
    for name, make in [
        ("ResidualDropPath", lambda p: dk.ResidualDropPath(nn.Linear(4, 4), p)),
        ("BiasDropoutAdd", lambda p: dk.BiasDropoutAdd(p)),
    ]
]


def _family_id(make) -> str:
    try:
        return type(make(0.1)).__name__
    except AttributeError:
        return "absent"


@pytest.mark.parametrize("make", FAMILY, ids=_family_id)
def test_every_family_layer_is_scheduled(make):
    layer = make(0.4)
    schedule = dk.DropoutSchedule(nn.Sequential(layer), "early", 4)
    schedule.step()
    schedule.step()
    assert layer.p == pytest.approx(0.2, abs=1e-15)
    assert schedule.rates() == {"0": layer.p}


def test_only_concrete_dropout_has_a_computed_rate():
    # The schedule scales every dropout-family layer (mc.DROPOUT_TYPES) whose `p` is a
    # plain attribute; a new layer with a computed rate is skipped and must be documented.
    computed = [
        kind for kind in mc.DROPOUT_TYPES
        if isinstance(inspect.getattr_static(kind, "p", None), property)
    ]
    assert computed == [dk.ConcreteDropout]


def test_layer_with_a_read_only_rate_is_skipped():
    class Fixed(dk.GaussianDropout):
        p = property(lambda self: 0.25)

        def __init__(self) -> None:
            nn.Module.__init__(self)

    plain = dk.Dropout(0.4)
    with pytest.warns(UserWarning, match="'0'.*Fixed: its `p` is a read-only property"):
        schedule = dk.DropoutSchedule(nn.Sequential(Fixed(), plain), "late", 3)
    assert list(schedule.rates()) == ["1"] and plain.p == 0.0


def test_concrete_dropout_is_left_alone_with_a_warning():
    concrete = dk.ConcreteDropout(p_init=0.2)
    plain = dk.Dropout(0.4)
    with pytest.warns(UserWarning, match=r"'0'.*ConcreteDropout.*learned"):
        schedule = dk.DropoutSchedule(nn.Sequential(concrete, plain), "early", 2)
    schedule.step()
    assert plain.p == pytest.approx(0.2)
    assert concrete.p == pytest.approx(0.2)
    assert list(schedule.skipped) == ["0"] and "1" in schedule.rates()


def test_model_with_only_concrete_dropout_is_refused():
    with pytest.raises(ValueError, match="no dropout-family layer.*ConcreteDropout.*learned"):
        dk.DropoutSchedule(nn.Sequential(dk.ConcreteDropout(), nn.Linear(2, 2)), "early", 2)


def test_model_without_dropout_is_refused():
    with pytest.raises(ValueError, match="no dropout-family layer to schedule in the Sequential"):
        dk.DropoutSchedule(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), "early", 2)


def test_model_that_is_a_dropout_and_shared_modules():
    layer = dk.Dropout(0.4)
    assert dk.DropoutSchedule(layer, "late", 1).rates() == {"<model>": 0.0}
    shared = dk.Dropout(0.4)
    schedule = dk.DropoutSchedule(nn.Sequential(shared, nn.ReLU(), shared), "early", 2)
    schedule.step()  # scaled once, not twice
    assert shared.p == pytest.approx(0.2) and list(schedule.rates()) == ["0"]


def test_a_rate_changed_elsewhere_raises():
    block = dk.DropBlock2d(0.2, 3)
    schedule = dk.DropoutSchedule(nn.Sequential(block), "early", 10)
    other = dk.LinearScheduler(block, total_steps=10)  # sets p = 0
    other.step()
    with pytest.raises(RuntimeError, match=r"'0' \(DropBlock2d\) was changed outside"):
        schedule.step()


# --------------------------------------------------------------------------
# resume
# --------------------------------------------------------------------------
def _model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(8, 8), dk.Dropout(0.3), nn.Dropout(0.2),
        *(dk.DropPath(r) for r in dk.drop_path_rates(4, 0.2)),
    )


@pytest.mark.parametrize("mode,shape", [("early", "linear"), ("early", "constant"),
                                        ("late", "constant")])
def test_state_dict_resumes_exactly(mode, shape):
    uninterrupted = dk.DropoutSchedule(_model(), mode, 7, total=12, shape=shape)
    expected = [uninterrupted.rates()]
    for _ in range(12):
        uninterrupted.step()
        expected.append(uninterrupted.rates())

    first = dk.DropoutSchedule(_model(), mode, 7, total=12, shape=shape)
    got = [first.rates()]
    for _ in range(5):
        first.step()
        got.append(first.rates())
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)

    resumed = dk.DropoutSchedule(_model(), mode, 7, total=12, shape=shape)  # a fresh model
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.step_count == 5 and resumed.rates() == got[-1]
    for _ in range(7):
        resumed.step()
        got.append(resumed.rates())
    assert got == expected  # exactly equal floats


def test_state_dict_restores_configuration_like_lr_schedulers():
    saved = dk.DropoutSchedule(_model(), "early", 7, total=12, shape="constant")
    saved.step()
    other = dk.DropoutSchedule(_model(), "late", 3)
    other.load_state_dict(saved.state_dict())
    assert other.state_dict() == saved.state_dict() and other.rates() == saved.rates()


def test_state_of_another_model_is_refused():
    state = dk.DropoutSchedule(_model(), "early", 7).state_dict()
    schedule = dk.DropoutSchedule(_mlp(dk.Dropout(0.1)), "early", 7)
    with pytest.raises(ValueError, match="state of another model"):
        schedule.load_state_dict(state)


def test_state_with_a_bad_value_is_refused():
    schedule = dk.DropoutSchedule(_model(), "early", 7)
    state = schedule.state_dict()
    with pytest.raises(ValueError, match="`step_count`.*Received: step_count=-1"):
        schedule.load_state_dict({**state, "step_count": -1})
    with pytest.raises(ValueError, match="`mode`"):
        schedule.load_state_dict({**state, "mode": "middle"})


# --------------------------------------------------------------------------
# eval mode, and what the layers do with the scaled rate
# --------------------------------------------------------------------------
def test_eval_mode_is_unaffected():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 16), dk.Dropout(0.5), nn.Dropout(0.5), dk.DropPath(0.5),
        dk.GaussianDropout(0.5), dk.LockedDropout(0.5), dk.AlphaDropout(0.5),
    ).eval()
    x = torch.randn(4, 16)
    before = model(x)
    schedule = dk.DropoutSchedule(model, "early", 4)
    for _ in range(6):
        assert torch.equal(model(x), before)
        schedule.step()


def test_classic_dropout_eval_follows_the_current_rate():
    # the one documented exception: y_eval = (1 - p_t) x matches E[y_train] at p_t
    layer = dk.Dropout(0.4, inverted=False).eval()
    schedule = dk.DropoutSchedule(nn.Sequential(layer), "early", 2)
    x = torch.ones(3)
    assert torch.allclose(layer(x), torch.full((3,), 0.6))
    schedule.step()
    assert torch.allclose(layer(x), torch.full((3,), 0.8))
    schedule.step()
    assert torch.equal(layer(x), x)


def test_zero_fraction_matches_the_scaled_rate():
    torch.manual_seed(1234)
    layer = dk.Dropout(0.5)
    schedule = dk.DropoutSchedule(nn.Sequential(layer), "early", 4)
    schedule.step()
    schedule.step()  # f = 0.5: p = 0.25
    n = 400_000
    y = layer(torch.ones(n))
    zeros = (y == 0).double().mean().item()
    p = 0.25
    sigma = math.sqrt(p * (1 - p) / n)  # binomial standard deviation of the fraction
    assert abs(zeros - p) < 5 * sigma, (zeros, p, sigma)
    assert torch.equal(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))  # rescaled by p_t
    schedule.step()
    schedule.step()  # f = 0: the input itself
    x = torch.ones(n)
    assert layer(x) is x


# --------------------------------------------------------------------------
# arguments and reporting
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mode": "Early"}, r"`mode`. Expected one of \('standard', 'early', 'late'\). "
                            r"Received: mode='Early'"),
        ({"shape": "cosine"}, r"`shape`.*Received: shape='cosine'"),
        ({"until": -1}, r"`until`. Expected a non-negative int.*Received: until=-1"),
        ({"until": 2.5}, r"Received: until=2.5"),
        ({"until": True}, r"Received: until=True"),
        ({"until": "10"}, r"Received: until='10'"),
        ({"total": 0}, r"`total`. Expected a positive int.*Received: total=0"),
        ({"total": 5.0}, r"Received: total=5.0"),
        ({"until": 11, "total": 10}, r"until <= total.*Received: until=11, total=10"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"mode": "early", "until": 10, "total": None, "shape": "linear", **kwargs}
    mode, until = args.pop("mode"), args.pop("until")
    with pytest.raises(ValueError, match=match):
        dk.DropoutSchedule(_mlp(dk.Dropout(0.1)), mode, until, **args)


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match="`model`. Expected an nn.Module. Received: list"):
        dk.DropoutSchedule([dk.Dropout(0.1)], "early", 3)


def test_factor_at_checks_the_step():
    with pytest.raises(ValueError, match="Received: step=-1"):
        dk.DropoutSchedule(_mlp(dk.Dropout(0.1)), "early", 3).factor_at(-1)


def test_stepping_past_total_warns_once():
    schedule = dk.DropoutSchedule(_mlp(dk.Dropout(0.1)), "early", 2, total=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            schedule.step()
    with pytest.warns(UserWarning, match="past total=3.*once per optimizer step"):
        schedule.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        schedule.step()  # once
    assert schedule.factor == 0.0


def test_repr_reports_progress():
    schedule = dk.DropoutSchedule(_model(), "early", 4, total=8)
    schedule.step()
    assert repr(schedule) == (
        "DropoutSchedule(mode='early', until=4, total=8, shape='linear', step=1/8, "
        "factor=0.75, layers=6)"
    )


# --------------------------------------------------------------------------
# the documentation's example runs as written
# --------------------------------------------------------------------------
@pytest.mark.slow  # first training steps: JIT of the mask kernels, a few seconds alone
def test_docs_examples_run():
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs" / "schedules.md"
    blocks = docs.read_text().split("```python\n")[1:]
    runnable = [b.split("```")[0] for b in blocks]
    assert len(runnable) >= 2  # the usage and the resume examples
    for code in runnable:
        exec(compile(code, str(docs), "exec"), {})


# --------------------------------------------------------------------------
# torch.compile: how often a scheduled model recompiles (docs/schedules.md)
# --------------------------------------------------------------------------
def _compiled_run(mode: str, shape: str, until: int, steps: int, *drops: nn.Module):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = _mlp(*drops)
    schedule = dk.DropoutSchedule(model, mode, until, shape=shape)
    compiled = torch.compile(model, backend="eager")  # recompiles do not depend on the backend
    x = torch.randn(4, 8)
    frames = []
    for _ in range(steps):
        compiled(x).sum().backward()
        schedule.step()
        frames.append(counters["frames"]["total"])
    limit_hit = any("recompile limit" in reason for reason in counters["unimplemented"])
    return counters["stats"]["unique_graphs"], frames, limit_hit


@pytest.mark.slow  # compilation: several seconds on 2 cores
def test_compile_constant_schedule_recompiles_once():
    graphs, frames, limit_hit = _compiled_run(
        "early", "constant", 5, 12, dk.Dropout(0.1), nn.Dropout(0.2))
    assert not limit_hit
    assert frames[7] == frames[-1]  # nothing new is compiled after the switch at step 5
    assert graphs <= 3


@pytest.mark.slow
def test_compile_linear_schedule_does_not_recompile_every_step():
    # the rate stays symbolic from the module attribute to the ops (docs/schedules.md):
    # one graph for the first rate, one with p dynamic; p == 0 would add a third
    graphs, frames, limit_hit = _compiled_run(
        "early", "linear", 20, 20, dk.Dropout(0.1), dk.DropPath(0.2))
    assert not limit_hit and graphs <= 3
    assert frames[2] == frames[-1]  # nothing new is compiled after the rate became dynamic


@pytest.mark.slow
def test_compile_linear_schedule_of_torch_dropout_after_convert():
    # torch's nn.Dropout takes a Python float into aten::dropout and cannot be fixed
    # from here; dk.convert swaps it for dk.Dropout, which compiles once for all rates
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = dk.convert(_mlp(nn.Dropout(0.1), nn.Dropout(0.2)))
    schedule = dk.DropoutSchedule(model, "early", 20)
    compiled = torch.compile(model, backend="eager")
    x = torch.randn(4, 8)
    for _ in range(20):
        compiled(x).sum().backward()
        schedule.step()
    assert counters["stats"]["unique_graphs"] <= 3
    assert not any("recompile limit" in reason for reason in counters["unimplemented"])


@pytest.mark.slow
def test_compiled_scheduled_model_draws_the_eager_masks():
    # backend="aot_eager" runs the seed draw as torch does (inductor has its own RNG):
    # with the same torch.manual_seed, every step's output equals eager mode's bit for bit
    def build():
        torch.manual_seed(0)
        return _mlp(dk.Dropout(0.3), dk.DropPath(0.2), dk.AlphaDropout(0.1))

    eager, traced = build(), build()
    eager_schedule = dk.DropoutSchedule(eager, "early", 6)
    traced_schedule = dk.DropoutSchedule(traced, "early", 6)
    torch._dynamo.reset()
    compiled = torch.compile(traced, backend="aot_eager")
    x = torch.randn(16, 8)
    for step in range(8):
        torch.manual_seed(100 + step)
        expected = eager(x)
        torch.manual_seed(100 + step)
        assert torch.equal(compiled(x), expected), step
        eager_schedule.step()
        traced_schedule.step()
