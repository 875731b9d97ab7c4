"""Generic command-line flags (data, training, misc) and the helpers every flag group uses.

Four modules define flag groups: this one, ``causal_controller/config.py``,
``causal_began/config.py`` and ``causal_dcgan/config.py``. Each parses the same command
line and ignores flags it does not know, so a flag that several groups define (such as
``--batch_size``) reaches all of them, as in the reference code. ``main.py`` joins them
for ``--help`` and for rejecting words that no group knows.
"""

import argparse
import sys

TRUE_WORDS = ("true", "1", "yes", "y", "t", "on")
FALSE_WORDS = ("false", "0", "no", "n", "f", "off")


def str2bool(value):
    """Read a boolean flag word; anything but a known yes/no word is an argparse error."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(
        f"expected a boolean word (true/false, 1/0, yes/no), got {value!r}")


def positive_int(value):
    """An integer > 0."""
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def non_negative_int(value):
    """An integer >= 0."""
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return number


MAX_NONFINITE = 50  # default of --max_nonfinite (nonfinite.py)
USAGE = "python main.py [--flag value ...]  (python main.py --help lists every flag)"


def show_default(value):
    """A flag's default as --help shows it."""
    if value is None:
        return "none"
    if value == "":
        return "''"
    return str(value)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """--help with each flag's default after its help (switches such as --dry_run,
    which take no value, have none)."""

    def _get_default_metavar_for_optional(self, action):
        return {str2bool: "BOOL", int: "INT", positive_int: "INT", non_negative_int: "INT",
                float: "FLOAT"}.get(action.type, "TEXT")

    def _get_help_string(self, action):
        text = action.help or ""
        if action.nargs == 0 or action.default is argparse.SUPPRESS or "%(default)" in text:
            return text
        shown = show_default(action.default).replace("%", "%%")  # help is %-formatted
        return f"{text} (default: {shown})"


def new_parser(description):
    """A parser for one flag group, named as main.py so its errors read naturally."""
    return argparse.ArgumentParser(prog="main.py", description=description, add_help=False,
                                   allow_abbrev=False, usage=USAGE,
                                   formatter_class=DefaultsHelpFormatter)


def add_legacy_flag(group, option, *, note, **kwargs):
    """Add a flag of the reference that has no effect here. It is still accepted, so the
    reference's command lines parse, but --help leaves it out; ``note`` (kept on the
    action as ``legacy_help``) says why it does nothing, and docs/FLAGS.md lists it."""
    action = group.add_argument(option, help=argparse.SUPPRESS, **kwargs)
    action.legacy_help = note
    return action


def is_legacy(action):
    """Whether a parser's action is a hidden legacy flag (see add_legacy_flag)."""
    return action.help is argparse.SUPPRESS


def parse_group(parser, argv=None):
    """Parse the flags this group knows; return (namespace, the words it did not know)."""
    return parser.parse_known_args(sys.argv[1:] if argv is None else argv)


parser = new_parser("Generic flags: data, training, devices and logging.")

data_arg = parser.add_argument_group("Data")
data_arg.add_argument("--causal_model", type=str, default=None,
                      help="Causal graph over the labels: a key of causal_graph.py "
                           "(e.g. big_causal_graph) or a path to a JSON graph file. "
                           "Required unless --load_path gives a run to resume.")
data_arg.add_argument("--data_dir", type=str, default="data",
                      help="Folder that holds the datasets.")
data_arg.add_argument("--dataset", type=str, default="celebA",
                      help="Dataset folder under --data_dir: celebA (prepare it with "
                           "download.py) or toyfaces (the bundled synthetic faces, "
                           "rendered automatically when missing).")
data_arg.add_argument("--do_shuffle", type=str2bool, default=True,
                      help="Shuffle the training examples.")
data_arg.add_argument("--input_scale_size", type=positive_int, default=64,
                      help="Images are resized to this square size (a power of two >= 8).")
data_arg.add_argument("--is_crop", type=str2bool, default=True,
                      help="Centre-crop 108x108 before resizing (the DCGAN CelebA recipe).")
data_arg.add_argument("--grayscale", type=str2bool, default=False,
                      help="Convert images to one grey channel.")
add_legacy_flag(data_arg, "--split", type=str, default="train",
                note="Data split name of the reference; nothing reads it (there is one "
                     "split, the whole data set).")
data_arg.add_argument("--num_worker", type=positive_int, default=24,
                      help="Parallel calls of the input pipeline (capped at the CPU count).")
