"""The readings' grammar holds for any numbers: plurals, ranges, capitals, no "by 0.0 points"."""

from __future__ import annotations

import math
import random
import re

import pytest

from dropkit.experiments import wording
from dropkit.experiments.batchnorm import batchnorm_reading
from dropkit.experiments.convergence import convergence_reading
from dropkit.experiments.droppath_depth import droppath_reading
from dropkit.experiments.mc_averaging import MCAveraging
from dropkit.experiments.recurrent import recurrent_reading
from dropkit.experiments.uncertainty import Uncertainty

# ------------------------------------------------------------------ helpers


def test_plural():
    assert wording.plural(1, "epoch") == "1 epoch"
    assert wording.plural(2, "epoch") == "2 epochs"
    assert wording.plural(0, "seed") == "0 seeds"
    assert wording.plural(1, "pass", "passes") == "1 pass"
    assert wording.plural(3, "pass", "passes") == "3 passes"
    assert wording.plural(1.0, "epoch", digits=1) == "1.0 epochs"


def test_percent_points_and_change():
    assert wording.percent(0.6123) == "61.2%"
    assert wording.percent(math.nan) == "n/a" and wording.percent(None) == "n/a"
    assert wording.points(0.034) == "3.4 points"
    assert wording.points(-0.034, signed=True) == "-3.4 points"
    assert wording.points(-0.0001, signed=True) == "+0.0 points"
    assert wording.change(0.0002, "the gap", "widens", "shrinks") == "leaves the gap unchanged"
    shrinks = wording.change(-0.0123, "the gap", "widens", "shrinks")
    assert shrinks == "shrinks the gap by 1.2 points"
    assert wording.change(0.05, "test accuracy") == "raises test accuracy by 5.0 points"


def test_span_capitalise_listing_sentences():
    assert wording.span("30%", "30%") == "30%"
    assert wording.span("30%", "45%") == "30% to 45%"
    assert wording.capitalise("the small MLP") == "The small MLP"
    assert wording.capitalise("(p = 0.5) with") == "(P = 0.5) with"
    assert wording.listing(["a"]) == "a" and wording.listing(["a", "b", "c"]) == "a, b and c"
    assert wording.sentences("One. Two 0.5 x! Three?") == ["One.", "Two 0.5 x!", "Three?"]


# ------------------------------------------------- readings over many numbers

_PLURAL_NOUNS = ("epochs", "seeds", "passes", "points", "blocks", "networks", "runs")


def assert_grammar(paragraphs: list[str]) -> None:
    assert paragraphs
    for paragraph in paragraphs:
        assert "  " not in paragraph, paragraph
        for noun in _PLURAL_NOUNS:
            # "1 epochs" (an integer 1; "1.0 epochs" reads fine)
            assert not re.search(rf"(?<![\d.])1 {noun}\b", paragraph), paragraph
        for low, high in re.findall(r"(\S+) to (\S+)", paragraph):
            assert low != high, f"{low} to {high}: {paragraph}"
        assert not re.search(r"by [-+]?0\.0 points", paragraph), paragraph
        assert "-0.0" not in paragraph, paragraph
        assert "nan" not in paragraph.replace("dk.", ""), paragraph
        assert "(s)" not in paragraph, paragraph
        assert not re.search(r"recovers -\d", paragraph), paragraph  # "recovers -8%"
        for sentence in wording.sentences(paragraph):
            first = sentence.lstrip("(")[0]
            assert first.isupper() or first.isdigit(), f"{sentence!r} in {paragraph!r}"


def _acc(rng: random.Random, centre: float) -> float:
    # equal values, values that round alike, and spread ones
    return rng.choice([centre, round(centre, 3), min(1.0, max(0.0, centre + rng.gauss(0, 0.05)))])


SEEDS = range(60)


