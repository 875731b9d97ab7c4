"""The paper's high-level figures: for each label, three 2 x cols grids.

    python -m figure_scripts high_level --load_path logs/<run> [--labels Bald Wearing_Lipstick]

For each label X, into ``<run>/figures/high_level/`` (or ``--out``):

    <step>_do1_cond1_<X>.<ext>    top do(X=1), bottom cond X=1: the paper's headline contrast
    <step>_do1_do0_<X>.<ext>      top do(X=1), bottom do(X=0)
    <step>_cond1_cond0_<X>.<ext>  top cond X=1, bottom cond X=0

Column k shows the same individual wherever the sampler allows it: the same controller
noise and z_gen under both interventions, the same z_gen under the conditions (a
condition redraws the controller noise of rows that fail it). By default everything acts
on logits (figure_scripts.sample): do 1/0 is the median positive/negative logit, cond 1/0
is logit > c / logit < -c with c = 3. In the session of ``%run main.py --load_path <run>
--dry_run``: ``from figure_scripts.high_level import high_level; high_level(trainer)``.
"""

from __future__ import annotations

import argparse

import numpy as np

from errors import UserError
from figure_scripts.run import add_run_arguments, load_run
from figure_scripts.sample import DEFAULT_CONDITION, check_nodes, image_model, sample
from figure_scripts.utils import figure_dir, save_grid

KINDS = ("do1_cond1", "do1_do0", "cond1_cond0")


def high_level(trainer, labels=None, cols: int = 10, cond_value: float = DEFAULT_CONDITION,
               on_logits: bool = True, seed: int = 0, out=None, figure_ext: str | None = None,
               progress: bool = True) -> list:
    """Write the three grids for each label (default: every node); returns their paths."""
    from tqdm import tqdm

    image_model(trainer)
    names = check_nodes(trainer.cc, labels or trainer.cc.label_names, "--labels")
    if cols < 1:
        raise UserError(f"--cols must be at least 1; got {cols}.")
    ext = figure_ext or trainer.figure_ext
    folder = figure_dir(trainer.model_dir, out, "high_level")
    step = trainer.overall_step()
    cond = [abs(cond_value), -abs(cond_value)] if on_logits else [1, 0]
    written = []
    for name in tqdm(names, desc="high_level", disable=not progress, dynamic_ncols=True):
        do = sample(trainer, do_dict={name: [1, 0]}, N=cols, on_logits=on_logits, seed=seed)
        obs = sample(trainer, cond_dict={name: cond}, N=cols, on_logits=on_logits, seed=seed)
        rows = {"do1": do.images[do.rows(0)], "do0": do.images[do.rows(1)],
                "cond1": obs.images[obs.rows(0)], "cond0": obs.images[obs.rows(1)]}
        for kind in KINDS:
            top, bottom = kind.split("_")
            path = folder / f"{step}_{kind}_{name}.{ext}"
            written.append(save_grid(np.concatenate([rows[top], rows[bottom]]), path, 2, cols))
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m figure_scripts high_level",
        description="The paper's 2 x cols grids for each label: do(X=1) over X=1, do 1 over "
                    "do 0, cond 1 over cond 0.")
    add_run_arguments(parser)
    parser.add_argument("--labels", nargs="+", default=None,
                        help="Labels to draw (default: every node of the graph).")
    parser.add_argument("--cols", type=int, default=10, help="Images per row.")
    parser.add_argument("--cond_value", type=float, default=DEFAULT_CONDITION,
                        help="A condition X=1 on logits means logit > this, X=0 logit < -this.")
    parser.add_argument("--on_labels", action="store_true",
                        help="Intervene on and condition on labels instead of logits.")
    return parser


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    trainer = load_run(args.load_path)
    paths = high_level(trainer, args.labels, args.cols, args.cond_value, not args.on_labels,
                       args.seed, args.out or None, args.figure_ext)
    print(f"high_level: wrote {len(paths)} grids to {paths[0].parent}")
    return 0
