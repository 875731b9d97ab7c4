"""Train CausalGAN / CausalBEGAN: parse every flag group, build the Trainer, pretrain and/or train.

    python main.py --causal_model big_causal_graph --dataset toyfaces --is_pretrain True
    python main.py --causal_model big_causal_graph --is_pretrain True --model_type began --is_train True
    python main.py --load_path logs/<run>          # resume a run where it stopped
    python main.py @configs/toyfaces_demo.txt      # flags from a file (flags after it win)
    python main.py @logs/<run>/params.json         # a new run with a saved run's flags

Under IPython, ``%run main.py ...`` leaves ``trainer``, ``cc`` and ``model`` in the namespace.
"""

import difflib
import importlib
import json
import logging
import os
import random
import shlex
import signal
import socket
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported

import causal_began.config as began_flags
import causal_controller.config as cc_flags
import causal_dcgan.config as dcgan_flags
import config as generic_flags
from causal_graph import get_causal_graph, validate_graph
from errors import UserError
from utils import (
    PARAM_FILES,
    copy_code,
    load_configs,
    new_run_dir,
    remove_run_dir,
    resolve_run_dir,
    save_configs,
    setup_logging,
    write_failure,
)

log = logging.getLogger("main")

# The Trainer's figure-step metrics: the fidelity report's label consistency (the panel of
# readers). Named, not imported: the core never imports figure_scripts, the leaf that is
# built on it; the Trainer logs a warning and trains on when the metric cannot be measured.
FIGURE_METRICS = "figure_scripts.fidelity:training_scalars"
STUCK_STOP_SECONDS = 10.0  # a stop request waiting this long behind the input pipeline exits
_run_dir = None  # the run folder once known, for messages

# Every flag group, in the order --help shows them.
FLAG_GROUPS = {
    "config": generic_flags,
    "cc_config": cc_flags,
    "dcgan_config": dcgan_flags,
    "began_config": began_flags,
}
# Flags that say what to do now; a resumed run takes them from the new command line only.
ACTION_FLAGS = {"load_path", "pt_load_path", "dry_run"}
# Flags that shape the networks; they cannot change when a run is resumed.
ARCHITECTURE_FLAGS = {
    "causal_model", "model_type", "input_scale_size", "is_crop", "grayscale",
    "cc_n_layers", "cc_n_hidden", "critic_layers", "critic_hidden_size", "pt_factorized",
    "c_dim", "conv_hidden_num", "separate_labeler", "z_dim", "z_num",
    "df_dim", "gf_dim", "label_type", "type_input_to_generator", "stab_proj", "n_stab_proj",
    "label_specific_noise",
}


def full_help():
    """Help text of all four flag groups."""
    parts = [f"usage: {generic_flags.USAGE}", "", __doc__.strip(), "",
             "Boolean flags take a word: true/false, 1/0, yes/no (any case). A few flags "
             "of the reference that have no effect here are still accepted but not listed "
             "(docs/FLAGS.md names them).", ""]
    for module in FLAG_GROUPS.values():
        text = module.parser.format_help()
        parts.append(text.split("\n\n", 1)[1] if text.startswith("usage:") else text)
    return "\n".join(parts)


def option_arity():
    """{option string: whether it takes a value} over every flag group."""
    return {option: action.nargs != 0
            for module in FLAG_GROUPS.values()
            for action in module.parser._actions for option in action.option_strings}


