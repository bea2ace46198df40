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


def test_bench_writes_json_with_every_phase_and_contender(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--sizes", "4K", "--dtypes", "float32,bfloat16", "--repeat", "2",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "keep_mask" in printed and str(out) in printed
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
    assert result["targets"] == {}  # targets are checked only at 16M float32


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
