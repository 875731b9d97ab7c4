"""Flags of CausalGAN (the DCGAN-based image model with a labeler and an anti-labeler)."""

from config import add_legacy_flag, new_parser, parse_group, positive_int, str2bool

parser = new_parser("CausalGAN flags (--model_type dcgan).")

net_arg = parser.add_argument_group("Network")
net_arg.add_argument("--batch_size", type=positive_int, default=64,
                     help="Examples per replica and step.")
add_legacy_flag(net_arg, "--label_specific_noise", type=str2bool, default=False,
                note="Not implemented, nor was it in the reference: False does nothing and "
                     "True is refused with a message.")
add_legacy_flag(net_arg, "--fakeLabels_distribution", type=str, default="real_joint",
                choices=["real_joint", "iid_uniform"],
                note="Listed by the reference; nothing reads it (G's labels always come "
                     "from the causal controller).")
net_arg.add_argument("--label_type", type=str, default="continuous",
                     choices=["discrete", "continuous"],
                     help="discrete: labels map to {0.3, 0.7}; continuous: plus noise.")
net_arg.add_argument("--round_fake_labels", type=str2bool, default=True,
                     help="Round the controller's labels before use.")
net_arg.add_argument("--type_input_to_generator", type=str, default="logits",
                     choices=["labels", "logits"],
                     help="Feed the generator the (noisy) labels or their logits.")
net_arg.add_argument("--df_dim", type=positive_int, default=64,
                     help="Discriminator width.")
net_arg.add_argument("--gf_dim", type=positive_int, default=64,
                     help="Generator width, and the side of its images: must equal "
                          "--input_scale_size.")
net_arg.add_argument("--c_dim", type=positive_int, default=3,
                     help="Colour channels of the images.")
net_arg.add_argument("--z_dim", type=positive_int, default=100,
                     help="Size of the generator's image noise.")
net_arg.add_argument("--loss_function", type=int, default=1, choices=range(6),
                     help="Generator loss variant 0..5.")
net_arg.add_argument("--critic_hidden_size", type=positive_int, default=10,
                     help="Width of the label critic.")
net_arg.add_argument("--reconstr_loss", type=str2bool, default=False,
                     help="Add the z-reconstruction term to the generator loss.")
net_arg.add_argument("--stab_proj", type=str2bool, default=False,
                     help="Fixed random projections as the first discriminator layer.")
net_arg.add_argument("--n_stab_proj", type=positive_int, default=256,
                     help="Number of those projections.")

train_arg = parser.add_argument_group("Training")
train_arg.add_argument("--num_iter", type=positive_int, default=100000,
                       help="Training iterations.")
train_arg.add_argument("--learning_rate", type=float, default=0.0002,
                       help="Adam learning rate of every network.")
train_arg.add_argument("--beta1", type=float, default=0.5,
                       help="Adam beta1.")
train_arg.add_argument("--off_label_losses", type=str2bool, default=False,
                       help="The generator loss is the GAN loss alone.")
train_arg.add_argument("--pretrain_LabelerR", type=str2bool, default=False,
                       help="Train only the labeler first.")
train_arg.add_argument("--pretrain_LabelerR_no_of_iters", type=positive_int, default=15000,
                       help="Iterations of that labeler-only phase.")
for _name, _default in (("lambda_m", 0.05), ("lambda_k", 0.05), ("lambda_l", 0.001),
                        ("gamma_m", -1.0), ("gamma_k", -1.0), ("gamma_l", -1.0)):
    add_legacy_flag(train_arg, f"--{_name}", type=float, default=_default,
                    note="Listed by the reference's CausalGAN flags; CausalGAN never "
                         "reads it (--lambda_k and --lambda_l still set CausalBEGAN's "
                         "margin steps).")
train_arg.add_argument("--tau", type=float, default=3000,
                       help="k_t (the anti-labeler's weight, from 1) decays by 1/e every tau "
                            "iterations.")

diff_arg = parser.add_argument_group(
    "Differences from the reference (off by default; the defaults are the reference's)")
diff_arg.add_argument("--schedule", type=str, default="reference",
                      choices=["reference", "every_step"],
                      help="reference: on every third iteration one G update then one update "
                           "of all networks, otherwise two G updates; every_step: each "
                           "iteration one update of all networks from one forward pass.")
diff_arg.add_argument("--minibatch_features", type=str2bool, default=True,
                      help="False drops the discriminator's minibatch-similarity features.")
diff_arg.add_argument("--labeler_shares_D", type=str2bool, default=False,
                      help="The labeler is a linear head on the discriminator's last layer "
                           "(ACGAN's auxiliary classifier), trained with D.")
