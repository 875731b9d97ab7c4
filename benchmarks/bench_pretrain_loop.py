"""The whole pretraining loop against its bare training step, measured in the same run.

    python -m benchmarks.bench_pretrain_loop [--iters 10000] [--rounds 1]

On big_causal_graph at the default flags (n_critic 20, batch 16) and a CelebA-size label
table (202,599 rows drawn from the toy faces' causal model), with --log_step 100 as in
the reference: summaries every 100 iterations, and every 1,000 a TVD of 500,000 samples,
a crosstab report and a controller checkpoint. Each round times, in this order:

1. the bare step as the loop runs it: ``train_iterations`` on label blocks already in
   memory, 100 iterations per call, nothing else;
2. ``pretrain_loop`` end to end (data pipeline, summaries, TVD checks, crosstabs,
   checkpoints, progress accounting) for --iters iterations (10,000: --pretrain_iter's
   default, so 10 TVD checks, the last one at the end where nothing can overlap it);
3. the bare step again (1 and 3 bracket the loop, so a change of machine load shows);
4. the bare step one iteration per call (as benchmarks/bench_controller.py times it).

Target: the loop runs at >= 90% of the bare step's rate (the mean of 1 and 3). CPU
seconds per iteration are printed too: on a shared machine they vary less than wall time
(the TVD checks' sampling runs on a second thread, so it costs CPU time but, with a core
to spare, little wall time). Everything is compiled and traced by a short warm-up loop
before the timings, as the bare step is.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import causal_controller.config as cc_flags  # noqa: E402
import data_loader  # noqa: E402
from causal_controller.CausalController import CausalController  # noqa: E402
from causal_controller.pretrain import (  # noqa: E402
    ControllerPretrainer,
    chunk_size,
    pretrain_loop,
)
from causal_graph import get_causal_graph  # noqa: E402
from toy_faces import default_scm  # noqa: E402

CELEBA_ROWS = 202_599


def timed(fn):
    """(wall seconds, CPU seconds of this process) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=10000,
                        help="iterations of the loop per round (a multiple of 10 * log_step "
                             "keeps every TVD check inside the loop's regular cadence)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the four timings")
    parser.add_argument("--log_step", type=int, default=100, help="the loop's --log_step")
    parser.add_argument("--rows", type=int, default=CELEBA_ROWS, help="label table rows")
    args = parser.parse_args(argv)

    cfg = cc_flags.get_config([])[0]
    cfg.min_tvd = 0.0  # never stop early: every round runs all its iterations
    graph = get_causal_graph("big_causal_graph")
    names = [node for node, _ in graph]
    frame = default_scm().sample(args.rows, seed=0)[names]
    cc = CausalController(graph, cfg, seed=0)
    pretrainer = ControllerPretrainer(cc, cfg, seed=0)
    k, m = cfg.n_critic + 1, chunk_size(args.log_step)
    rows = frame.to_numpy(np.float32)
    rng = np.random.default_rng(0)
    chunks = [tf.constant(rows[rng.integers(0, len(rows), m * k * cfg.batch_size)]
                          .reshape(m, k, cfg.batch_size, len(names))) for _ in range(4)]
    singles = [chunk[0] for chunk in chunks]
    stream = data_loader.label_dataset(frame, names, cfg.batch_size, seed=0)
    scratch = tempfile.mkdtemp(prefix="bench_pretrain_loop-")
    writer = tf.summary.create_file_writer(os.path.join(scratch, "summaries"))

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores visible; {args.rows:,} "
          f"label rows, n_critic {cfg.n_critic}, batch {cfg.batch_size}, log_step "
          f"{args.log_step} ({m} iterations per compiled call)")
    t0 = time.perf_counter()
    pretrainer.train_iteration(singles[0])
    pretrainer.train_iterations(chunks[0], m)
    cc.step.assign(0)
    print(f"compiling the steps: {time.perf_counter() - t0:.1f} s "
          f"(and outputs written to {scratch})\n")

    def bare_chunked(n):
        for i in range(n // m):
            out = pretrainer.train_iterations(chunks[i % 4], m)
        out["nonfinite"].numpy()

    def bare_single(n):
        for i in range(n):
            out = pretrainer.train_iteration(singles[i % 4])
        out["nonfinite"].numpy()

    def loop(n):
        cfg.pretrain_iter = int(cc.step.numpy()) + n
        pretrain_loop(cc, pretrainer, stream, frame, cfg, scratch, summary_writer=writer,
                      log_step=args.log_step, progress=False)

    loop(10 * args.log_step)  # warm-up: one TVD check, checkpoint, crosstab, summaries
    bare_n = max(args.iters // 2 // m * m, m)
    totals = {"bare": [0.0, 0.0, 0], "loop": [0.0, 0.0, 0], "single": [0.0, 0.0, 0]}
    print(f"{'round':<6} {'what':<44} {'iterations':>10} {'it/s':>8} {'CPU ms/it':>10}")
    for r in range(1, args.rounds + 1):
        for label, key, fn, n in (
                ("bare step, chunked (before the loop)", "bare", bare_chunked, bare_n),
                ("pretrain_loop end to end", "loop", loop, args.iters),
                ("bare step, chunked (after the loop)", "bare", bare_chunked, bare_n),
                ("bare step, one iteration per call", "single", bare_single,
                 min(bare_n, 1500))):
            wall, cpu = timed(lambda fn=fn, n=n: fn(n))
            for i, value in enumerate((wall, cpu, n)):
                totals[key][i] += value
            print(f"{r:<6} {label:<44} {n:>10} {n / wall:>8.1f} {1000 * cpu / n:>10.2f}")

    def rate(key):
        wall, cpu, n = totals[key]
        return n / wall, n / cpu

    (bare, bare_cpu), (whole, whole_cpu), (single, _) = rate("bare"), rate("loop"), \
        rate("single")
    share, share_cpu = whole / bare, whole_cpu / bare_cpu
    print(f"\nloop / bare step (wall time): {whole:.1f} / {bare:.1f} it/s = {share:.1%}   "
          f"target >= 90%{'  OK' if share >= 0.9 else '  MISSED'}")
    print(f"loop / bare step (CPU time):  {share_cpu:.1%}")
    print(f"loop / bare step one iteration per call: {whole / single:.1%} "
          f"({single:.1f} it/s)")


if __name__ == "__main__":
    main()
