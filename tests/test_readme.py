"""The README's two commands: CI runs the test command verbatim; the demo command parses."""

import re
import shlex
from pathlib import Path

import main
from config import is_legacy, show_default

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    """The two shell commands in the README's quick-start block, in order."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)\n(.*?)```", text, re.S).group(1)
    commands = [line.strip() for line in block.splitlines()
                if line.strip() and not line.strip().startswith("#")]
    assert len(commands) == 2, commands
    return commands


def test_ci_runs_the_readme_test_command():
    _, test_command = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci
    assert "pytest" in test_command


def test_demo_command_parses_and_is_valid():
    demo, _ = readme_commands()
    main_call = demo.split("&&")[-1]
    words = shlex.split(main_call)
    assert words[1] == "main.py"
    groups = main.parse_flags(words[2:])
    model_config = main.resolve_model(groups)
    assert groups["config"].dataset == "toyfaces"
    assert groups["cc_config"].is_pretrain is True
    assert model_config is not None and model_config.is_train is True


def flags(hidden):
    """The options of every flag group that --help lists (hidden=False) or leaves out."""
    return {option for module in main.FLAG_GROUPS.values() for action in module.parser._actions
            if is_legacy(action) == hidden for option in action.option_strings}


def test_every_flag_is_in_the_readme():
    text = (ROOT / "README.md").read_text()
    shown = flags(hidden=False)
    assert "--causal_model" in shown and "--dry_run" in shown
    missing = sorted(option for option in shown if f"`{option}`" not in text)
    assert not missing, missing


def test_every_flag_is_in_the_flag_tables():
    text = (ROOT / "docs" / "FLAGS.md").read_text()
    everything = set(main.option_arity())
    assert flags(hidden=True) and flags(hidden=True) < everything
    missing = sorted(option for option in everything if f"| `{option}` |" not in text)
    assert not missing, missing
    # each shown flag with its default, in every group that defines it
    wrong = sorted(f"{action.option_strings[0]} {show_default(action.default)}"
                   for module in main.FLAG_GROUPS.values() for action in module.parser._actions
                   if not is_legacy(action) and action.nargs != 0
                   and f"| `{action.option_strings[0]}` | {show_default(action.default)} |"
                   not in text)
    assert not wrong, wrong
