"""Speed of CausalGAN training against this machine's own convolution rate.

    python -m benchmarks.bench_dcgan                 # 64x64 (reference) and 32x32 (demo)
    python -m benchmarks.bench_dcgan --quick         # demo size only, fewer repeats

A CausalGAN iteration is not one update: every 3 iterations run 5 generator updates and
one update of all five networks (ORIGINAL.md 5.3). So the unit measured is that
3-iteration cycle (one 'g_all' iteration and two 'g_g' ones), reported per iteration.
FLOPs are counted from the compiled graphs of the G update and of the all-networks update
(every Conv2D, Conv2DBackpropInput/Filter and MatMul that the losses and gradients need,
as benchmarks/bench_began.py counts them), so they are what an iteration really computes
(Adam's elementwise updates and the batch-norm/minibatch arithmetic are not counted).
The baseline, measured in the same run and interleaved with the timings, is
bench_began's: a large 3x3 convolution, forward alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_began import ConvBaseline, best_time, graph_flops  # noqa: E402
from causal_dcgan.CausalGAN import CausalGAN, label_values  # noqa: E402

SIZES = {"reference": (64, 64, 64), "demo": (32, 32, 64)}  # image side = gf_dim, df_dim, batch
N_LABELS = 9
Z_DIM = 100


def dcgan_config(size: int, df: int, batch: int):
    """The dcgan flags' defaults (ORIGINAL 2.4) at this size."""
    return argparse.Namespace(
        batch_size=batch, label_specific_noise=False, fakeLabels_distribution="real_joint",
        label_type="continuous", round_fake_labels=True, type_input_to_generator="logits",
        df_dim=df, gf_dim=size, c_dim=3, z_dim=Z_DIM, loss_function=1, critic_hidden_size=10,
        reconstr_loss=False, stab_proj=False, n_stab_proj=256, num_iter=1, learning_rate=0.0002,
        beta1=0.5, off_label_losses=False, pretrain_LabelerR=False,
        pretrain_LabelerR_no_of_iters=15000, tau=3000.0, is_train=True, log_step=100)


def bench_size(name, size, df, batch, xla: bool, baseline: ConvBaseline, repeats: int):
    cfg = dcgan_config(size, df, batch)
    model = CausalGAN(cfg, [f"l{i}" for i in range(N_LABELS)], size, jit_compile=xla, seed=0)
    rng = np.random.default_rng(0)
    real = tf.constant(rng.integers(0, 2, [batch, N_LABELS]), tf.float32)
    fake = tf.constant(rng.integers(0, 2, [batch, N_LABELS]), tf.float32)
    z = tf.constant(rng.uniform(-1, 1, [batch, Z_DIM]), tf.float32)
    data = (tf.constant(rng.uniform(0, 255, [batch, size, size, 3]), tf.float32), real, fake, z)
    values = label_values(fake)
    k_t = model.k_t.read_value()
    g_flops = graph_flops(model._g_grads.get_concrete_function(values, z, k_t, fake).graph)
    all_flops = graph_flops(model._all_grads.get_concrete_function(
        data[0], real, fake, values, z, k_t).graph)
    cycle_flops = 5 * g_flops + all_flops  # 3 iterations: 5 G updates + 1 of everything
    train = model.make_train_function()

    def cycle():  # one iteration of each kind in the order the schedule runs them
        out = None
        for _ in range(3):
            out = train(data)
        return float(out["g_loss"])

    start = time.perf_counter()
    cycle()  # trace (and compile with XLA) the three iterations
    first_s = time.perf_counter() - start
    cycle()
    times, conv_rates = [], []
    for _ in range(repeats):  # interleave with the baseline: both see the same load
        conv_rates.append(baseline.rate(2))
        times.append(best_time(cycle, 1))
    seconds = min(times) / 3
    conv_rate = max(conv_rates)
    rate = cycle_flops / (3 * seconds)
    return {"size": name, "image": size, "df": df, "batch": batch, "xla": xla,
            "s_per_iter": seconds, "gflop_per_iter": cycle_flops / 3e9,
            "g_update_gflop": g_flops / 1e9, "all_update_gflop": all_flops / 1e9,
            "step_gflops": rate / 1e9, "conv_gflops": conv_rate / 1e9,
            "fraction": rate / conv_rate, "first_cycle_s": first_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="demo size only, 2 repeats")
    parser.add_argument("--repeats", type=int, default=3, help="timed cycles per setting")
    parser.add_argument("--sizes", nargs="*", default=None, choices=list(SIZES),
                        help="which sizes (default: all)")
    parser.add_argument("--xla", action="store_true", help="also time XLA-compiled updates")
    args = parser.parse_args(argv)
    sizes = ["demo"] if args.quick else (args.sizes or list(SIZES))
    repeats = 2 if args.quick else args.repeats
    baseline = ConvBaseline()
    print(f"baseline: 3x3 conv 16x64x64x128->128 forward, {baseline.flops / 1e9:.1f} GFLOP")
    print(f"{'size':<10} {'img':>4} {'df':>4} {'B':>3} {'xla':>4} {'s/iter':>7} "
          f"{'GFLOP/it':>8} {'GFLOP/s':>8} {'conv':>8} {'of conv':>8} {'1st s':>6}")
    for name in sizes:
        size, df, batch = SIZES[name]
        for xla in ((False, True) if args.xla else (False,)):
            r = bench_size(name, size, df, batch, xla, baseline, repeats)
            print(f"{r['size']:<10} {r['image']:>4} {r['df']:>4} {r['batch']:>3} "
                  f"{'on' if r['xla'] else 'off':>4} {r['s_per_iter']:7.3f} "
                  f"{r['gflop_per_iter']:8.2f} {r['step_gflops']:8.1f} {r['conv_gflops']:8.1f} "
                  f"{r['fraction']:8.0%} {r['first_cycle_s']:6.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
