"""dropkit run schedule: outputs, the rates the schedule set during training, errors, reading."""

from __future__ import annotations

import json
import random

import pytest
from test_wording import assert_grammar  # the readings' one grammar check

from dropkit.experiments.runner import ConfigError, run_experiment
from dropkit.experiments.schedule_exp import schedule_reading


def test_tiny_run_schedules_the_rates_during_training(tiny, tmp_path):
    options = {
        **tiny,
        "models": ["wide-mlp", "resmlp"],
        "seeds": [0],
        "epochs": 4,
        "until_epochs": 2,
        "patience": 2,
    }
    out = run_experiment("schedule", out=tmp_path / "s", quiet=True, **options)
    for name in ("results.json", "results.csv", "report.html", "curves.png", "schedule.png"):
        assert (out / name).is_file(), name
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert len(runs) == 2 * 4
    by = {(r["model"], r["schedule"]): r for r in runs}
    assert {r["regularizer"] for r in runs if r["model"] == "resmlp"} == {"none", "droppath"}
    for (model, mode), r in by.items():
        rate = r["history"]["drop_rate"]  # the largest layer's rate, mean over each epoch
        assert len(rate) == r["stopped_epoch"] > 2  # patience 2 >= until: past the switch
        # 160 tiny examples, a fifth held out, batch 32: 4 steps per epoch
        assert r["steps_per_epoch"] == 4 and r["until_steps"] == 2 * 4
        assert "last_train_loss" in r and "train_loss" in r
        full = {"early": 0.1}.get(mode, r["p"])
        if mode == "none":
            assert rate == [0.0] * len(rate) and r["final_rates"] == {}
        elif mode == "standard":
            assert rate == pytest.approx([full] * len(rate))
        elif mode == "early":  # linear: mean of 1, 7/8, 6/8, 5/8 then of 4/8 .. 1/8, then off
            assert rate[:2] == pytest.approx([full * 0.8125, full * 0.3125])
            assert rate[2:] == [0.0] * (len(rate) - 2)
            assert set(r["final_rates"].values()) == {0.0}
        else:  # late: off, then the full rate from the switch on
            assert rate[:2] == [0.0, 0.0] and rate[2:] == pytest.approx([full] * (len(rate) - 2))
            assert max(r["final_rates"].values()) == pytest.approx(full)
            # before the switch a late run *is* the run without dropout, to the bit
            none = by[(model, "none")]["history"]
            assert r["history"]["val_loss"][:2] == none["val_loss"][:2]
    assert "Late dropout" in (out / "report.html").read_text()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"modes": "none,cosine"}, "Choose one of: none, standard, early, late"),
        ({"until_epochs": 0}, "--until-epochs"),
        ({"until_epochs": 4, "patience": 5}, "below the budget"),
        ({"early_p": 1.5}, "--early-p"),
        ({"early_shape": "cosine"}, "Choose one of: linear, constant"),
        ({"patience": 1}, "--patience 1 is below --until-epochs 2"),
        ({"regularizers": ["dropout"]}, "--regularizers"),
        ({"depth": 3}, "do not apply"),
    ],
)
def test_bad_options_are_refused_clearly(tiny, tmp_path, options, message):
    config = {**tiny, "epochs": 4, "until_epochs": 2, "patience": 2, **options}
    with pytest.raises(ConfigError, match=message):
        run_experiment("schedule", out=tmp_path / "s", quiet=True, **config)
    assert not (tmp_path / "s" / "results.json").exists()


def _record(model, mode, seed, test, last_loss, *, train=0.99, budget_hit=False, p=0.2):
    return {
        "dataset": "mnist1d",
        "model": model,
        "seed": seed,
        "schedule": mode,
        "regularizer": "none" if mode == "none" else "droppath" if model == "resmlp" else "dropout",
        "p": 0.0 if mode == "none" else 0.1 if mode == "early" else p,
        "until_epochs": 10,
        "epochs": 100,
        "patience": 10,
        "test_acc": test,
        "val_acc": test,
        "train_acc": train,
        "train_loss": last_loss * 2,
        "last_train_loss": last_loss,
        "best_epoch": 1 if budget_hit else 40,
        "stopped_by": "budget" if budget_hit else "patience",
        "history": {"train_acc": [train - 0.1, train]},
    }


@pytest.mark.parametrize("case", range(40))
def test_reading_grammar_over_random_numbers(case):
    rng = random.Random(case)
    records = []
    for model in ("tutorial-mlp", "resmlp"):
        for seed in range(rng.choice([1, 2, 3])):
            for mode in rng.sample(["none", "standard", "early", "late"], rng.choice([1, 3, 4])):
                test = rng.choice([0.6, 0.6004, rng.uniform(0.4, 0.8)])
                loss = rng.choice([0.5, 1e-4, rng.uniform(0.0, 1.0)])
                records.append(
                    _record(
                        model,
                        mode,
                        seed,
                        test,
                        loss,
                        train=rng.choice([0.6, 1.0, test]),
                        budget_hit=rng.random() < 0.2,
                    )
                )
    text = schedule_reading(records)
    assert_grammar(text)


def test_reading_says_what_the_numbers_say():
    records = []
    for seed in range(3):
        e = 0.001 * seed
        records += [  # tutorial-mlp: early lowers the final loss and raises test accuracy
            _record("tutorial-mlp", "none", seed, 0.55 + e, 0.60 + e, train=0.70),
            _record("tutorial-mlp", "early", seed, 0.58 + e, 0.50 + e, train=0.72),
            # wide-mlp overfits; late beats none and standard
            _record("wide-mlp", "none", seed, 0.62 + e, 0.001 + e, train=1.0),
            _record("wide-mlp", "standard", seed, 0.64 + e, 0.01 + e, train=1.0),
            _record("wide-mlp", "late", seed, 0.68 + e, 0.01 + e, train=1.0),
        ]
    tutorial, wide = schedule_reading(records)
    assert (
        "Early dropout reduced underfitting here: a lower final training loss and a "
        "higher test accuracy" in tutorial
    )
    assert "The tutorial-mlp network on mnist1d (3 seeds; budget 100 epochs" in tutorial
    assert (
        "Late dropout helped the overfitting network: +6.0 points of test accuracy "
        "against none (beyond twice the seed noise) and +4.0 points against standard "
        "dropout" in wide
    )
    assert "Highest test accuracy: late p=0.2" in wide
    one_seed = [r for r in records if r["seed"] == 0]
    assert "needs more than one seed" in schedule_reading(one_seed)[0]