diff_arg.add_argument("--projection_D", type=str2bool, default=False,
                      help="The discriminator judges (image, labels) pairs: a projection "
                           "term <embed(labels), features> is added to its logit; real "
                           "images come with their labels, G's with the labels drawn.")
diff_arg.add_argument("--projection_pairs", type=str2bool, default=False,
                      help="With --projection_D: D's projection also embeds the product of "
                           "every two labels' signs, so it can judge a combination of values "
                           "(a bald woman) apart from the sum of its parts.")
diff_arg.add_argument("--g_ema", type=float, default=0.0,
                      help="Images drawn for figures, summaries and generate() come from an "
                           "exponential moving average of G's weights, updated each iteration "
                           "with this decay (e.g. 0.99); 0: from G itself.")
diff_arg.add_argument("--labeler_on_fakes", type=str2bool, default=False,
                      help="The labeler also learns to read G's images as the labels they "
                           "were drawn with (ACGAN), not only real images.")
diff_arg.add_argument("--g_upsample", type=str, default="deconv", choices=["deconv", "resize"],
                      help="How G doubles its maps: deconv, 5x5 stride-2 transposed "
                           "convolutions (the reference); resize, nearest-neighbour "
                           "upsampling then a 3x3 convolution with reflected borders, which "
                           "draws no checkerboard noise.")
diff_arg.add_argument("--g_cond_bn", type=str2bool, default=False,
                      help="Conditional batch norm in G: after each of its batch norms the "
                           "maps are also scaled and shifted by a linear function of the "
                           "labels (zero at the start), so every scale of G hears the labels, "
                           "not only its input (the reference).")
diff_arg.add_argument("--r1_gamma", type=float, default=0.0,
                      help="Adds the R1 penalty (gamma / 2) E||grad_x D(x)||^2 on real images "
                           "to D's loss (Mescheder et al. 2018), which keeps D from winning "
                           "outright; 0: off.")
diff_arg.add_argument("--d_norm", type=str, default="batch",
                      choices=["batch", "joint", "layer", "none", "spectral"],
                      help="D's normalisation after its 2nd-4th convolutions: batch, batch "
                           "norm over real and generated batches apart (the reference), which "
                           "hides from D whatever every generated image of a batch shares; "
                           "joint, batch norm over one batch of both (needs --schedule "
                           "every_step); layer, each image by its own statistics; none; "
                           "spectral, none, and every weight of D divided by its largest "
                           "singular value (Miyato et al. 2018).")
diff_arg.add_argument("--minibatch_stddev", type=str2bool, default=False,
                      help="D's last convolution also sees one more channel: how far apart "
                           "the images of the batch are (their features' standard deviation "
                           "over the batch, averaged), so a G that draws too few kinds of "
                           "image is told apart (Karras et al. 2018); a cheap stand-in for "
                           "--minibatch_features.")
diff_arg.add_argument("--draw_bn_batches", type=int, default=0,
                      help="Images drawn (figures, the report, generate()) are normalised in "
                           "G's batch norms with statistics averaged over this many batches "
                           "drawn as in training (the controller's labels in --rare_label_rate's "
                           "mix; measured again whenever the weights have changed), not with "
                           "the statistics of the batch being drawn, "
                           "so each image depends on its own row alone whatever else is drawn "
                           "beside it (a batch all Bald=1); overrides --draw_rows; 0: off (the "
                           "reference).")
diff_arg.add_argument("--d_augment", type=str, default="",
                      help="D sees real and generated images alike changed at random, and G "
                           "learns through the changes (DiffAugment, Zhao et al. 2020): a "
                           "comma-separated list of translation (up to 1/8 of the side, "
                           "reflected borders), cutout (a square of half the side set to "
                           "grey), color (brightness, saturation, contrast); empty: off.")
diff_arg.add_argument("--d_augment_p", type=float, default=1.0,
                      help="With --d_augment: the share of images (real and generated alike) "
                           "that D sees changed; the rest it sees as they are (1: all).")
diff_arg.add_argument("--lr_decay_start", type=int, default=0,
                      help="From this iteration on, every network's learning rate falls "
                           "linearly from --learning_rate to 0 at --num_iter; 0: constant (the "
                           "reference).")
diff_arg.add_argument("--draw_rows", type=int, default=0,
                      help="Images drawn (figures, the report, generate()) take this many rows "
                           "of each batch of --batch_size; fixed individuals with the "
                           "controller's labels fill the rest, so that G's batch statistics are "
                           "those of a mixed batch as in training, not of a batch that is all "
                           "Bald=1; 0: every row (the reference).")


def get_config(argv=None):
    """CausalGAN's flags of a command line: (namespace, unparsed words)."""
    return parse_group(parser, argv)
