"""Speed of one CausalBEGAN training step against this machine's own convolution rate.

    python -m benchmarks.bench_began                # reference (64/128) and demo (32/32) sizes
    python -m benchmarks.bench_began --quick        # demo size only, fewer repeats

For each size and for XLA off / on: seconds per step, images per second, and the
achieved FLOP rate of the step. FLOPs are counted from the step's own graph (every
Conv2D, Conv2DBackpropInput, Conv2DBackpropFilter and MatMul, forward and backward), so
they are what the step really computes. The baseline, measured in the same run, is a
large 3x3 convolution (the reference size's dominant layer: 16x64x64x128 -> 128) run
forward alone; the step's rate is printed as a fraction of it. Timings are the best of
several repeats, interleaved with the baseline, because the machine may be shared.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from causal_began.CausalBEGAN import CausalBEGAN  # noqa: E402

SIZES = {"reference": (64, 128, 16), "demo": (32, 32, 16)}  # image side, n, batch
N_LABELS = 9


def began_config(n: int, batch: int):
    return argparse.Namespace(
        c_dim=3, conv_hidden_num=n, separate_labeler=True, z_dim=64, z_num=64, batch_size=batch,
        beta1=0.9, beta2=0.999, d_lr=0.00008, g_lr=0.00008, label_loss="squarediff",
        lr_update_step=100000, num_iter=1, optimizer="adam", round_fake_labels=True, gamma=0.5,
        gamma_label=0.5, lambda_k=0.001, lambda_l=0.00008, lambda_z=0.01,
        no_third_margin=False, zeta=0.5, is_train=True, log_step=100)


def _prod(shape) -> int:
    return int(np.prod([int(d) for d in shape]))


def live_ops(graph):
    """The ops that the graph's outputs depend on (unused gradient branches are pruned
    before running, so they are not counted)."""
    seen, stack = set(), [t.op for t in graph.outputs]
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return [op for op in graph.get_operations() if op.name in seen]


def graph_flops(graph) -> int:
    """FLOPs (2 per multiply-add) of the live convolutions and matmuls of a TF graph."""
    total = 0
    for op in live_ops(graph):
        if op.type == "Conv2D":
            kh, kw, cin, _ = op.inputs[1].shape
            total += 2 * _prod(op.outputs[0].shape) * kh * kw * cin
        elif op.type == "Conv2DBackpropInput":
            kh, kw, cin, _ = op.inputs[1].shape
            total += 2 * _prod(op.inputs[2].shape) * kh * kw * cin
        elif op.type == "Conv2DBackpropFilter":
            kh, kw, cin, _ = op.outputs[0].shape
            total += 2 * _prod(op.inputs[2].shape) * kh * kw * cin
        elif op.type in ("MatMul", "BatchMatMulV2"):
            a, b = op.inputs[0].shape, op.inputs[1].shape
            ta, tb = op.get_attr("transpose_a") if op.type == "MatMul" else False, (
                op.get_attr("transpose_b") if op.type == "MatMul" else False)
            m, k = (a[-1], a[-2]) if ta else (a[-2], a[-1])
            n = b[-2] if tb else b[-1]
            total += 2 * int(m) * int(k) * int(n) * _prod(a[:-2])
    return total


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


class ConvBaseline:
    """A large 3x3 'SAME' convolution, forward only: the machine's achievable conv rate."""

    def __init__(self, batch=16, size=64, channels=128):
        self.x = tf.random.normal([batch, size, size, channels])
        self.k = tf.random.normal([3, 3, channels, channels])
        self.flops = 2 * batch * size * size * 9 * channels * channels
        self.fn = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"))
        self.fn(self.x, self.k).numpy()

    def rate(self, repeats: int = 3) -> float:
        return self.flops / best_time(lambda: self.fn(self.x, self.k).numpy(), repeats)


def bench_size(name, size, n, batch, xla: bool, baseline: ConvBaseline, repeats: int):
    cfg = began_config(n, batch)
    model = CausalBEGAN(cfg, [f"l{i}" for i in range(N_LABELS)], size,
                        data_format="channels_last", jit_compile=xla, seed=0)
    rng = np.random.default_rng(0)
    data = (tf.constant(rng.uniform(0, 255, [batch, size, size, 3]), tf.float32),
            tf.constant(rng.integers(0, 2, [batch, N_LABELS]), tf.float32),
            tf.constant(rng.integers(0, 2, [batch, N_LABELS]), tf.float32),
            tf.constant(rng.uniform(-1, 1, [batch, cfg.z_dim]), tf.float32))
    step = model.make_train_function()
    concrete = model._compute.get_concrete_function(
        *data, model.k_t.read_value(), model.l_t.read_value(), model.z_t.read_value())
    flops = graph_flops(concrete.graph)
    start = time.perf_counter()
    step(data)["d_loss"].numpy()  # trace (and compile with XLA)
    compile_s = time.perf_counter() - start
    step(data)["d_loss"].numpy()
    step_times, conv_rates = [], []
    for _ in range(repeats):  # interleave with the baseline: both see the same load
        conv_rates.append(baseline.rate(2))
        step_times.append(best_time(lambda: step(data)["d_loss"].numpy(), 1))
    seconds = min(step_times)
    conv_rate = max(conv_rates)
    rate = flops / seconds
    return {"size": name, "image": size, "n": n, "batch": batch, "xla": xla,
            "s_per_step": seconds, "img_per_s": batch / seconds, "gflop_per_step": flops / 1e9,
            "step_gflops": rate / 1e9, "conv_gflops": conv_rate / 1e9,
            "fraction": rate / conv_rate, "first_call_s": compile_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="demo size only, 2 repeats")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--sizes", nargs="*", default=None, choices=list(SIZES),
                        help="which sizes (default: all)")
    args = parser.parse_args(argv)
    sizes = ["demo"] if args.quick else (args.sizes or list(SIZES))
    repeats = 2 if args.quick else args.repeats
    baseline = ConvBaseline()
    print(f"baseline: 3x3 conv 16x64x64x128->128 forward, {baseline.flops / 1e9:.1f} GFLOP")
    header = (f"{'size':<10} {'img':>4} {'n':>4} {'B':>3} {'xla':>4} {'s/step':>8} "
              f"{'img/s':>7} {'GFLOP':>7} {'GFLOP/s':>8} {'conv':>8} {'of conv':>8} {'1st s':>6}")
    print(header)
    for name in sizes:
        size, n, batch = SIZES[name]
        for xla in (False, True):
            r = bench_size(name, size, n, batch, xla, baseline, repeats)
            print(f"{r['size']:<10} {r['image']:>4} {r['n']:>4} {r['batch']:>3} "
                  f"{'on' if r['xla'] else 'off':>4} {r['s_per_step']:8.3f} "
                  f"{r['img_per_s']:7.1f} {r['gflop_per_step']:7.1f} {r['step_gflops']:8.1f} "
                  f"{r['conv_gflops']:8.1f} {r['fraction']:8.0%} {r['first_call_s']:6.1f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
