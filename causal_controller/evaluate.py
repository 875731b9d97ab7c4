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
import logging
import os
import sys
import time

import numpy as np
import tensorflow as tf

import causal_controller.config as cc_flags
import label_stats
from causal_controller.CausalController import CausalController
from causal_controller.pretrain import ControllerPretrainer, load_controller, pretrain_loop
from causal_graph import get_causal_graph
from config import str2bool
from data_loader import label_dataset, read_attributes
from errors import UserError
from toy_faces import default_scm


def toy_truth(scm) -> dict[str, float]:
    """Exact P(Male | Bald = 1) and P(Male | Wearing_Lipstick = 1) of the toy SCM."""
    return {node: scm.prob({"Male": 1}, given={node: 1}) for node in ("Bald", "Wearing_Lipstick")}


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
    cc_defaults = vars(cc_flags.get_config([])[0])
    for key, value in cc_defaults.items():
        if key != "pt_load_path":
            parser.add_argument(f"--{key}", type=str2bool if isinstance(value, bool)
                                else type(value), default=value,
                                help="as in main.py (causal_controller/config.py)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)

    graph = get_causal_graph(args.causal_model)
    names = [n for n, _ in graph]
    toy = not args.labels
    scm = default_scm()
    if toy:
        missing = sorted(set(names) - set(scm.nodes))
        if missing:
            raise UserError(f"the toy SCM has no labels {missing}; its labels are {scm.nodes}."
                            " Pick a graph over those, or give --labels")
        frame = scm.sample(args.rows, seed=args.seed)[names]
    else:
        frame = read_attributes(args.labels)[names]

    cc_config = argparse.Namespace(**{k: getattr(args, k, v) for k, v in cc_defaults.items()})
    cc = CausalController(graph, cc_config, seed=args.seed)
    if args.checkpoint:
        print("loaded", load_controller(cc, args.checkpoint))
    if args.train_iters:
        cc_config.pretrain_iter = int(cc.step.numpy()) + args.train_iters
        cc_config.min_pretrain_iter = cc_config.pretrain_iter  # run them all
        pretrainer = ControllerPretrainer(cc, cc_config, seed=args.seed)
        stream = label_dataset(frame, cc.label_names, cc_config.batch_size, seed=args.seed)
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
    print(f"  TVD vs data rows            {label_stats.calc_tvd(label_dict, frame):.4f}  (target <= 0.05)")
    print(f"  TVD seen-only (reference)   {label_stats.tvd_seen_only(label_dict, frame):.4f}")
    if toy and sorted(names) == sorted(scm.nodes):
        states, probs = scm.joint()
        print(f"  TVD vs exact toy SCM        "
              f"{label_stats.tvd_exact(label_dict, states, probs, names=scm.nodes):.4f}")
        rows_states = {n: frame[n].to_numpy()[:, None] for n in names}
        print(f"  TVD data rows vs exact SCM  "
              f"{label_stats.tvd_exact(rows_states, states, probs, names=scm.nodes):.4f}"
              "  (sampling noise of the rows)")
    truth = toy_truth(scm) if toy else None
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
