"""Speed of the synthetic experiments: iterations/s of all six GANs, beside baselines.

    python -m benchmarks.bench_synthetic                 # 1 thread, 1 and 10 runs, XLA on/off
    python -m benchmarks.bench_synthetic --quick         # 1 run, XLA on, fewer iterations
    python -m benchmarks.bench_synthetic --threads 0     # TensorFlow's own thread count

One iteration updates all six GANs (linear, collider, complete, fc3, fc5, fc10) of every
run once, as ONE compiled call (``GANSet.train_step``), at the reference's sizes (batch
64, z_dim 10, widths 10). For each setting: iterations/s (best wall time over repeats),
run-iterations/s (iterations x runs: what matters for a study of many runs), CPU
milliseconds per iteration and the iterations/s they allow on one free core (both robust
to other jobs on a shared machine, unlike the wall-clock rates), and the first call's
time (tracing and, with XLA, compiling). Also timed: one TVD measurement of all
six (50,000 samples each plus the data's, 10x10x10 histograms).

Baselines, measured in the same run and interleaved with the timings because the
machine may be shared: numpy's 512x512 float32 matmul (GFLOP/s, the machine's
arithmetic) and an empty compiled TensorFlow call (calls/s, the floor of any step).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from synthetic.models import GANSet, draw_data_params, grid_histogram  # noqa: E402

CONFIG = argparse.Namespace(gen_z_dim=10, gen_hidden_size=10, disc_hidden_size=10,
                            lr_gen=0.0005, lr_disc=0.0005, batch_size=64)  # the reference's


def timed(fn, count: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``count`` calls of fn."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def matmul_gflops() -> float:
    a = np.random.default_rng(0).random((512, 512), dtype=np.float32)
    a @ a
    seconds, _ = timed(lambda: a @ a, 20)
    return 2 * 512 ** 3 * 20 / seconds / 1e9


class EmptyCall:
    def __init__(self):
        self.fn = tf.function(lambda: tf.constant(0.0), jit_compile=True)
        self.fn()

    def rate(self) -> float:
        seconds, _ = timed(lambda: self.fn().numpy(), 500)
        return 500 / seconds


def bench(runs: int, xla: bool, iters: int, repeats: int, baselines: dict) -> dict:
    params = [draw_data_params("collider", np.random.default_rng(r)) for r in range(runs)]
    gans = GANSet(CONFIG, params, list(range(runs)), jit_compile=xla)
    start = time.perf_counter()
    gans.train_step()["fc3/d_loss"].numpy()
    first = time.perf_counter() - start
    timed(gans.train_step, 20)
    walls, cpus = [], []
    for _ in range(repeats):  # interleave with the baselines: both see the same load
        baselines["gflops"].append(matmul_gflops())
        baselines["calls"].append(baselines["empty"].rate())
        wall, cpu = timed(lambda: gans.train_step()["fc3/d_loss"].numpy(), iters)
        walls.append(wall / iters)
        cpus.append(cpu / iters)
    x = gans.sample(50_000).numpy()  # trace once, then time a measurement
    start = time.perf_counter()
    x = gans.sample(50_000).numpy()
    for r in range(runs):
        for k in range(x.shape[1]):
            grid_histogram(x[r, k])
    tvd_s = time.perf_counter() - start
    return {"runs": runs, "xla": xla, "it_s": 1 / min(walls), "run_it_s": runs / min(walls),
            "cpu_ms": 1000 * min(cpus), "first_s": first, "tvd_s": tvd_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run, XLA on, 100 iterations")
    parser.add_argument("--iters", type=int, default=300, help="timed iterations per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (the best counts)")
    parser.add_argument("--runs", type=int, nargs="*", default=[1, 10],
                        help="runs side by side (--num_runs) to time")
    parser.add_argument("--threads", type=int, default=1,
                        help="TensorFlow intra/inter-op threads (0: TensorFlow's choice); "
                             "the study runs with 1")
    args = parser.parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    settings = ([(1, True)] if args.quick else
                [(runs, xla) for runs in args.runs for xla in (True, False)])
    iters = 100 if args.quick else args.iters
    baselines = {"gflops": [], "calls": [], "empty": EmptyCall()}
    print(f"six GANs per run, batch 64; {args.threads or 'default'} thread(s); "
          f"best of {args.repeats} x {iters} iterations")
    print(f"{'runs':>4} {'xla':>4} {'it/s':>8} {'run-it/s':>9} {'CPU ms/it':>10} "
          f"{'it/s/core':>10} {'1st call s':>10} {'TVD s':>6}")
    for runs, xla in settings:
        r = bench(runs, xla, iters, args.repeats, baselines)
        print(f"{r['runs']:>4} {'on' if r['xla'] else 'off':>4} {r['it_s']:8.1f} "
              f"{r['run_it_s']:9.1f} {r['cpu_ms']:10.2f} {1000 / r['cpu_ms']:10.1f} "
              f"{r['first_s']:10.1f} "
              f"{r['tvd_s']:6.2f}", flush=True)
    print(f"baseline: numpy 512x512 float32 matmul {max(baselines['gflops']):.1f} GFLOP/s; "
          f"empty compiled TF call {max(baselines['calls']):,.0f} calls/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
