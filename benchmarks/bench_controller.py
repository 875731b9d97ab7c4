"""Speed of the causal controller, each figure beside its target.

    python -m benchmarks.bench_controller [--checkpoint <controller checkpoint>] [--iters 300]

Measures, on big_causal_graph at the default flags: pretraining iterations/s (compiled
with XLA, and the same step without XLA), sampling 500,000 labels, the TVD of 500,000
samples next to a pandas merge-and-count TVD (the reference's method) timed in the same
run, rejection sampling of Bald=1 (about 2% acceptance), and a numpy matmul GFLOP/s
baseline so numbers from different machines can be compared.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

import causal_controller.config as cc_flags  # noqa: E402
from causal_controller.CausalController import CausalController  # noqa: E402
from causal_controller.pretrain import ControllerPretrainer, load_controller  # noqa: E402
from causal_graph import get_causal_graph  # noqa: E402
from figure_scripts.pairwise import calc_tvd  # noqa: E402
from toy_faces import default_scm  # noqa: E402


def best_of(fn, repeats: int = 5) -> float:
    """Fastest wall time of fn() over repeats (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def pandas_tvd(samples: np.ndarray, attr: pd.DataFrame) -> float:
    """TVD by the reference's method: number the distinct label vectors with a table,
    merge every sample row and every data row onto that table to get its number, count
    the numbers. (The table here holds the vectors of both sides, so unlike the reference
    it keeps generated vectors absent from the data: the same quantity as calc_tvd.)"""
    names = list(attr.columns)
    gen = pd.DataFrame(np.round(samples).astype(np.int64), columns=names)
    table = pd.concat([attr, gen]).drop_duplicates().reset_index(drop=True)
    table["ID"] = np.arange(len(table))
    real_pdf = pd.merge(attr, table, on=names)["ID"].value_counts(normalize=True)
    gen_pdf = pd.merge(gen, table, on=names, how="left")["ID"].value_counts(normalize=True)
    return float(0.5 * real_pdf.subtract(gen_pdf, fill_value=0).abs().sum())


def matmul_gflops() -> float:
    a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    seconds = best_of(lambda: a @ a, 5)
    return 2 * 1024 ** 3 / seconds / 1e9


def line(label: str, value: str, target: str, ok: bool | None = None) -> None:
    mark = "" if ok is None else ("  OK" if ok else "  MISSED")
    print(f"{label:<46} {value:>16}   target {target}{mark}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="", help="a trained controller to time "
                        "conditioning on (default: Bald's bias is set for ~2% acceptance)")
    parser.add_argument("--iters", type=int, default=300, help="pretraining iterations timed")
    args = parser.parse_args(argv)
    cfg = cc_flags.get_config([])[0]
    graph = get_causal_graph("big_causal_graph")
    names = [n for n, _ in graph]
    frame = default_scm().sample(20_000, seed=0)[[node for node, _ in graph]]

    print(f"numpy 1024x1024 float32 matmul: {matmul_gflops():.1f} GFLOP/s (baseline of this "
          "machine, same run)")
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores visible\n")

    # pretraining speed at the default flags
    rng = np.random.default_rng(0)
    rows = frame[names].to_numpy(np.float32)
    blocks = [tf.constant(rows[rng.integers(0, len(rows), (cfg.n_critic + 1) * cfg.batch_size)]
                          .reshape(cfg.n_critic + 1, cfg.batch_size, len(names)))
              for _ in range(16)]
    for jit in (True, False):
        cc = CausalController(graph, cfg, seed=0)
        pt = ControllerPretrainer(cc, cfg, seed=0, jit_compile=jit)
        t0 = time.perf_counter()
        pt.train_iteration(blocks[0])
        compile_s = time.perf_counter() - t0
        n = args.iters if jit else max(args.iters // 3, 50)
        t0 = time.perf_counter()
        for i in range(n):
            out = pt.train_iteration(blocks[i % 16])
        float(out["c_loss"])
        rate = n / (time.perf_counter() - t0)
        label = "pretraining it/s (XLA, one call per iteration)" if jit else \
            "pretraining it/s (same step without XLA)"
        line(label, f"{rate:.1f} it/s", ">= 100" if jit else "(comparison)",
             rate >= 100 if jit else None)
        print(f"{'':<46} {'':>16}   (first call, tracing + compiling: {compile_s:.1f} s)")

    cc = CausalController(graph, cfg, seed=0)
    if args.checkpoint:
        load_controller(cc, args.checkpoint)
    seconds = best_of(lambda: cc.sample(500_000)[0].numpy(), 3)
    line("sample 500,000 labels", f"{seconds:.3f} s", "<= 1 s", seconds <= 1.0)

    labels = cc.sample(500_000, seed=1)[0].numpy()
    label_dict = {n: labels[:, i:i + 1] for i, n in enumerate(names)}
    attr = frame[names]
    fast = best_of(lambda: calc_tvd(label_dict, attr), 5)
    slow = best_of(lambda: pandas_tvd(labels, attr), 2)
    assert abs(calc_tvd(label_dict, attr) - pandas_tvd(labels, attr)) < 1e-9
    line("TVD of 500,000 samples (bincount)", f"{fast * 1000:.1f} ms", "<= 20 ms", fast <= 0.02)
    line("TVD of 500,000 samples (pandas merge, same run)", f"{slow * 1000:.1f} ms",
         ">= 10x slower", slow / fast >= 10)
    print(f"{'':<46} {slow / fast:>14.1f} x")

    if not args.checkpoint:  # make Bald=1 about 2% likely, as in the data
        logits = cc.sample(200_000, seed=2)[1].numpy()[:, names.index("Bald")]
        cc.Bald.biases[-1].assign(cc.Bald.biases[-1] - np.quantile(logits, 0.98))
    acceptance = float(np.mean(cc.sample(200_000, seed=3)[0].numpy()[:, names.index("Bald")]
                               > 0.5))
    n_wanted = 50_000
    seconds = best_of(lambda: cc.sample_label(cond_dict={"Bald": 1}, N=n_wanted), 3)
    rate = n_wanted / seconds
    line(f"condition Bald=1 (acceptance {acceptance:.1%})", f"{rate:,.0f} /s", ">= 20,000 /s",
         rate >= 20_000)


if __name__ == "__main__":
    main()
