"""Flags of CausalBEGAN (the BEGAN-based image model with a labeler and three margins)."""

from config import add_legacy_flag, new_parser, parse_group, positive_int, str2bool

parser = new_parser("CausalBEGAN flags (--model_type began).")

net_arg = parser.add_argument_group("Network")
net_arg.add_argument("--c_dim", type=positive_int, default=3,
                     help="Colour channels of the images.")
net_arg.add_argument("--conv_hidden_num", type=positive_int, default=128,
                     help="Convolution width n of the BEGAN paper (any positive width).")
net_arg.add_argument("--separate_labeler", type=str2bool, default=True,
                     help="A separate labeler network (else the first outputs of the "
                          "discriminator's code).")
net_arg.add_argument("--z_dim", type=positive_int, default=64,
                     help="Size of the generator's image noise.")
net_arg.add_argument("--z_num", type=positive_int, default=64,
                     help="Size of the autoencoder's code.")

train_arg = parser.add_argument_group("Training")
train_arg.add_argument("--batch_size", type=positive_int, default=16,
                       help="Examples per replica and step.")
train_arg.add_argument("--beta1", type=float, default=0.9,
                       help="Adam beta1 (0.9: what the reference actually ran).")
train_arg.add_argument("--beta2", type=float, default=0.999,
                       help="Adam beta2.")
train_arg.add_argument("--d_lr", type=float, default=0.00008,
                       help="Discriminator (and labeler) learning rate.")
train_arg.add_argument("--g_lr", type=float, default=0.00008,
                       help="Generator learning rate.")
train_arg.add_argument("--label_loss", type=str, default="squarediff",
                       choices=["xe", "absdiff", "squarediff"],
                       help="Loss between labeler outputs and labels.")
train_arg.add_argument("--lr_update_step", type=positive_int, default=100000,
                       help="Both learning rates halve every this many steps.")
add_legacy_flag(train_arg, "--max_step", type=positive_int, default=50000,
                note="Nothing reads it (as in the reference): --num_iter sets the length "
                     "of training.")
train_arg.add_argument("--num_iter", type=positive_int, default=250000,
                       help="Training iterations.")
train_arg.add_argument("--optimizer", type=str, default="adam", choices=["adam"],
                       help="Optimizer.")
train_arg.add_argument("--round_fake_labels", type=str2bool, default=True,
                       help="Round the controller's labels before use.")
train_arg.add_argument("--gamma", type=float, default=0.5,
                       help="Image margin target (c1).")
train_arg.add_argument("--gamma_label", type=float, default=0.5,
                       help="Label margin target (c2).")
train_arg.add_argument("--lambda_k", type=float, default=0.001,
                       help="Step size of the margin k_t.")
train_arg.add_argument("--lambda_l", type=float, default=0.00008,
                       help="Step size of the margin l_t.")
train_arg.add_argument("--lambda_z", type=float, default=0.01,
                       help="Step size of the margin z_t.")
train_arg.add_argument("--no_third_margin", type=str2bool, default=False,
                       help="Drop the third margin (the label loss gets weight 1, not z_t).")
train_arg.add_argument("--zeta", type=float, default=0.5,
                       help="gamma_3 of the paper: target of the third margin.")
train_arg.add_argument("--is_train", type=str2bool, default=False,
                       help="Train the image model.")
add_legacy_flag(train_arg, "--build_all", type=str2bool, default=False,
                note="Nothing reads it: every part of CausalBEGAN is always built.")

misc_arg = parser.add_argument_group("Misc")
misc_arg.add_argument("--log_step", type=positive_int, default=100,
                      help="Iterations between summaries.")


def get_config(argv=None):
    """CausalBEGAN's flags of a command line: (namespace, unparsed words)."""
    return parse_group(parser, argv)
