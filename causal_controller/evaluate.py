"""Evaluate (or first pretrain) a causal controller: TVD and interventional checks.

    python -m causal_controller.evaluate --train_iters 20000             # toy SCM, 20,000 rows
    python -m causal_controller.evaluate --checkpoint logs/<run>/controller/checkpoints
    python -m causal_controller.evaluate --checkpoint <prefix> --labels data/celebA/list_attr_celeba.txt

Prints the TVD against the data rows (true and the reference's seen-only variant), the
TVD against the toy SCM's exact distribution (toy data only), and from 100,000 samples
P(Male | do(Bald=1)) vs P(Male | Bald=1) and P(Male | do(Wearing_Lipstick=1)) vs
P(Male | Wearing_Lipstick=1), each beside its target.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import time

import numpy as np
import pandas as pd
import tensorflow as tf

from causal_controller.CausalController import CausalController
from causal_controller.pretrain import ControllerPretrainer, load_controller, pretrain_loop
from errors import UserError
from figure_scripts import pairwise

BIG_CAUSAL_GRAPH = [
    ("Young", []), ("Male", []), ("Eyeglasses", ["Young"]), ("Bald", ["Male", "Young"]),
    ("Mustache", ["Male", "Young"]), ("Smiling", ["Male", "Young"]),
    ("Wearing_Lipstick", ["Male", "Young"]), ("Mouth_Slightly_Open", ["Young", "Smiling"]),
    ("Narrow_Eyes", ["Male", "Young", "Smiling"]),
]

# The bundled toy data set's true model: P(node = 1 | parents), parents in graph order,
# keyed by the parents' values as a tuple.
TOY_SCM = {
    "Young": {(): 0.780},
    "Male": {(): 0.422},
    "Eyeglasses": {(0,): 0.165, (1,): 0.036},
    "Bald": {(0, 0): 0.002, (0, 1): 0.002, (1, 0): 0.116, (1, 1): 0.021},
    "Mustache": {(0, 0): 0.002, (0, 1): 0.002, (1, 0): 0.134, (1, 1): 0.071},
    "Smiling": {(0, 0): 0.658, (0, 1): 0.520, (1, 0): 0.434, (1, 1): 0.382},
    "Wearing_Lipstick": {(0, 0): 0.735, (0, 1): 0.820, (1, 0): 0.002, (1, 1): 0.009},
    "Mouth_Slightly_Open": {(0, 0): 0.233, (0, 1): 0.743, (1, 0): 0.221, (1, 1): 0.761},
    "Narrow_Eyes": {(0, 0, 0): 0.098, (0, 0, 1): 0.135, (0, 1, 0): 0.094, (0, 1, 1): 0.119,
                    (1, 0, 0): 0.113, (1, 0, 1): 0.190, (1, 1, 0): 0.077, (1, 1, 1): 0.173},
}

CC_DEFAULTS = dict(  # the flags of causal_controller/config.py (ORIGINAL.md 2.2)
    pt_load_path="", is_pretrain=False, pt_cc_lr=0.00008, pt_dcc_lr=0.00008, lambda_W=0.1,
    n_critic=20, critic_layers=6, critic_hidden_size=15, min_tvd=0.02, min_pretrain_iter=5000,
    pretrain_iter=10000, pt_factorized=False, cc_n_layers=6, cc_n_hidden=10, batch_size=16,
    save_step=5000, num_log_samples=3,
)


def sample_toy_scm(n_rows: int, seed: int = 0, graph=BIG_CAUSAL_GRAPH) -> pd.DataFrame:
    """n_rows label vectors drawn from TOY_SCM, as a 0/1 DataFrame in graph order."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    for node, parents in graph:
        table = TOY_SCM[node]
        p = np.empty(n_rows)
        parent_vals = np.stack([cols[q] for q in parents], axis=1) if parents else None
        for key, prob in table.items():
            rows = np.all(parent_vals == np.array(key), axis=1) if parents else slice(None)
            p[rows] = prob
        cols[node] = (rng.random(n_rows) < p).astype(np.int64)
    return pd.DataFrame(cols)


