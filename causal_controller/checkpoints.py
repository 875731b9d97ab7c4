"""The controller's own checkpoints: ``<dir>/CC-Model-<step>.index`` / ``.data-*``, renamed
into place once complete, so an ``.index`` file always belongs to a whole checkpoint;
``save_controller``, ``load_controller``, ``latest_controller_checkpoint``,
``resume_newer_checkpoint``, ``CheckpointWriter`` (the compiled writer)."""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil

import tensorflow as tf

from errors import UserError
from utils import remove_leftovers, write_failure

log = logging.getLogger(__name__)

_GRAPH_KEY = "graph/.ATTRIBUTES/VARIABLE_VALUE"
_PREFIX = "CC-Model"


def _checkpoint(cc, pretrainer=None, graph_spec=None) -> tf.train.Checkpoint:
    parts = {"controller": cc}
    if pretrainer is not None:
        parts["pretrainer"] = pretrainer
    if graph_spec is not None:
        parts["graph"] = tf.Variable(graph_spec, trainable=False)
    return tf.train.Checkpoint(**parts)


class CheckpointWriter:
    """Writes the controller's checkpoint (as ``_checkpoint(cc, pretrainer)`` would, the
    same files) with one compiled call, much faster than ``tf.train.Checkpoint.write`` run
    eagerly, which reads each variable with its own op and walks the object graph anew
    each time (measured for big_causal_graph in docs/SPEED.md, "The whole pretraining
    loop against its bare step"). It is traced once, which costs more than one eager
    write, so it pays for loops that save often (``pretrain_loop``). The objects'
    structure must not change after the first call (their variables are all built at
    construction)."""

    def __init__(self, cc, pretrainer=None):
        self._checkpoint = _checkpoint(cc, pretrainer, cc.graph_spec)
        self._write = tf.function(self._checkpoint.write,
                                  input_signature=[tf.TensorSpec([], tf.string)])

    def __call__(self, file_prefix: str) -> str:
        return self._write(tf.constant(file_prefix)).numpy().decode()


def save_controller(cc, pretrainer, directory: str, step: int,
                    writer: CheckpointWriter | None = None) -> str:
    """Write ``<directory>/CC-Model-<step>`` (.index + .data files) and return the prefix.

    Holds the controller, its step, the graph description and, when a pretrainer is
    given, the critic(s) and both optimizers' slots. The files are written in a hidden
    temporary folder and renamed into place, the .index last, so a run killed during the
    write leaves no checkpoint that looks complete (the next save removes the leftovers).
    A full disk or a read-only folder is a UserError. ``writer``: a CheckpointWriter of
    the same cc and pretrainer, to write with one compiled call.
    """
    name = f"{_PREFIX}-{int(step)}"
    prefix = os.path.join(directory, name)
    partial = os.path.join(directory, f".{name}.partial-{os.getpid()}")
    try:
        os.makedirs(directory, exist_ok=True)
        remove_leftovers(directory)
        os.makedirs(partial, exist_ok=True)
        write = writer or _checkpoint(cc, pretrainer, cc.graph_spec).write
        written = write(os.path.join(partial, name))
        if os.path.exists(prefix + ".index"):
            os.remove(prefix + ".index")  # an older write of this step stops counting first
        for data in glob.glob(glob.escape(written) + ".data-*"):
            os.replace(data, prefix + data[len(written):])
        os.replace(written + ".index", prefix + ".index")
    except (OSError, tf.errors.OpError) as err:
        failure = write_failure(err, f"the controller checkpoint {prefix}")
        if failure is None:
            raise
        raise failure from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return prefix


def checkpoint_step(prefix: str) -> int:
    """The step of a CC-Model-<step> prefix."""
    return int(os.path.basename(prefix).rsplit("-", 1)[1])


def _readable(prefix: str) -> bool:
    """Whether every tensor of a checkpoint can be read (a half-written one cannot)."""
    if not glob.glob(glob.escape(prefix) + ".data-*"):
        return False
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except (tf.errors.OpError, ValueError):
        return False
    return True


def latest_controller_checkpoint(directory: str) -> str | None:
    """The prefix of the highest-step readable CC-Model-<step> in a folder (or its
    checkpoints/); unreadable ones (half-written by an older version) are skipped."""
    found = []
    for folder in (directory, os.path.join(directory, "checkpoints")):
        for index in glob.glob(os.path.join(glob.escape(folder), f"{_PREFIX}-*.index")):
            match = re.fullmatch(rf"{_PREFIX}-(\d+)\.index", os.path.basename(index))
            if match:
                found.append((int(match.group(1)), index[: -len(".index")]))
        if found:
            break
    for _, prefix in sorted(found, reverse=True):
        if _readable(prefix):
            return prefix
        log.warning("skipping the controller checkpoint %s: it cannot be read", prefix)
    return None


def load_controller(cc, path: str, pretrainer=None) -> str:
    """Restore ``cc`` (and the pretrainer's critics/optimizers if given) from a checkpoint
    prefix ``.../CC-Model-20000`` or a folder (its newest CC-Model). Returns the prefix."""
    path = os.fspath(path)
    prefix = latest_controller_checkpoint(path) if os.path.isdir(path) else path
    if prefix is None or not os.path.exists(prefix + ".index"):
        raise UserError(
            f"No controller checkpoint at {path!r}: expected a prefix such as "
            f"'.../controller/checkpoints/{_PREFIX}-20000' (with its .index file) or a folder "
            f"holding {_PREFIX}-<step>.index files. Check --pt_load_path.")
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as err:
        raise UserError(f"Cannot read the controller checkpoint {prefix!r}: {err}") from err
    if reader.has_tensor(_GRAPH_KEY):
        saved = reader.get_tensor(_GRAPH_KEY)
        saved = saved.decode() if isinstance(saved, bytes) else str(saved)
        if saved != cc.graph_spec:
            raise UserError(
                f"The controller checkpoint {prefix!r} was trained on another causal graph or "
                f"controller shape.\n  checkpoint: {saved}\n  this run:   {cc.graph_spec}\n"
                "Use the same --causal_model, --cc_n_layers and --cc_n_hidden, or pretrain anew.")
    status = _checkpoint(cc, pretrainer).read(prefix)
    try:
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as err:
        raise UserError(
            f"The controller checkpoint {prefix!r} does not hold every variable of this "
            f"controller{' and pretrainer' if pretrainer is not None else ''} ({err}). "
            "Was it written by another model or version?") from err
    status.expect_partial()
    return prefix


def resume_newer_checkpoint(cc, pretrainer, directory: str) -> str | None:
    """Load the newest controller checkpoint in ``directory`` if it is ahead of ``cc.step``.

    A run killed between its run checkpoints left its controller checkpoints (written at
    every TVD check) further on: pretraining continues from there. Returns the prefix
    loaded, or None.
    """
    if not os.path.isdir(directory):
        return None
    prefix = latest_controller_checkpoint(directory)
    if prefix is None or checkpoint_step(prefix) <= int(cc.step.numpy()):
        return None
    load_controller(cc, prefix, pretrainer)
    log.info("pretraining continues from %s (step %d), newer than the run's checkpoint",
             prefix, checkpoint_step(prefix))
    return prefix
