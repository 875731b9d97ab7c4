"""Flags of the synthetic experiments, grouped by purpose (``python synthetic/main.py --help``).

Defaults are the reference's (``synthetic/config.py`` and, for ``--max_step`` and the
logging intervals, the values its trainer hard-coded). A bad flag or value ends the
program with exit code 2 and one line naming it.
"""

from __future__ import annotations

import argparse
import sys

from config import MAX_NONFINITE, non_negative_int, positive_int, str2bool

PROG = "synthetic/main.py"

# What exists (synthetic/models.py builds it; kept here so that the command lines can
# name it without importing TensorFlow). A variable's causes are listed before it. The
# data sets and the graph-shaped generators share GRAPHS: a generator named like a data
# set is wired exactly as that data set's true graph.
GRAPHS: dict[str, dict[str, list[str]]] = {
    "linear": {"X1": [], "X2": ["X1"], "X3": ["X2"]},
    "collider": {"X1": [], "X3": [], "X2": ["X1", "X3"]},
    "complete": {"X1": [], "X2": ["X1"], "X3": ["X1", "X2"]},
}
DATA_TYPES = ("linear", "collider", "complete", "network")  # network: no graph, one noise
FC_LAYERS = {"fc3": 3, "fc5": 5, "fc10": 10}  # fully connected generator -> its layers
GENERATORS = ("linear", "collider", "complete", "fc3", "fc5", "fc10")


def edges(graph: dict[str, list[str]]) -> set[tuple[str, str]]:
    """The (cause, effect) pairs of a graph."""
    return {(cause, var) for var, causes in graph.items() for cause in causes}


def consistent_generators(data_type: str) -> list[str]:
    """Graph-shaped generators consistent with the data's causal order: their graph holds
    every edge of the data's graph, in the same direction (so it can express the data's
    mechanisms in the data's causal order). None for the network data (no graph)."""
    if data_type not in GRAPHS:
        return []
    truth = edges(GRAPHS[data_type])
    return [g for g in GRAPHS if truth <= edges(GRAPHS[g])]
# Flags that fix the data set or the networks' shapes: a loaded run keeps its own.
ARCHITECTURE_FLAGS = ("data_type", "seed", "gen_z_dim", "gen_hidden_size", "disc_hidden_size")
# ...and its training recipe, unless the command line changes it. Every other flag (what
# to do now, how long, how often to log) comes from the command line.
RECIPE_FLAGS = ("lr_gen", "lr_disc", "batch_size")


def positive_float(value):
    """A float > 0."""
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value!r}")
    return number


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr, exit code 2."""

    def error(self, message):
        print(f"{self.prog}: error: {message} (see python {self.prog} --help)",
              file=sys.stderr)
        sys.exit(2)


parser = OneLineParser(prog=PROG, allow_abbrev=False, description=(
    "Train the six generators (linear, collider, complete, fc3, fc5, fc10) as plain GANs "
    "against one synthetic three-variable data set, side by side, logging each one's TVD."))

data_arg = parser.add_argument_group("Data")
data_arg.add_argument("--data_type", type=str, choices=DATA_TYPES, default="collider",
                      help="The data set's causal structure: linear X1->X2->X3, collider "
                           "X1->X2<-X3, complete (X1->X2->X3 and X1->X3), or network (a "
                           "random 5-layer net of one noise).")
data_arg.add_argument("--seed", type=non_negative_int, default=None,
                      help="Seed of the data set's random mechanisms, the initial weights "
                           "and the noise. Default: a fresh seed per run, saved in "
                           "params.json.")

gan_arg = parser.add_argument_group("GAN")
gan_arg.add_argument("--gen_z_dim", type=positive_int, default=10,
                     help="Noise inputs per variable of a generator (fc generators read "
                          "the first gen_z_dim only, as in the reference).")
gan_arg.add_argument("--gen_hidden_size", type=positive_int, default=10,
                     help="Width of the generators' hidden layers.")
gan_arg.add_argument("--disc_hidden_size", type=positive_int, default=10,
                     help="Width of the discriminators' hidden layers.")
gan_arg.add_argument("--lr_gen", type=positive_float, default=0.0005,
                     help="Adam learning rate of the generators.")
gan_arg.add_argument("--lr_disc", type=positive_float, default=0.0005,
                     help="Adam learning rate of the discriminators.")
gan_arg.add_argument("--batch_size", type=positive_int, default=64,
                     help="Examples per step for every generator and discriminator.")

train_arg = parser.add_argument_group("Training and logging")
train_arg.add_argument("--max_step", type=non_negative_int, default=50001,
                       help="Training iterations (each updates all six GANs once); the "
                            "reference's trainer ran 50001.")
train_arg.add_argument("--log_step", type=positive_int, default=50,
                       help="Iterations between TVD measurements (tvd.csv, TensorBoard).")
train_arg.add_argument("--scatter_step", type=non_negative_int, default=500,
                       help="Iterations between scatter plots; 0: only at the end.")
train_arg.add_argument("--save_step", type=positive_int, default=5000,
                       help="Iterations between checkpoints (one is also written at the end).")
train_arg.add_argument("--tvd_samples", type=positive_int, default=50000,
                       help="Samples drawn from the data and from each generator per TVD.")
train_arg.add_argument("--jit_compile", type=str2bool, default=True,
                       help="Compile the training iteration with XLA (faster on CPU, see "
                            "benchmarks/bench_synthetic.py).")
train_arg.add_argument("--max_nonfinite", type=positive_int, default=MAX_NONFINITE,
                       help="An update whose losses or gradients hold NaN or Inf is skipped "
                            "(that GAN of that run keeps its weights and optimizer state) "
                            "and counted; after this many skipped updates in a row of one "
                            "GAN of one run, the process stops with an error naming the "
                            "loss and the step, writing no further checkpoint.")
train_arg.add_argument("--num_threads", type=non_negative_int, default=0,
                       help="TensorFlow threads (intra- and inter-op); 0: TensorFlow's "
                            "choice. 1 keeps a run on one core.")

misc_arg = parser.add_argument_group("Runs")
misc_arg.add_argument("--num_runs", type=positive_int, default=1,
                      help="Independent runs trained side by side in this process, each "
                           "with its own data set draw (seed, seed+1, ...) and run folder; "
                           "one compiled call still updates all of them. Ten cost far "
                           "less than ten times one run's CPU and start up once (how "
                           "run_datasets.sh fits many runs on a CPU; measured in "
                           "synthetic/README.md, Speed).")
misc_arg.add_argument("--model_dir", type=str, default="logs",
                      help="Folder under which each run makes synth_<data_type>_<time>/.")
misc_arg.add_argument("--load_path", type=str, default="",
                      help="A run folder to load (e.g. logs/synth_collider_1128_093000); "
                           "it keeps its data set and network flags.")
misc_arg.add_argument("--is_train", type=str2bool, default=True,
                      help="Train; False with --load_path only measures and plots the "
                           "loaded generators.")


def get_config(argv=None):
    """The parsed flags and the set of flags written on the command line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    config = parser.parse_args(argv)
    given = {word.split("=", 1)[0][2:] for word in argv if word.startswith("--")}
    return config, given