def toy_scm_distribution(graph=BIG_CAUSAL_GRAPH):
    """The SCM's exact joint: (states [2^n, n] of 0/1 in graph order, probabilities)."""
    names = [n for n, _ in graph]
    states = np.array(list(itertools.product([0, 1], repeat=len(names))), np.int64)
    probs = np.ones(len(states))
    for j, (node, parents) in enumerate(graph):
        idx = [names.index(q) for q in parents]
        p1 = np.array([TOY_SCM[node][tuple(s[idx])] for s in states])
        probs *= np.where(states[:, j] == 1, p1, 1.0 - p1)
    return states, probs


def toy_truth(graph=BIG_CAUSAL_GRAPH) -> dict[str, float]:
    """Exact P(Male | Bald = 1) and P(Male | Wearing_Lipstick = 1) of the toy SCM."""
    names = [n for n, _ in graph]
    states, probs = toy_scm_distribution(graph)
    out = {}
    for node in ("Bald", "Wearing_Lipstick"):
        sel = states[:, names.index(node)] == 1
        out[node] = float(probs[sel & (states[:, names.index("Male")] == 1)].sum() / probs[sel].sum())
    return out


def label_stream(frame: pd.DataFrame, names, batch_size: int, seed: int) -> tf.data.Dataset:
    """An endless shuffled stream of [batch, n] float label batches (node order)."""
    values = frame[list(names)].to_numpy(np.float32)
    ds = tf.data.Dataset.from_tensor_slices(values).repeat()
    return ds.shuffle(min(len(values), 100_000), seed=seed).batch(batch_size, drop_remainder=True)


