"""Two replicas on one GPU: the GPU is split into two logical devices and each image
model trains a few iterations with ``--num_gpu 2`` through main.py, as a user runs it.

    python -m benchmarks.gpu_check [--memory_mb 3000] [--iterations 30] [--size 64]

What it checks, per model (began, dcgan): the Trainer built a two-replica
MirroredStrategy on the two logical GPUs, training finished with finite losses, and a
checkpoint was written. It prints iterations/s of each (two replicas of --batch_size
each). Without a GPU it prints that it skipped and exits 0; ``benchmarks/gpu_check.sh``
runs it with the device tests and the 64x64 speed benchmarks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("began", "dcgan")


def split_first_gpu(memory_mb: int) -> bool:
    """Split GPU 0 into two logical devices of ``memory_mb`` each; False when there is no
    GPU. Must run before TensorFlow initialises its devices."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return False
    tf.config.set_logical_device_configuration(
        gpus[0], [tf.config.LogicalDeviceConfiguration(memory_limit=memory_mb)] * 2)
    return True


def train_two_replicas(model_type: str, data_dir: Path, log_dir: Path, size: int,
                       iterations: int) -> dict:
    """Train ``model_type`` for ``iterations`` with --num_gpu 2 through main.py."""
    import main as main_module

    argv = ["--dataset", "toyfaces", "--data_dir", str(data_dir), "--log_dir", str(log_dir),
            "--model_type", model_type, "--num_gpu", "2", "--input_scale_size", str(size),
            "--is_pretrain", "True", "--pretrain_iter", "20", "--is_train", "True",
            "--num_iter", str(iterations), "--batch_size", "16", "--log_step", "10",
            "--descrip", f"gpu_check_{model_type}"]
    trainer = main_module.get_trainer(argv)
    replicas = trainer.strategy.num_replicas_in_sync
    devices = list(trainer.strategy.extended.worker_devices)
    start = time.perf_counter()
    main_module.main(trainer)
    seconds = time.perf_counter() - start
    checkpoints = sorted(Path(trainer.model_dir, "checkpoints").glob("ckpt-*.index"))
    ok = replicas == 2 and all("GPU" in d.upper() for d in devices) and bool(checkpoints)
    return {"model": model_type, "replicas": replicas, "devices": devices,
            "checkpoints": len(checkpoints), "seconds": seconds,
            "iterations_per_s": iterations / seconds, "ok": ok}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory_mb", type=int, default=3000,
                        help="Memory of each logical half of the GPU.")
    parser.add_argument("--iterations", type=int, default=30, help="Iterations per model.")
    parser.add_argument("--size", type=int, default=64, help="Image side.")
    args = parser.parse_args(argv)
    if not split_first_gpu(args.memory_mb):
        print("gpu_check: TensorFlow finds no GPU here; two-replica check skipped")
        return 0
    import toy_faces

    failed = []
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        data_dir = Path(tmp) / "data"
        toy_faces.ensure_dataset(data_dir / "toyfaces", n=1000, seed=0, progress=False)
        for model_type in MODELS:
            result = train_two_replicas(model_type, data_dir, Path(tmp) / "logs", args.size,
                                        args.iterations)
            print(f"gpu_check: {model_type}: {result['replicas']} replicas on "
                  f"{', '.join(result['devices'])}, {args.iterations} iterations in "
                  f"{result['seconds']:.1f} s ({result['iterations_per_s']:.2f} it/s, first "
                  f"iterations' tracing included), {result['checkpoints']} checkpoint(s): "
                  + ("ok" if result["ok"] else "FAILED"))
            if not result["ok"]:
                failed.append(model_type)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
