"""Flags of the causal controller and its pretraining (a WGAN-GP over label vectors)."""

from config import (
    add_legacy_flag,
    new_parser,
    non_negative_int,
    parse_group,
    positive_int,
    str2bool,
)

parser = new_parser("Causal controller flags: the DAG-shaped label generator and its "
                    "Wasserstein pretraining.")

pretrain_arg = parser.add_argument_group("Pretrain")
pretrain_arg.add_argument("--pt_load_path", type=str, default="",
                          help="A controller checkpoint (controller/checkpoints/CC-Model-<step> "
                               "or its folder) to load alone into a new run.")
pretrain_arg.add_argument("--is_pretrain", type=str2bool, default=False,
                          help="Pretrain the causal controller.")
pretrain_arg.add_argument("--pt_cc_lr", type=float, default=0.00008,
                          help="Learning rate of the causal controller.")
pretrain_arg.add_argument("--pt_dcc_lr", type=float, default=0.00008,
                          help="Learning rate of the controller's critic.")
pretrain_arg.add_argument("--lambda_W", type=float, default=0.1,
                          help="Weight of the critic's gradient penalty.")
pretrain_arg.add_argument("--n_critic", type=positive_int, default=20,
                          help="Critic updates before each joint controller/critic update.")
pretrain_arg.add_argument("--critic_layers", type=positive_int, default=6,
                          help="Fully connected layers of the critic.")
pretrain_arg.add_argument("--critic_hidden_size", type=positive_int, default=15,
                          help="Width of the critic's layers.")
pretrain_arg.add_argument("--min_tvd", type=float, default=0.02,
                          help="Stop pretraining once the TVD is below this...")
pretrain_arg.add_argument("--min_pretrain_iter", type=non_negative_int, default=5000,
                          help="...but not before this many iterations.")
pretrain_arg.add_argument("--pretrain_iter", type=non_negative_int, default=10000,
                          help="Iterations of pretraining.")
pretrain_arg.add_argument("--pt_factorized", type=str2bool, default=False,
                          help="One critic per node, looking at the node and its parents.")

net_arg = parser.add_argument_group("Network")
net_arg.add_argument("--cc_n_layers", type=positive_int, default=6,
                     help="Layers between a node's inputs (noise, parents) and its output.")
net_arg.add_argument("--cc_n_hidden", type=positive_int, default=10,
                     help="Width of those layers and size of each node's noise.")

misc_arg = parser.add_argument_group("Misc")
misc_arg.add_argument("--batch_size", type=positive_int, default=16,
                      help="Controller batch size (an image model's batch size replaces it).")
add_legacy_flag(misc_arg, "--save_step", type=positive_int, default=5000,
                note="Nothing reads it: controller checkpoints are written with every TVD "
                     "report (every 10 x --log_step iterations).")
misc_arg.add_argument("--num_log_samples", type=positive_int, default=3,
                      help="Label samples printed with each log line.")


def get_config(argv=None):
    """The controller's flags of a command line: (namespace, unparsed words)."""
    return parse_group(parser, argv)