@pytest.mark.parametrize("case", SEEDS)
def test_recurrent_reading_grammar(case):
    rng = random.Random(case)
    seeds = range(rng.choice([1, 1, 2, 3]))
    epochs = rng.choice([1, 2, 15])
    records = []
    centre = rng.uniform(0.5, 0.95)
    for variant in ("none", "naive", "locked", "weightdrop", "between-layers"):
        shift = rng.choice([0.0, 0.0004, -0.135, rng.uniform(-0.2, 0.05)])
        for seed in seeds:
            test = _acc(rng, centre + shift)
            records.append(
                {
                    "variant": variant,
                    "p": 0.0 if variant == "none" else 0.3,
                    "seed": seed,
                    "epochs": epochs,
                    "test_acc": test,
                    "train_acc": min(1.0, test + rng.choice([0.0, 0.02])),
                }
            )
    text = recurrent_reading(records)
    assert_grammar(text)
    if len(seeds) == 1:
        assert "not clearly worse" not in text[0].lower()
        assert "one seed" in text[0]


def test_recurrent_one_seed_says_the_difference_not_a_verdict():
    records = [
        {"variant": v, "p": 0.3, "seed": 0, "epochs": 1, "test_acc": a, "train_acc": 0.9}
        for v, a in (("none", 0.85), ("naive", 0.715), ("locked", 0.85))
    ]
    (text,) = recurrent_reading(records)
    assert "1 seed, 1 epoch." in text
    assert "-13.5 points against none" in text
    assert "no estimate of the seed-to-seed noise" in text
    assert "Not clearly worse" not in text


@pytest.mark.parametrize("case", SEEDS)
def test_droppath_reading_grammar(case):
    rng = random.Random(case)
    depth = rng.choice([2, 3, 12])
    epochs = rng.choice([1, 15])
    patience = rng.choice([None, 1, 20])
    base_converges = rng.random() < 0.5
    records = []
    for seed in range(rng.choice([1, 2])):
        records.append(
            {"schedule": "none", "p": 0.0, "depth": depth, "epochs": epochs, "seed": seed,
             "patience": patience, "test_acc": 0.6, "train_acc": 0.7,
             "loss_ratio": 0.4 if base_converges else 0.8, "converged": base_converges}
        )
        for schedule in ("linear", "uniform"):
            for rate in rng.sample([0.1, 0.5, 0.9], rng.choice([1, 3])):
                ok = rng.random() < 0.5
                records.append(
                    {"schedule": schedule, "p": rate, "depth": depth, "epochs": epochs,
                     "seed": seed, "patience": patience,
                     "test_acc": _acc(rng, 0.6 - rate / 3),
                     "train_acc": rng.choice([0.7, _acc(rng, 0.5)]),
                     "loss_ratio": 0.4 if ok else 0.8, "converged": ok}
                )
    text = droppath_reading(records)
    assert_grammar(text)
    if not base_converges:
        assert "not DropPath's doing" in text[0] or "Every run converged" in text[0]


def test_droppath_does_not_blame_droppath_when_no_droppath_also_failed():
    rows = [
        {"schedule": s, "p": p, "depth": 12, "epochs": 15, "seed": 0, "test_acc": 0.3,
         "train_acc": 0.3, "loss_ratio": 0.8, "converged": False}
        for s, p in (("none", 0.0), ("linear", 0.5), ("linear", 0.9))
    ]
    (text,) = droppath_reading(rows)
    assert "did not converge by the criterion either" in text
    assert "not DropPath's doing" in text
    rows[0].update(loss_ratio=0.3, converged=True)
    (text,) = droppath_reading(rows)
    assert "where the network without DropPath did" in text


def _bn_run(rng, model, variant, p, seed, n_bn):
    r = {"model": model, "variant": variant, "p": p, "seed": seed,
         "test_acc": _acc(rng, 0.9 if variant != "before-bn" else rng.choice([0.9, 0.8])),
         "train_acc": _acc(rng, 0.95), "bn": {f"bn{i}": {} for i in range(1, n_bn + 1)}}
    for i in range(1, n_bn + 1):
        r[f"ratio_bn{i}"] = rng.uniform(0.1, 1.0)
        r[f"eval_over_running_bn{i}"] = rng.uniform(0.1, 1.0)
    if variant == "before-bn+recalibrate":
        r["test_acc_before_recalibrate"] = rng.choice([r["test_acc"], _acc(rng, 0.8)])
    if variant == "before-bn" and rng.random() < 0.5:
        r["sweep"] = {"layer": "body.3", "p": [0.0, 0.5], "measured": [1.0, 0.5],
                      "analytic": [1.0, rng.choice([0.5, 0.49])]}
    return r