def usage_error(message):
    """Print an argparse-style error and exit with code 2."""
    print(f"usage: {generic_flags.USAGE}\nmain.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_unknown(argv):
    """Words that no flag group understands: an error naming them, with the closest flag."""
    takes_value = option_arity()
    words = iter(argv)
    for word in words:
        if not word.startswith("-"):
            usage_error(f"unexpected word {word!r} (flags take the form --name value)")
        name = word.split("=", 1)[0]
        if name not in takes_value:
            close = difflib.get_close_matches(name, list(takes_value), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else "; see python main.py --help"
            usage_error(f"unrecognized flag {name}{hint}")
        if takes_value[name] and "=" not in word:
            next(words, None)  # its value; the group parsers check it


def explicit_flags(argv):
    """Destinations of the flags written on the command line."""
    return {word.split("=", 1)[0].lstrip("-") for word in argv if word.startswith("--")}


FLAG_FILE_PREFIX = "@"


def _words_of_text_file(path):
    """The words of a flag file: shell-like words, '#' starts a comment."""
    try:
        return shlex.split(path.read_text(), comments=True)
    except ValueError as err:  # an unclosed quote
        raise UserError(f"{FLAG_FILE_PREFIX}{path}: cannot read its flags ({err})") from None


def _words_of_saved_run(path):
    """Flags that recreate the run whose params.json is ``path`` (every group's saved
    flags, except what says what to do now and where the run lives)."""
    arity = option_arity()
    words = []
    for filename in PARAM_FILES.values():
        try:
            saved = json.loads((path.parent / filename).read_text())
        except FileNotFoundError:
            raise UserError(f"{FLAG_FILE_PREFIX}{path}: {filename} is missing beside it; give "
                            "the params.json of a run folder made by main.py") from None
        except json.JSONDecodeError as err:
            raise UserError(f"{path.parent / filename} is damaged ({err})") from None
        for key, value in saved.items():
            option = f"--{key}"
            if key in ACTION_FLAGS or key == "model_dir" or value is None:
                continue
            if not arity.get(option, False):  # unknown now, or a switch such as --dry_run
                continue
            words += [option, str(value)]
    return words


def expand_flag_files(argv, _seen=None):
    """Replace each ``@FILE`` word by the flags it holds, in place, so that flags written
    after it win (argparse keeps the last value). A text file holds flags as on a command
    line, any number per line, '#' comments allowed, and may name further @files; a
    ``params.json`` of a run folder gives that run's saved flags for a new run."""
    seen = set() if _seen is None else _seen
    out = []
    for word in argv:
        if not word.startswith(FLAG_FILE_PREFIX):
            out.append(word)
            continue
        path = Path(word[len(FLAG_FILE_PREFIX):]).expanduser()
        if not path.is_file():
            raise UserError(f"{word}: no such flag file (e.g. @configs/toyfaces_demo.txt, or "
                            "@logs/<run>/params.json)")
        key = path.resolve()
        if key in seen:
            raise UserError(f"{word}: flag files include each other in a loop")
        if path.suffix == ".json":
            out += _words_of_saved_run(path)
        else:
            out += expand_flag_files(_words_of_text_file(path), seen | {key})
    return out


def parse_flags(argv=None):
    """Parse every flag group of one command line: {group name: Namespace}."""
    argv = expand_flag_files(sys.argv[1:] if argv is None else list(argv))
    if "-h" in argv or "--help" in argv:
        print(full_help())
        sys.exit(0)
    check_unknown(argv)
    groups = {name: module.get_config(argv)[0] for name, module in FLAG_GROUPS.items()}
    groups["dcgan_config"].is_train = groups["began_config"].is_train
    return groups


def restore_flags(groups, argv):
    """For --load_path: take the run's saved flags, keeping explicit schedule/logging flags.

    Returns the run folder and its saved graph (or None for runs saved without one).
    """
    run_dir = resolve_run_dir(groups["config"].load_path)
    saved, saved_graph = load_configs(run_dir)
    explicit = explicit_flags(argv)
    for group, namespace in groups.items():
        for key, saved_value in saved[group].items():
            if key in ACTION_FLAGS or key == "model_dir":
                continue
            if key not in explicit:
                setattr(namespace, key, saved_value)
            elif key in ARCHITECTURE_FLAGS and getattr(namespace, key, None) != saved_value:
                raise UserError(
                    f"--{key} {getattr(namespace, key)!r} conflicts with {saved_value!r} saved "
                    f"in {run_dir}: the architecture of a resumed run cannot change. Drop "
                    f"--{key}, or start a new run and load only its controller with "
                    "--pt_load_path")
    return run_dir, saved_graph


def resolve_model(groups):
    """Pick the image model's flags and batch size from --model_type, as the reference did."""
    config, cc_config = groups["config"], groups["cc_config"]
    config = generic_flags.gpu_logic(config)
    if config.model_type == "began":
        model_config = groups["began_config"]
    elif config.model_type == "dcgan":
        model_config = groups["dcgan_config"]
    else:
        model_config = None
        if groups["began_config"].is_train:
            raise UserError("--is_train True needs an image model: add --model_type began "
                            "(CausalBEGAN) or --model_type dcgan (CausalGAN)")
    if model_config is not None:
        size = config.input_scale_size
        if size < 8 or size & (size - 1):
            raise UserError(f"--input_scale_size {size} must be a power of two >= 8 "
                            "(8, 16, 32, 64, 128...)")
        if getattr(model_config, "label_specific_noise", False):
            raise UserError("--label_specific_noise True is not implemented (nor was it in "
                            "the reference); leave it False")
        cc_config.batch_size = model_config.batch_size
    config.batch_size = cc_config.batch_size
    return model_config


def seed_everything(seed):
    """Seed Python, numpy and TensorFlow."""
    import numpy as np
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


def figure_metrics(trainer) -> dict:
    """{TensorBoard tag: value} of ``FIGURE_METRICS`` for ``trainer`` (loaded on first use)."""
    module, _, name = FIGURE_METRICS.partition(":")
    return getattr(importlib.import_module(module), name)(trainer)


def get_trainer(argv=None, figure_metrics=figure_metrics):
    """Parse the command line, validate it, create (or reopen) the run folder, build the Trainer.

    Nothing is written before the flags and the graph are valid, and a new run folder is
    removed again when building the Trainer fails. ``figure_metrics`` goes to the Trainer
    (None: no figure-step metrics).
    """
    argv = expand_flag_files(sys.argv[1:] if argv is None else list(argv))
    groups = parse_flags(argv)
    config, cc_config = groups["config"], groups["cc_config"]
    setup_logging(config.log_level)
    resumed_graph = None
    if config.load_path:
        run_dir, resumed_graph = restore_flags(groups, argv)
    model_config = resolve_model(groups)
    if resumed_graph is not None:
        graph = validate_graph(resumed_graph, source=f"the graph saved in {run_dir}")
    else:
        graph = get_causal_graph(config.causal_model)
    if cc_config.pt_load_path and config.load_path:
        raise UserError("give either --load_path (a whole run) or --pt_load_path (a "
                        "controller alone), not both")

    created = None
    if config.load_path:
        config.model_dir = str(run_dir)
    else:
        created = new_run_dir(config.log_dir, config.dataset, config.descrip)
        config.model_dir = str(created)
    try:
        seed_everything(config.seed)
        from trainer import Trainer

        trainer = Trainer(config, cc_config, model_config, graph,
                          figure_metrics=figure_metrics)
        if created is not None:
            save_configs(created, groups, graph)
            copy_code(created)
    except BaseException:
        if created is not None:
            remove_run_dir(created)
        raise
    log.info("run folder: %s", config.model_dir)
    return trainer


def main(trainer):
    """Pretrain and/or train as the flags ask."""
    if trainer.config.dry_run:
        log.info("dry run: everything is built and loaded, nothing is trained")
        return
    did_something = False
    if trainer.cc_config.is_pretrain:
        trainer.pretrain_loop()
        did_something = True
    if trainer.model_config is not None and trainer.model_config.is_train:
        trainer.train_loop()
        did_something = True
    if not did_something:
        log.info("nothing to train: add --is_pretrain True (controller) and/or "
                 "--model_type began --is_train True (image model)")


def explain(err):
    """A UserError for an error caused by the data or the machine rather than by a bug:
    a data set none of whose images can be read, a full disk, a folder that cannot be
    written. None for anything else (which keeps its traceback)."""
    loader = sys.modules.get("data_loader")  # only errors of a pipeline it built
    found = loader.unreadable_data_error(err) if loader is not None else None
    if found is None:
        what = getattr(err, "filename", None) or "the run's files"
        found = write_failure(err, what)
    return found


def run(argv=None):
    """Command-line entry point: 0 on success, 2 on a user error, 130/143 when interrupted."""
    global _run_dir
    trainer = None
    try:
        trainer = get_trainer(argv)
        _run_dir = trainer.config.model_dir
        main(trainer)
    except UserError as err:
        print(f"main.py: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("main.py: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_request:  # --help, usage errors, SIGTERM during training
        code = exit_request.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except Exception as err:
        explained = explain(err)
        if explained is None:
            raise
        print(f"main.py: error: {explained}", file=sys.stderr)
        return 2
    finally:
        writer = getattr(trainer, "summary_writer", None)
        if writer is not None:
            try:
                writer.flush()
            except Exception as err:  # e.g. the disk is full: the error above says so
                log.warning("summaries not flushed: %s", str(err).splitlines()[0][:200])
    return 0


_INPUT_PIPELINE_FILES = (
    os.path.join("tensorflow", "python", "data", "ops", ""),
    os.path.join("tensorflow", "python", "distribute", "input_lib"),
)


def waiting_for_input(frame) -> bool:
    """Whether a thread's stack (its innermost frame) is inside a tf.data iterator."""
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in _INPUT_PIPELINE_FILES):
            return True
        frame = frame.f_back
    return False


def start_stop_watchdog(grace: float = STUCK_STOP_SECONDS):
    """End the process when a stop request (Ctrl-C, SIGTERM) is stuck behind the input
    pipeline; returns the watching thread (None when it cannot watch).

    Python runs signal handlers only between bytecodes of the main thread, so a loop
    blocked in a tf.data iterator (say, one searching a folder of unreadable or slow
    images) would not notice a stop request for as long as it blocks. This thread hears
    of the signal at once through ``signal.set_wakeup_fd``; if the main thread is still
    inside the input pipeline ``grace`` seconds later, it prints what happened and exits
    with 128 + the signal number. A step or a checkpoint in progress is never inside the
    input pipeline, so it is never cut short: the loops stop those themselves.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    main_id = threading.main_thread().ident

    def watch(keep_open=writer):  # the wakeup fd must stay open as long as we watch
        signum, since = None, None
        while True:
            reader.settimeout(None if signum is None else 0.25)
            try:
                received = reader.recv(64)
                if not received:
                    return  # the writing end was closed: nothing more to hear
                for byte in received:
                    if signum is None and byte in (signal.SIGINT, signal.SIGTERM):
                        signum = byte
            except TimeoutError:
                pass
            if signum is None:
                continue
            if not waiting_for_input(sys._current_frames().get(main_id)):
                since = None
                continue
            since = since or time.monotonic()
            if time.monotonic() - since >= grace:
                where = f"; resume with --load_path {_run_dir}" if _run_dir else ""
                print(f"main.py: stopped by {signal.Signals(signum).name} while waiting for the "
                      f"input pipeline for {grace:.0f} s: nothing was saved after the last "
                      f"checkpoint{where}", file=sys.stderr, flush=True)
                os._exit(128 + signum)

    thread = threading.Thread(target=watch, name="stop-watchdog", daemon=True)
    thread.start()
    return thread


if __name__ == "__main__":
    if "IPython" in sys.modules and hasattr(sys.modules["IPython"], "get_ipython") \
            and sys.modules["IPython"].get_ipython() is not None:
        # %run main.py ...: leave the trainer and its parts in the namespace.
        trainer = get_trainer()
        cc = trainer.cc
        model = trainer.model
        main(trainer)
    else:
        start_stop_watchdog()
        exit_code = run()
        # Everything is saved and flushed by now. Tearing down TensorFlow's objects at
        # interpreter exit can take tens of seconds, so leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(exit_code)