def interventional_report(cc, n: int = 100_000, seed: int = 1, truth=None) -> dict[str, float]:
    """P(Male) under do/cond on Bald and Wearing_Lipstick from n controller samples."""
    male_prior = float(np.mean(cc.sample_label(N=n, seed=seed)["Male"] > 0.5))
    res = {"P(Male)": male_prior}
    for node in ("Bald", "Wearing_Lipstick"):
        if node not in cc.node_names or "Male" not in cc.node_names:
            continue
        do = cc.sample_label(do_dict={node: 1}, N=n, seed=seed + 1)
        cond = cc.sample_label(cond_dict={node: 1}, N=n, seed=seed + 2)
        res[f"P(Male | do({node}=1))"] = float(np.mean(do["Male"] > 0.5))
        res[f"P(Male | {node}=1)"] = float(np.mean(cond["Male"] > 0.5))
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="", help="controller checkpoint prefix or folder")
    parser.add_argument("--train_iters", type=int, default=0,
                        help="pretrain a new controller for this many iterations first")
    parser.add_argument("--labels", default="", help="CelebA-format attribute file "
                        "(default: rows sampled from the toy SCM)")
    parser.add_argument("--causal_model", default="big_causal_graph", help="graph name or JSON")
    parser.add_argument("--rows", type=int, default=20_000, help="toy SCM rows to sample")
    parser.add_argument("--seed", type=int, default=0, help="seed of the toy rows and models")
    parser.add_argument("--out_dir", default="logs/controller_eval",
                        help="where a trained controller's checkpoints and crosstabs go")
    parser.add_argument("--log_step", type=int, default=100, help="summary/TVD interval / 10")
    parser.add_argument("--samples", type=int, default=100_000, help="samples for P(Male|...)")
    for key, value in CC_DEFAULTS.items():
        if isinstance(value, bool):
            parser.add_argument(f"--{key}", type=lambda s: s.lower() in ("true", "1", "yes"),
                                default=value)
        elif key not in ("pt_load_path",):
            parser.add_argument(f"--{key}", type=type(value), default=value)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.causal_model == "big_causal_graph":
        graph = BIG_CAUSAL_GRAPH
    else:
        from causal_graph import get_causal_graph  # noqa: PLC0415 (only when needed)
        graph = get_causal_graph(args.causal_model)
    names = [n for n, _ in graph]
    toy = not args.labels
    if toy:
        frame = sample_toy_scm(args.rows, args.seed, graph)
    else:
        from data_loader import read_attributes  # noqa: PLC0415 (only when needed)
        frame = read_attributes(args.labels)[names]

    cc_config = argparse.Namespace(**{k: getattr(args, k, v) for k, v in CC_DEFAULTS.items()})
    cc = CausalController(graph, cc_config, seed=args.seed)
    if args.checkpoint:
        print("loaded", load_controller(cc, args.checkpoint))
    if args.train_iters:
        cc_config.pretrain_iter = int(cc.step.numpy()) + args.train_iters
        cc_config.min_pretrain_iter = cc_config.pretrain_iter  # run them all
        pretrainer = ControllerPretrainer(cc, cc_config, seed=args.seed)
        stream = label_stream(frame, cc.label_names, cc_config.batch_size, args.seed)
        os.makedirs(args.out_dir, exist_ok=True)
        writer = tf.summary.create_file_writer(os.path.join(args.out_dir, "summaries"))
        t0 = time.perf_counter()
        result = pretrain_loop(cc, pretrainer, stream, frame, cc_config, args.out_dir,
                               summary_writer=writer, log_step=args.log_step,
                               progress=sys.stderr.isatty())
        print(f"trained to step {result['step']} in {time.perf_counter() - t0:.0f} s "
              f"({args.train_iters / (time.perf_counter() - t0):.1f} it/s); "
              f"checkpoint {result['checkpoint']}")
    if not args.checkpoint and not args.train_iters:
        raise UserError("Give --checkpoint (a controller to evaluate) or --train_iters N.")

    labels, _ = cc.sample(500_000, seed=args.seed + 7)
    labels = labels.numpy()
    label_dict = {n: labels[:, i:i + 1] for i, n in enumerate(cc.label_names)}
    print(f"step {int(cc.step.numpy())}, {len(frame)} data rows, 500,000 samples")
    print(f"  TVD vs data rows            {pairwise.calc_tvd(label_dict, frame):.4f}  (target <= 0.05)")
    print(f"  TVD seen-only (reference)   {pairwise.tvd_seen_only(label_dict, frame):.4f}")
    if toy and args.causal_model == "big_causal_graph":
        states, probs = toy_scm_distribution(graph)
        print(f"  TVD vs exact toy SCM        {pairwise.tvd_exact(label_dict, states, probs):.4f}")
        rows_states = {n: frame[n].to_numpy()[:, None] for n in names}
        print(f"  TVD data rows vs exact SCM  {pairwise.tvd_exact(rows_states, states, probs):.4f}"
              "  (sampling noise of the rows)")
    truth = toy_truth(graph) if toy and args.causal_model == "big_causal_graph" else None
    male = float(frame["Male"].mean()) if "Male" in frame else float("nan")
    report = interventional_report(cc, args.samples, seed=args.seed + 11)
    for key, value in report.items():
        target = ""
        if key.startswith("P(Male | do("):
            target = f"(target P(Male) +- 0.03: data {male:.3f}, SCM 0.422)"
        elif key == "P(Male | Bald=1)":
            target = f"(target >= 0.85; truth {truth['Bald']:.3f})" if truth else "(target >= 0.85)"
        elif key == "P(Male | Wearing_Lipstick=1)":
            target = (f"(target <= 0.05; truth {truth['Wearing_Lipstick']:.3f})" if truth
                      else "(target <= 0.05)")
        print(f"  {key:<32} {value:.4f}  {target}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as err:
        print(err, file=sys.stderr)
        sys.exit(2)