@pytest.mark.parametrize("case", SEEDS)
def test_batchnorm_reading_grammar(case):
    rng = random.Random(case)
    variants = ["none", "before-bn", "after-bn", "before-bn+recalibrate"]
    chosen = [v for v in variants if rng.random() < 0.8] or ["before-bn"]
    records = [
        _bn_run(rng, model, v, 0.0 if v == "none" else p, seed, n_bn)
        for model, n_bn in (("mlp-bn", 2), ("cnn1d-bn", 3))
        for seed in range(rng.choice([1, 2]))
        for v in chosen
        for p in ([0.0] if v == "none" else rng.sample([0.2, 0.5], rng.choice([1, 2])))
    ]
    assert_grammar(batchnorm_reading(records))


def _train_row(rng, model, reg, impl, p, seed, epochs):
    reached = rng.random() < 0.8
    e = rng.randint(1, epochs) if reached else None
    return {"kind": "train", "model": model, "regularizer": reg, "impl": impl, "p": p,
            "seed": seed, "epochs": epochs, "epochs_to_target": e,
            "seconds_to_target": None if e is None else e * rng.choice([0.5, 1.0]),
            "seconds_per_epoch": rng.choice([0.5, 1.0]), "test_acc": _acc(rng, 0.6),
            "val_acc": _acc(rng, 0.65), "best_epoch": rng.randint(1, epochs),
            "train_size": 4000, "batch_size": 100}


@pytest.mark.parametrize("case", SEEDS)
def test_convergence_reading_grammar(case):
    rng = random.Random(case)
    epochs = rng.choice([1, 1, 30])
    records = [
        _train_row(rng, "wide-mlp", reg, impl, p, seed, epochs)
        for seed in range(rng.choice([1, 2]))
        for reg, impl, p in (("none", "n/a", 0.0), ("dropout", "torch", 0.5),
                             ("dropout", "dropkit", 0.5))
    ]
    assert_grammar(convergence_reading(records, rng.choice([0.6, 0.3])))


@pytest.mark.parametrize("case", SEEDS)
def test_uncertainty_reading_grammar(case):
    rng = random.Random(case)
    records = []
    for seed in range(rng.choice([1, 3])):
        r = {"model": "wide-mlp", "regularizer": "dropout", "p": 0.5, "seed": seed,
             "mc_samples": rng.choice([1, 30])}
        for prefix in ("det", "mc"):
            r[f"{prefix}_acc"] = _acc(rng, 0.7)
            r[f"{prefix}_nll"] = rng.choice([0.8, rng.uniform(0.5, 1.0)])
            r[f"{prefix}_ece"] = rng.choice([0.05, rng.uniform(0.0, 0.1)])
            r[f"{prefix}_mean_confidence"] = rng.choice([r[f"{prefix}_acc"], 0.8])
            r[f"{prefix}_auroc_entropy"] = rng.choice([math.nan, rng.uniform(0.5, 0.9)])
        r["mc_auroc_mi"] = rng.choice([math.nan, rng.uniform(0.5, 0.9)])
        records.append(r)
    assert_grammar(Uncertainty().reading(records, {}))


@pytest.mark.parametrize("case", SEEDS)
def test_mc_averaging_reading_grammar(case):
    rng = random.Random(case)
    ks = sorted(rng.sample([1, 2, 5, 10, 100], rng.choice([1, 3])))
    records = [
        {"model": "wide-mlp", "regularizer": "dropout", "p": 0.5, "seed": seed,
         "scaling_test_acc": 0.7, "mc_k": ks,
         "mc_test_acc": [_acc(rng, 0.7 - 0.05 / k) for k in ks]}
        for seed in range(rng.choice([1, 3]))
    ]
    assert_grammar(MCAveraging().reading(records, {}))