data_arg.add_argument("--rare_label_rate", type=float, default=0.0,
                      help="A difference from the reference (0 = off, its behaviour): while "
                           "the image model trains, a label whose rarer value is held by "
                           "fewer than this fraction of the rows is shown about this often: "
                           "those rows repeat in the real images' epochs and the "
                           "controller's labels for G are resampled with the same weights, "
                           "so what G learns, P(image | labels), is unchanged. E.g. 0.3 "
                           "shows Bald (2%% of the toy faces) in 19%% of the rows (several "
                           "rare labels share the rows, so each gets somewhat less than "
                           "the rate).")
data_arg.add_argument("--rare_pair_rate", type=float, default=0.0,
                      help="A difference from the reference (0 = off), alone or with "
                           "--rare_label_rate: a pair of label values held together by "
                           "fewer than this fraction of the rows (e.g. Bald=1 with Male=0, "
                           "0.1%% of the toy faces) is shown about this often, the same way "
                           "(rows repeat, the controller's labels are resampled). E.g. 0.1 "
                           "with --rare_label_rate 0.3 shows bald women in 4%% of the rows.")
data_arg.add_argument("--resize_method", type=str, default="AREA",
                      choices=["AREA", "BILINEAR", "BICUBIC", "NEAREST_NEIGHBOR"],
                      help="How images are resized to --input_scale_size.")

train_arg = parser.add_argument_group("Training")
add_legacy_flag(train_arg, "--build_train", type=str2bool, default=False,
                note="Nothing reads it: the image model of --model_type is always built "
                     "with its training parts (add --dry_run to build without training).")
train_arg.add_argument("--build_pretrain", type=str2bool, default=False,
                       help="Build the controller's critic and optimizers even without "
                            "--is_pretrain (e.g. to inspect them with --dry_run).")
train_arg.add_argument("--model_type", type=str, default="", choices=["", "dcgan", "began"],
                       help="Image model: began (CausalBEGAN) or dcgan (CausalGAN). Absent: "
                            "only the causal controller is built.")
add_legacy_flag(train_arg, "--use_gpu", type=str2bool, default=True,
                note="Overwritten from --num_gpu (True iff num_gpu > 0) whatever is given; "
                     "--num_gpu chooses the devices.")
train_arg.add_argument("--num_gpu", type=non_negative_int, default=1,
                       help="0: CPU. k: the first k GPUs, one replica each (1 falls back "
                            "to the CPU with a warning when there is no GPU).")
train_arg.add_argument("--num_cpu_devices", type=positive_int, default=1,
                       help="Split the CPU into this many logical devices; with --num_gpu 0 "
                            "and a value k >= 2, training runs k replicas (towers) on the "
                            "CPU, to try multi-device training without GPUs.")
train_arg.add_argument("--max_nonfinite", type=positive_int, default=MAX_NONFINITE,
                       help="An update whose loss or gradients hold NaN or Inf is skipped "
                            "(no weight or optimizer state changes) and counted; after this "
                            "many skipped updates in a row the run stops with an error "
                            "naming the loss and the step, keeping its last good checkpoint.")
train_arg.add_argument("--save_secs", type=positive_int, default=300,
                       help="Seconds between checkpoints of the whole model (besides the "
                            "one at the end and on Ctrl-C or SIGTERM).")

misc_arg = parser.add_argument_group("Misc")
misc_arg.add_argument("--descrip", type=str, default="",
                      help="Short suffix for a new run folder's name.")
misc_arg.add_argument("--dry_run", action="store_true",
                      help="Build and load everything, train nothing (useful under IPython).")
misc_arg.add_argument("--load_path", type=str, default="",
                      help="A previous run folder to load and resume: its saved flags are "
                           "restored, flags given now win for schedule and logging.")
misc_arg.add_argument("--log_step", type=positive_int, default=100,
                      help="Iterations between summaries; figures every 50x and 100x this.")
misc_arg.add_argument("--log_level", type=str, default="INFO", choices=["INFO", "DEBUG", "WARN"],
                      help="Logging verbosity.")
misc_arg.add_argument("--log_dir", type=str, default="logs",
                      help="Folder where run folders are created.")
misc_arg.add_argument("--figure_ext", type=str, default="pdf", choices=["pdf", "png"],
                      help="File format of the figures written during training.")
misc_arg.add_argument("--seed", type=int, default=22,
                      help="Seeds numpy and TensorFlow: same seed, same machine, same start.")


def gpu_logic(config):
    """use_gpu follows num_gpu, as in the reference."""
    config.use_gpu = config.num_gpu > 0
    return config


def get_config(argv=None):
    """The generic flags of a command line: (namespace, unparsed words)."""
    config, unparsed = parse_group(parser, argv)
    return gpu_logic(config), unparsed
