"""Speed of CausalGAN training against this machine's own convolution rate.

    python -m benchmarks.bench_dcgan                 # 64x64 (reference) and 32x32 (demo)
    python -m benchmarks.bench_dcgan --quick         # demo size only, fewer repeats
    python -m benchmarks.bench_dcgan --demo          # the demo's iteration against a plain
                                                     # conditional DCGAN, and train_loop

A CausalGAN iteration is not one update: every 3 iterations run 5 generator updates and
one update of all five networks (ORIGINAL.md 5.3). So the unit measured is that
3-iteration cycle (one 'g_all' iteration and two 'g_g' ones), reported per iteration.
FLOPs are counted from the compiled graphs of the G update and of the all-networks update
(every Conv2D, Conv2DBackpropInput/Filter and MatMul that the losses and gradients need,
as benchmarks/bench_began.py counts them), so they are what an iteration really computes
(Adam's elementwise updates and the batch-norm/minibatch arithmetic are not counted).
The baseline, measured in the same run and interleaved with the timings, is
bench_began's: a large 3x3 convolution, forward alone.

``--demo`` times the iteration the README's demo trains (its image-model flags read from
configs/toyfaces_demo.txt by benchmarks/demo_loop.py; labels drawn from a
big_causal_graph controller and resampled as its --rare_label_rate and --rare_pair_rate
make them; the trainer's train function under trainer.cpu_strategy, non-finite check
included) against a plain conditional DCGAN with an auxiliary label head
(benchmarks/plain_cdcgan.py: the same G, upsampling included, and D at the same widths
and batch; one D and one G Adam update per step, no R1, no EMA), interleaved round by
round, and prints images/s of both, their
ratio and CausalGAN's share of the conv baseline. Then ``Trainer.train_loop`` itself on
a tiny rendered toy-face set at the demo's flags (benchmarks/demo_loop.py): iterations/s
end to end (the pipeline's start, figure steps and checkpoints timed apart) against the bare train function on
one batch, timed before and after the loop.
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
from benchmarks.demo_loop import DEMO_FLAGS, LoopTimer, build_demo_trainer  # noqa: E402
from benchmarks.plain_cdcgan import PlainCDCGAN  # noqa: E402
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


def demo_models(seed: int = 0):
    """(CausalGAN at the demo's flags with a controller and rare-label weights, the plain
    baseline, one batch (images, labels) of real rows, the label rows)."""
    import causal_controller.config as cc_flags
    import causal_dcgan.config as dcgan_flags
    import data_loader
    from causal_controller.CausalController import CausalController
    from causal_graph import get_causal_graph
    from toy_faces import default_scm
    from trainer import cpu_strategy

    graph = get_causal_graph("big_causal_graph")
    controller = CausalController(graph, cc_flags.get_config([])[0], seed=seed)
    names = list(controller.label_names)
    cfg = dcgan_flags.get_config(DEMO_FLAGS)[0]
    table = default_scm().sample(20_000, seed=seed)[names].to_numpy(np.float32)
    with cpu_strategy().scope():
        model = CausalGAN(cfg, names, 32, controller=controller, seed=seed)
    model.label_weights = tf.constant(data_loader.rare_pair_weights(table, 0.3, 0.2), tf.float32)
    plain = PlainCDCGAN(len(names), 32, cfg.gf_dim, cfg.df_dim, cfg.z_dim, cfg.batch_size,
                        cfg.learning_rate, cfg.beta1, seed=seed, upsample=cfg.g_upsample)
    rng = np.random.default_rng(seed)
    batch = (tf.constant(rng.uniform(0, 255, [cfg.batch_size, 32, 32, 3]), tf.float32),
             tf.constant(table[:cfg.batch_size]))
    return model, plain, batch


def demo_flops(model, plain, batch):
    """(GFLOP of CausalGAN's iteration, of the plain step), from their graphs."""
    images, labels = batch
    z = tf.zeros([labels.shape[0], model.z_dim])
    causal = graph_flops(model._all_grads.get_concrete_function(
        images, labels, labels, label_values(labels), z, model.k_t.read_value()).graph)
    x = images / 127.5 - 1.0
    step = (graph_flops(tf.function(plain.d_losses_and_grads).get_concrete_function(
        x, labels).graph) + graph_flops(tf.function(plain.g_losses_and_grads)
                                         .get_concrete_function(labels).graph))
    return causal / 1e9, step / 1e9


def bench_demo(repeats: int, per_round: int, baseline: ConvBaseline) -> dict:
    """Rounds of (conv rate, CausalGAN s/iteration, plain s/step), interleaved."""
    from trainer import cpu_strategy

    model, plain, batch = demo_models()
    train = model.make_train_function(cpu_strategy())
    causal_gflop, plain_gflop = demo_flops(model, plain, batch)
    rows = int(batch[1].shape[0])

    def causal():
        np.asarray(train(batch)["nonfinite"])  # what train_loop waits for

    def baseline_step():
        float(plain.train_step(*batch)[1])

    for fn in (causal, baseline_step):  # trace, and let the first slow calls pass
        for _ in range(3):
            fn()
    rounds = []
    for r in range(repeats):
        conv = baseline.rate(2) / 1e9
        # one call of each in turn, so that both see the same load; the best of each
        times = [(_timed(causal), _timed(baseline_step)) for _ in range(per_round)]
        (c, c_cpu), (p, p_cpu) = (np.min(np.array(col), axis=0) for col in zip(*times, strict=True))
        rounds.append((conv, c, p, c_cpu, p_cpu))
        print(f"round {r + 1}: CausalGAN {c:.3f} s/it {rows / c:6.1f} img/s | plain "
              f"{p:.3f} s/step {rows / p:6.1f} img/s | ratio {p / c:5.1%} (CPU time "
              f"{p_cpu / c_cpu:5.1%}) | CausalGAN {causal_gflop / c:5.1f} GFLOP/s, conv "
              f"{conv:5.1f}, share {causal_gflop / c / conv:4.0%}", flush=True)
    conv, c, p, c_cpu, p_cpu = (np.array(col) for col in zip(*rounds, strict=True))
    return {"rows": rows, "causal_s": c, "plain_s": p, "conv": conv, "causal_cpu": c_cpu,
            "plain_cpu": p_cpu, "causal_gflop": causal_gflop, "plain_gflop": plain_gflop}


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_loop(iters: int, rounds: int, bare_iters: int) -> list[dict]:
    """Rounds of (bare, train_loop, bare) on the demo trainer; see benchmarks/demo_loop.py."""
    import tempfile

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_dcgan_") as folder:
        trainer = build_demo_trainer(folder)
        timer = LoopTimer(trainer)
        timer.warm_up()
        for r in range(rounds):
            before = timer.bare(bare_iters) / bare_iters
            total, side = timer.loop(iters)
            after = timer.bare(bare_iters) / bare_iters
            loop = (total - side) / iters
            bare = (before + after) / 2
            results.append({"loop_s": loop, "bare_s": bare, "side_s": side})
            print(f"train_loop round {r + 1}: {iters} iterations {1 / loop:.2f} it/s "
                  f"({trainer.batch_size / loop:.0f} img/s; pipeline start, figures and "
                  f"checkpoints {side:.1f} s apart), bare iteration {1 / before:.2f} / {1 / after:.2f} "
                  f"it/s, loop / bare {bare / loop:.0%}", flush=True)
    return results


def demo_main(args) -> int:
    import os

    baseline = ConvBaseline()
    print(f"load average {os.getloadavg()[0]:.1f}; baseline: 3x3 conv 16x64x64x128->128 "
          f"forward, {baseline.flops / 1e9:.1f} GFLOP")
    r = bench_demo(args.repeats, args.per_round, baseline)
    rows, c, p = r["rows"], r["causal_s"], r["plain_s"]
    ratios = p / c
    print(f"CausalGAN (demo flags): {rows / c.min():.1f} img/s best, {rows / np.median(c):.1f} "
          f"median ({r['causal_gflop']:.1f} GFLOP/iteration)")
    print(f"plain conditional DCGAN: {rows / p.min():.1f} img/s best, {rows / np.median(p):.1f} "
          f"median ({r['plain_gflop']:.1f} GFLOP/step)")
    print(f"ratio CausalGAN / plain: {np.median(ratios):.1%} median of rounds "
          f"({ratios.min():.1%} to {ratios.max():.1%}); best against best "
          f"{p.min() / c.min():.1%}; in CPU time {np.median(r['plain_cpu'] / r['causal_cpu']):.1%}")
    share = r["causal_gflop"] / c / r["conv"]
    print(f"conv baseline share: {np.median(share):.0%} median ({share.min():.0%} to "
          f"{share.max():.0%})")
    if args.loop_iters:
        loop = bench_loop(args.loop_iters, args.loop_rounds, args.per_round * 2)
        its = np.array([1 / x["loop_s"] for x in loop])
        of_bare = np.array([x["bare_s"] / x["loop_s"] for x in loop])
        print(f"train_loop end to end: {np.median(its):.2f} it/s median "
              f"({its.min():.2f} to {its.max():.2f}), {np.median(of_bare):.0%} of the bare "
              f"iteration")
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="demo size only, 2 repeats")
    parser.add_argument("--repeats", type=int, default=3, help="timed cycles per setting")
    parser.add_argument("--sizes", nargs="*", default=None, choices=list(SIZES),
                        help="which sizes (default: all)")
    parser.add_argument("--xla", action="store_true", help="also time XLA-compiled updates")
    parser.add_argument("--demo", action="store_true",
                        help="the demo's every_step iteration against a plain conditional "
                             "DCGAN, then train_loop end to end")
    parser.add_argument("--per_round", type=int, default=4,
                        help="--demo: calls of each per round, in turn (the best is kept)")
    parser.add_argument("--loop_iters", type=int, default=100,
                        help="--demo: iterations per train_loop round (0: no loop)")
    parser.add_argument("--loop_rounds", type=int, default=2, help="--demo: train_loop rounds")
    args = parser.parse_args(argv)
    if args.demo:
        return demo_main(args)
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
