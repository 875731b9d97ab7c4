"""The four flag groups: defaults, booleans, shared flags, help, unknown flags."""

import argparse
import re

import pytest

import causal_began.config as began_flags
import causal_controller.config as cc_flags
import causal_dcgan.config as dcgan_flags
import config as generic_flags
import main
from errors import UserError


def parse(*argv):
    return main.parse_flags(list(argv))


def test_defaults_match_the_reference():
    groups = parse()
    config, cc, dcgan, began = (groups[k] for k in
                                ("config", "cc_config", "dcgan_config", "began_config"))
    assert (config.data_dir, config.dataset, config.input_scale_size) == ("data", "celebA", 64)
    assert (config.is_crop, config.num_worker, config.resize_method) == (True, 24, "AREA")
    assert (config.num_gpu, config.log_step, config.log_dir, config.seed) == (1, 100, "logs", 22)
    assert (cc.pt_cc_lr, cc.pt_dcc_lr, cc.lambda_W, cc.n_critic) == (8e-5, 8e-5, 0.1, 20)
    assert (cc.critic_layers, cc.critic_hidden_size, cc.min_tvd) == (6, 15, 0.02)
    assert (cc.min_pretrain_iter, cc.pretrain_iter, cc.cc_n_layers, cc.cc_n_hidden) == (
        5000, 10000, 6, 10)
    assert (cc.batch_size, cc.save_step, cc.num_log_samples) == (16, 5000, 3)
    assert (began.conv_hidden_num, began.z_dim, began.z_num, began.batch_size) == (128, 64, 64, 16)
    assert (began.beta1, began.beta2, began.d_lr, began.g_lr) == (0.9, 0.999, 8e-5, 8e-5)
    assert (began.gamma, began.gamma_label, began.lambda_k, began.lambda_l, began.lambda_z) == (
        0.5, 0.5, 0.001, 8e-5, 0.01)
    assert (began.num_iter, began.lr_update_step, began.label_loss) == (250000, 100000,
                                                                        "squarediff")
    assert (dcgan.batch_size, dcgan.z_dim, dcgan.learning_rate, dcgan.beta1) == (
        64, 100, 0.0002, 0.5)
    assert (dcgan.loss_function, dcgan.tau, dcgan.critic_hidden_size) == (1, 3000, 10)


@pytest.mark.parametrize("word,value", [("True", True), ("true", True), ("1", True),
                                        ("YES", True), ("no", False), ("False", False),
                                        ("0", False), ("nO", False)])
def test_boolean_words(word, value):
    assert parse("--is_crop", word)["config"].is_crop is value
    assert generic_flags.str2bool(word) is value


def test_boolean_typo_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse("--is_pretrain", "Ture")
    assert exit_info.value.code == 2
    assert "Ture" in capsys.readouterr().err
    with pytest.raises(argparse.ArgumentTypeError):
        generic_flags.str2bool("maybe")


def test_shared_flag_reaches_every_group():
    groups = parse("--batch_size", "7", "--log_step", "3")
    assert groups["cc_config"].batch_size == 7
    assert groups["began_config"].batch_size == 7
    assert groups["dcgan_config"].batch_size == 7
    assert groups["config"].log_step == 3 and groups["began_config"].log_step == 3


def test_unknown_flag_is_rejected_with_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse("--num_gpus", "2")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--num_gpus" in err and "did you mean --num_gpu" in err


def test_stray_word_is_rejected(capsys):
    with pytest.raises(SystemExit):
        parse("--num_gpu", "0", "extra")
    assert "'extra'" in capsys.readouterr().err


def test_repeated_values_are_not_unknown():
    groups = parse("--is_pretrain", "True", "--model_type", "began", "--is_train", "True",
                   "--input_scale_size", "32", "--conv_hidden_num", "32", "--dry_run",
                   "--num_gpu=0")
    assert groups["cc_config"].is_pretrain and groups["began_config"].is_train
    assert groups["config"].input_scale_size == 32 == groups["began_config"].conv_hidden_num
    assert groups["config"].dry_run and groups["config"].num_gpu == 0


def test_a_value_missing_is_an_error(capsys):
    with pytest.raises(SystemExit):
        parse("--num_gpu")
    assert "--num_gpu" in capsys.readouterr().err


def test_values_of_other_groups_are_not_unknown():
    groups = parse("--conv_hidden_num", "32", "--n_critic", "5", "--gamma_m", "-1")
    assert groups["began_config"].conv_hidden_num == 32
    assert groups["cc_config"].n_critic == 5


