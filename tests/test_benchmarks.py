"""The benchmarks stay runnable: each imports and answers --help."""

import importlib

import pytest

MODULES = ["benchmarks.bench_data", "benchmarks.bench_controller", "benchmarks.bench_began",
           "benchmarks.bench_synthetic", "benchmarks.bench_dcgan"]


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_imports_and_has_help(name, capsys):
    module = importlib.import_module(name)
    with pytest.raises(SystemExit) as info:
        module.main(["--help"])
    assert info.value.code == 0
    assert "usage" in capsys.readouterr().out
