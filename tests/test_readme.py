"""The README's two commands: CI runs the test command verbatim; the demo command parses."""

import re
import shlex
from pathlib import Path

import main

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


def test_every_flag_is_in_the_readme():
    text = (ROOT / "README.md").read_text()
    missing = [option for option in main.option_arity()
               if option.startswith("--") and f"`{option}`" not in text]
    assert not missing, missing
