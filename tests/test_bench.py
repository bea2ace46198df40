"""`dropkit bench` runs end to end and writes what it says (structure only: speed
targets are measured by the benchmark itself, never asserted in tests)."""

from __future__ import annotations

import json

import pytest

from dropkit import bench
from dropkit.cli import main


def test_parse_and_format_size():
    assert bench.parse_size("16M") == 16 << 20
    assert bench.parse_size("512k") == 512 << 10
    assert bench.parse_size("1000") == 1000
    assert bench.format_size(16 << 20) == "16M" and bench.format_size(1000) == "1000"


TINY_MLP = {"batch": 4, "tokens": 2, "width": 8, "depth": 3, "max_rate": 0.3}


def test_bench_writes_json_with_every_phase_and_contender(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "DEFAULT_RESIDUAL_MLP", TINY_MLP)
    out = tmp_path / "bench.json"
    assert main(["bench", "--sizes", "4K", "--dtypes", "float32,bfloat16", "--repeat", "2",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "keep_mask" in printed and str(out) in printed
    assert bench.cpu_name() in printed  # the machine is named
    assert "target" not in printed.lower() and "MISSED" not in printed  # measurements only
    result = json.loads(out.read_text())
    assert {row["dtype"] for row in result["rows"]} == {"float32", "bfloat16"}
    for row in result["rows"]:
        assert set(row["phases"]) == set(bench.PHASES)
        for phase in row["phases"].values():
            assert set(phase["median_ms"]) == set(bench.CONTENDERS)
            assert all(v > 0 for v in phase["median_ms"].values())
        # measured, not assumed: the engine keeps nothing, torch keeps a mask
        assert row["saved_bytes_per_element"]["dropkit"] == 0
        assert row["saved_bytes_per_element"]["torch"] >= 1
    assert result["keep_mask"][0]["numel"] == 4096
    small = result["small_forward_backward"]
    assert [(row["dtype"], tuple(row["shape"])) for row in small] == [
        (d, s) for d in ("float32", "bfloat16") for s in bench.DEFAULT_SMALL_SHAPES]
    for row in small:
        assert set(row["median_ms"]) == set(row["min_ms"]) == {"dropkit", "torch"}
        assert all(v > 0 for v in row["median_ms"].values()) and row["speedup_over_torch"] > 0
        assert row["clock"] == "process_time" and row["repeat"] == 2
        assert "x".join(map(str, row["shape"])) in printed
    assert "targets" not in result
    fused = result["bias_dropout_add"]
    assert {(row["dtype"], row["numel"]) for row in fused} == {("float32", 4096),
                                                                ("bfloat16", 4096)}
    for row in fused:
        assert set(row["phases"]) == {"forward", "forward+backward"}
        for phase in row["phases"].values():
            assert set(phase["median_ms"]) == {"fused", "unfused", "torch"}
            assert phase["speedup_over_unfused"] > 0
    residual = result["residual_mlp"]
    assert residual["config"] == TINY_MLP
    assert set(residual["median_ms"]) == {"ResidualDropPath", "DropPath"}
    assert residual["speedup"] > 0 and residual["mean_rate"] == pytest.approx(0.15)


def test_results_go_under_out_and_by_default_to_a_cache_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert bench.default_out_dir() == tmp_path / "cache" / "dropkit" / "bench"
    assert bench.result_path(None) == tmp_path / "cache" / "dropkit" / "bench" / "bench.json"
    assert bench.result_path(tmp_path / "here") == tmp_path / "here" / "bench.json"
    assert bench.result_path("x/run.json") == bench.Path("x/run.json")
    kwargs = dict(sizes=[64], dtypes=["float32"], repeat=1, quiet=True, residual_mlp=None,
                  small_shapes=[(2, 3)])
    assert bench.main(**kwargs) == 0  # out=None: the cache directory
    assert (tmp_path / "cache" / "dropkit" / "bench" / "bench.json").exists()
    assert bench.main(out=tmp_path / "runs", **kwargs) == 0
    assert json.loads((tmp_path / "runs" / "bench.json").read_text())["residual_mlp"] is None
    assert bench.main(out="", **kwargs) == 0  # nothing written
    assert not (tmp_path / "benchmarks").exists()  # never the current directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "runs"]


def test_saved_bytes_per_element_counts_a_saved_mask():
    import torch

    x = torch.randn(1000)
    assert bench.saved_bytes_per_element(lambda t: t * 2.0, x) == 0
    assert bench.saved_bytes_per_element(lambda t: t * t, x) == pytest.approx(4.0)


@pytest.mark.parametrize("args,message", [
    (["--sizes", "foo"], "--sizes: expected element counts"),
    (["--sizes", "0"], "size must be >= 1"),
    (["--dtypes", "int8"], "unknown dtype 'int8'; choose from: float32"),
    (["--p", "1.5"], "expected 0 <= p < 1"),
    (["--repeat", "0"], "expected a positive integer"),
])
def test_bad_arguments_are_refused_before_any_work(args, message, tmp_path, capsys):
    out = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as exc:
        main(["bench", *args, "--out", str(out)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_interleave_rotates_the_order_and_warms_up_once():
    calls = []
    contenders = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    times = bench.interleave(contenders, 4)
    assert calls[:3] == ["a", "b", "c"]  # one untimed warm-up call each
    rounds = [calls[3 + 3 * r: 6 + 3 * r] for r in range(4)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0 for v in times.values() for t in v)


def test_interleave_clock_and_number():
    ticks = iter(range(1000))
    calls = []
    times = bench.interleave({"x": lambda: calls.append(1)}, 2, clock=lambda: next(ticks) * 6.0,
                             number=3)
    assert len(calls) == 1 + 2 * 3
    assert times == {"x": [2.0, 2.0]}  # one clock step (6 s) per timing, over 3 calls
    summary = bench.summary_ms({"x": [0.003, 0.001, 0.002]})
    assert summary == {"median_ms": {"x": pytest.approx(2.0)}, "min_ms": {"x": pytest.approx(1.0)}}
    with pytest.raises(ValueError, match="repeat=0"):
        bench.interleave({"x": lambda: None}, 0)


def test_small_rows_can_be_skipped_and_the_old_names_still_import():
    result = bench.run(sizes=[64], dtypes=["float32"], repeat=1, quiet=True, residual_mlp=None,
                       small_shapes=())
    assert result["small_forward_backward"] == []
    assert "small activations" not in bench.render(result)
    # what the CLI, the experiments and benchmarks/ import from dropkit.bench
    from dropkit.bench import cpu_name, default_out_dir, interleave, main, parse_size, summary_ms

    assert all(callable(f) for f in (cpu_name, default_out_dir, interleave, main, parse_size,
                                     summary_ms))