def test_help_lists_every_group(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse("--help")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    for module in (generic_flags, cc_flags, began_flags, dcgan_flags):
        assert module.parser.description in flat
    for flag in ("--causal_model", "--pt_cc_lr", "--conv_hidden_num", "--stab_proj",
                 "--num_cpu_devices", "--figure_ext", "--zeta", "--tau"):
        assert flag in out
    # every flag carries a sentence of help (a hidden legacy flag, its note)
    for module in (generic_flags, cc_flags, began_flags, dcgan_flags):
        for action in module.parser._actions:
            text = action.legacy_help if generic_flags.is_legacy(action) else action.help
            assert text, action.option_strings


# The reference's flags that do nothing here: accepted, hidden from --help. lambda_k and
# lambda_l are hidden in CausalGAN's group only: CausalBEGAN's flags of those names work.
LEGACY_FLAGS = {
    generic_flags: {"--split", "--build_train", "--use_gpu"},
    cc_flags: {"--save_step"},
    began_flags: {"--max_step", "--build_all"},
    dcgan_flags: {"--label_specific_noise", "--fakeLabels_distribution", "--lambda_m",
                  "--lambda_k", "--lambda_l", "--gamma_m", "--gamma_k", "--gamma_l"},
}


def help_entries(text):
    """{option: its help text, whitespace collapsed} of a parser's --help output."""
    entries = {}
    for block in re.split(r"\n(?=  --)", text):
        block = block.split("\n\n", 1)[0]  # not the next group's title
        match = re.match(r"\s*(--\w+)", block)
        if match:
            entries[match.group(1)] = " ".join(block.split())
    return entries


def test_hidden_flags_are_exactly_the_legacy_ones():
    for module, expected in LEGACY_FLAGS.items():
        hidden = {option for action in module.parser._actions
                  if generic_flags.is_legacy(action) for option in action.option_strings}
        assert hidden == expected, module.__name__


def test_help_shows_every_default_and_hides_the_legacy_flags(capsys):
    with pytest.raises(SystemExit):
        parse("--help")
    out = capsys.readouterr().out
    for module, legacy in LEGACY_FLAGS.items():
        entries = help_entries(module.parser.format_help())
        for action in module.parser._actions:
            for option in action.option_strings:
                if option in legacy:
                    assert option not in entries, option
                    continue
                assert option in entries, option
                if action.nargs != 0:  # a switch (--dry_run) has no default to show
                    shown = generic_flags.show_default(action.default)
                    assert entries[option].endswith(f"(default: {shown})"), entries[option]
    assert "(default: 8e-05)" in help_entries(cc_flags.parser.format_help())["--pt_cc_lr"]
    assert "(default: none)" in help_entries(out)["--causal_model"]
    # hidden in every group that defines them: absent from the whole --help
    shown_anywhere = set(help_entries(out))
    for option in set.union(*LEGACY_FLAGS.values()) - {"--lambda_k", "--lambda_l"}:
        assert option not in shown_anywhere, option
        assert not re.search(re.escape(option) + r"\b", out), option  # nor in a sentence
    assert "--lambda_k" in shown_anywhere  # CausalBEGAN's own


def test_hidden_legacy_flags_still_parse():
    groups = parse("--split", "test", "--build_train", "True", "--use_gpu", "False",
                   "--num_gpu", "2", "--save_step", "10", "--max_step", "5",
                   "--build_all", "yes", "--label_specific_noise", "False",
                   "--fakeLabels_distribution", "iid_uniform", "--lambda_m", "0.1",
                   "--gamma_m", "1", "--gamma_k", "2", "--gamma_l", "3")
    config, cc, dcgan, began = (groups[k] for k in
                                ("config", "cc_config", "dcgan_config", "began_config"))
    assert (config.split, config.build_train) == ("test", True)
    assert config.use_gpu is True  # follows --num_gpu, whatever is given
    assert (cc.save_step, began.max_step, began.build_all) == (10, 5, True)
    assert (dcgan.fakeLabels_distribution, dcgan.lambda_m) == ("iid_uniform", 0.1)
    assert (dcgan.gamma_m, dcgan.gamma_k, dcgan.gamma_l) == (1.0, 2.0, 3.0)
    assert main.resolve_model(groups) is None
    # the shared names reach both groups; CausalBEGAN uses them
    groups = parse("--lambda_k", "0.2", "--lambda_l", "0.3")
    assert groups["began_config"].lambda_k == 0.2 == groups["dcgan_config"].lambda_k
    assert groups["began_config"].lambda_l == 0.3 == groups["dcgan_config"].lambda_l
    # still refused, as before
    groups = parse("--model_type", "dcgan", "--label_specific_noise", "True")
    with pytest.raises(UserError, match="label_specific_noise"):
        main.resolve_model(groups)


@pytest.mark.parametrize("model_type,batch", [("began", 16), ("dcgan", 64), ("", 16)])
def test_model_type_decides_the_batch_size(model_type, batch):
    groups = parse("--model_type", model_type) if model_type else parse()
    model_config = main.resolve_model(groups)
    assert groups["cc_config"].batch_size == batch
    assert groups["config"].batch_size == batch
    assert (model_config is None) == (model_type == "")


def test_is_train_without_model_type_is_an_error():
    groups = parse("--is_train", "True")
    with pytest.raises(UserError, match="--model_type"):
        main.resolve_model(groups)


def test_began_adam_betas_are_flags():
    groups = parse("--model_type", "began", "--beta1", "0.5", "--beta2", "0.99")
    model_config = main.resolve_model(groups)
    assert (model_config.beta1, model_config.beta2) == (0.5, 0.99)


def test_conv_hidden_num_accepts_any_positive_width():
    assert parse("--conv_hidden_num", "24")["began_config"].conv_hidden_num == 24
    with pytest.raises(SystemExit):
        parse("--conv_hidden_num", "0")


def test_image_size_must_be_a_power_of_two():
    groups = parse("--model_type", "began", "--input_scale_size", "48")
    with pytest.raises(UserError, match="power of two"):
        main.resolve_model(groups)


def test_use_gpu_follows_num_gpu():
    assert parse("--num_gpu", "0")["config"].use_gpu is False
    assert parse("--num_gpu", "2")["config"].use_gpu is True
