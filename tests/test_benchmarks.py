"""The benchmarks stay runnable: each imports and answers --help; the GPU check skips
cleanly on a machine without a GPU, and the Trainer counts a split GPU's halves."""

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]
HAS_GPU = bool(tf.config.list_physical_devices("GPU"))

MODULES = ["benchmarks.bench_data", "benchmarks.bench_controller", "benchmarks.bench_began",
           "benchmarks.bench_synthetic", "benchmarks.bench_dcgan", "benchmarks.gpu_check"]


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_imports_and_has_help(name, capsys):
    module = importlib.import_module(name)
    with pytest.raises(SystemExit) as info:
        module.main(["--help"])
    assert info.value.code == 0
    assert "usage" in capsys.readouterr().out


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU: gpu_check.sh would really run")
def test_gpu_check_skips_cleanly_without_a_gpu():
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "no GPU" in done.stdout and "skipped" in done.stdout
    from benchmarks import gpu_check

    assert gpu_check.split_first_gpu(100) is False


def test_the_trainer_counts_the_logical_halves_of_a_split_gpu(monkeypatch):
    import trainer

    fake = [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")]
    halves = [tf.config.LogicalDeviceConfiguration(memory_limit=100)] * 2
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: fake if kind == "GPU" else [])
    monkeypatch.setattr(tf.config, "get_logical_device_configuration", lambda device: halves)
    assert trainer.gpu_count() == 2
    monkeypatch.setattr(tf.config, "get_logical_device_configuration", lambda device: None)
    assert trainer.gpu_count() == 1
    with pytest.raises(trainer.UserError, match="asks for 3 GPUs but TensorFlow finds 1"):
        trainer.make_strategy(argparse.Namespace(num_gpu=3, num_cpu_devices=1))
