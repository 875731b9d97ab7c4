"""Open a run folder written by main.py for reading: its flags, graph, controller and model.

    run = open_run("logs/toyfaces_1203_101500")
    run.config, run.cc_config, run.model_config   the saved flags (argparse Namespaces)
    run.label_names, run.graph                    the controller's nodes and the DAG
    run.cc, run.model                             restored; model is None for a
                                                  controller-only run
    run.step, run.controller_step, run.model_step the newest checkpoint's steps
    run.overall_step(), run.figure_ext            as the Trainer names them
    run.model_dir, run.dataset_dir, run.checkpoint
    run.attr                                      the attribute table, or None (lazy)
    run.scm                                       the toy faces' exact model, or None
    run.generate(labels, z_gen)                   images [N, H, W, C] in [0, 255] (numpy)

Reading only: the saved flags are read from params.json and the per-model
``*_params.json`` (flags added since take their defaults), the graph from graph.json, and
the controller and image model are built as the Trainer builds them and restored from the
newest checkpoint of ``checkpoints/``. No command line is parsed, nothing is written into
the run folder (no TensorBoard writer, no figures), and neither the data set's images
nor its attribute file is needed: ``attr`` is read on first use when the file is there.
A bad folder or checkpoint is a ``UserError`` that says what to do.

This module is the core's: it imports nothing from figure_scripts (which builds on it).
"""

from __future__ import annotations

import json
import logging
from argparse import Namespace
from functools import cached_property
from pathlib import Path

import numpy as np
import tensorflow as tf

import causal_began.config as began_flags
import causal_controller.config as cc_flags
import causal_dcgan.config as dcgan_flags
import config as generic_flags
from causal_graph import get_causal_graph, validate_graph
from errors import UserError
from image_models import generate_images, make_model
from utils import GRAPH_FILE, PARAM_FILES

log = logging.getLogger(__name__)

FLAG_MODULES = {"config": generic_flags, "cc_config": cc_flags,
                "dcgan_config": dcgan_flags, "began_config": began_flags}
MODEL_GROUPS = {"began": "began_config", "dcgan": "dcgan_config"}  # --model_type -> group
SCM_FILE = "scm.json"  # the toy faces' exact causal model, beside their attribute file


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is damaged ({err}): {what} cannot be read. Restore the file "
                        "from a copy, or open another run.") from None


def read_flags(folder: Path) -> dict[str, Namespace]:
    """Every flag group of a run folder: the defaults of today's flags, overridden by the
    values saved in the run (params.json, cc_params.json, dcgan_params.json,
    began_params.json). A missing per-model file leaves that group at its defaults."""
    groups = {}
    for group, filename in PARAM_FILES.items():
        values = vars(FLAG_MODULES[group].parser.parse_known_args([])[0])
        saved = _read_json(folder / filename, "its flags")
        if saved is None and group in ("config", "cc_config"):
            raise UserError(f"{folder} is not a run folder: {filename} is missing. Give a "
                            "folder that main.py created under logs/ (logs/<dataset>_<time>).")
        if saved is not None and not isinstance(saved, dict):
            raise UserError(f"{folder / filename} is damaged (not a table of flags).")
        values.update(saved or {})
        groups[group] = Namespace(**values)
    return groups


def read_graph(folder: Path, config: Namespace) -> list[tuple[str, list[str]]]:
    """The run's causal graph: graph.json, or for runs saved without one --causal_model."""
    saved = _read_json(folder / GRAPH_FILE, "its causal graph")
    if saved is not None:
        return validate_graph(saved, source=f"the graph saved in {folder}")
    if not config.causal_model:
        raise UserError(f"{folder} has no {GRAPH_FILE} and no --causal_model in its flags: its "
                        "causal graph is unknown.")
    return get_causal_graph(config.causal_model)


def find_dataset_dir(folder: Path, config: Namespace) -> Path:
    """The run's data set folder (``--data_dir``/``--dataset``). A relative --data_dir is
    looked for from the working directory and from the folder above the run's log folder
    (where main.py was started for ``logs/<run>``); the first that exists, else the first."""
    data_dir = Path(str(config.data_dir)).expanduser()
    if data_dir.is_absolute():
        return data_dir / config.dataset
    candidates = [Path.cwd() / data_dir / config.dataset,
                  folder.parent.parent / data_dir / config.dataset]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def newest_checkpoint(folder: Path) -> str:
    """The prefix of the newest checkpoint in ``folder/checkpoints`` (UserError if none)."""
    checkpoints = folder / "checkpoints"
    path = tf.train.latest_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if path is None:
        raise UserError(f"{folder} holds no checkpoint (nothing in {checkpoints}): the run "
                        "stopped before saving one. Train it further with python main.py "
                        f"--load_path {folder}, or open another run.")
    return path


class SavedRun:
    """A run folder opened for reading (see the module docstring). Build it with
    ``open_run(path)``."""

    def __init__(self, folder: Path, groups: dict[str, Namespace], graph, checkpoint: str):
        self.model_dir = folder
        self.groups = groups
        self.config = groups["config"]
        self.cc_config = groups["cc_config"]
        model_type = str(self.config.model_type or "")
        self.model_type = model_type
        self.model_config = groups[MODEL_GROUPS[model_type]] if model_type else None
        self.dataset_dir = find_dataset_dir(folder, self.config)
        self.checkpoint = checkpoint
        seed = int(self.config.seed or 0)  # the Trainer's seeds; the weights are restored

        from causal_controller.CausalController import CausalController

        if self.model_config is not None:  # the Trainer's rule: the model's batch size
            self.cc_config.batch_size = self.model_config.batch_size
        self.cc = CausalController(graph, self.cc_config, seed=seed)
        self.graph = [(node, list(parents)) for node, parents in self.cc.graph]
        self.label_names = list(self.cc.label_names)
        self.model = None
        if self.model_config is not None:
            channels = 1 if self.config.grayscale else int(self.model_config.c_dim)
            self.model = make_model(model_type, self.model_config, self.label_names,
                                    int(self.config.input_scale_size), channels,
                                    controller=self.cc, data_format="channels_last",
                                    seed=seed + 11)
        self._restore()
        if getattr(self.model, "draw_bn_batches", 0):
            self.weigh_rare_labels()

    def _restore(self) -> None:
        parts = {"controller": self.cc}
        if self.model is not None:
            parts["model"] = self.model
        try:
            status = tf.train.Checkpoint(**parts).read(self.checkpoint)
            status.assert_existing_objects_matched()
            status.expect_partial()  # the fixed figure inputs, the pretrainer's critics
        except (AssertionError, ValueError, IndexError, tf.errors.OpError) as err:
            # IndexError: a data file cut short ("Read less bytes than requested")
            first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            raise UserError(
                f"The checkpoint {self.checkpoint} cannot be read into the model that this "
                f"run's flags describe ({first}). The checkpoint may be damaged or cut short "
                "(a full disk?), or the run's *_params.json edited: remove the broken "
                "checkpoint files so that the previous one is used, or open another run."
            ) from None
        log.info("opened %s at %s", self.model_dir, self.checkpoint)

    def weigh_rare_labels(self) -> None:
        """--rare_label_rate / --rare_pair_rate: the model's label weights as in training
        (the label mix of G's training batches, which --draw_bn_batches' statistics are
        taken over; done on opening a run that draws so): from the data set's attribute
        table, as the Trainer does, or, when the data are not on this machine, from
        20,000 of the controller's labels."""
        rate = float(getattr(self.config, "rare_label_rate", 0.0) or 0.0)
        pair_rate = float(getattr(self.config, "rare_pair_rate", 0.0) or 0.0)
        if self.model is None or (rate <= 0.0 and pair_rate <= 0.0):
            return
        import data_loader
        from nets import draw_controller_labels

        attr = self.attr
        table = (attr[self.label_names].to_numpy(np.float32)
                 if attr is not None and set(self.label_names) <= set(attr.columns) else None)
        if table is None:
            log.info("%s: no attribute table here; the rare-label weights come from the "
                     "controller's labels", self.model_dir)
            rng = tf.random.Generator.from_seed(int(self.config.seed or 0))
            table = np.round(draw_controller_labels(self.cc, rng, 20000).numpy())
        weights = data_loader.rare_weights(table, rate, pair_rate)
        if weights is not None:
            self.model.label_weights = tf.constant(weights, tf.float32)

    # -- steps
    @property
    def controller_step(self) -> int:
        return int(self.cc.step.numpy())

    @property
    def model_step(self) -> int:
        return int(self.model.step.numpy()) if self.model is not None else 0

    @property
    def step(self) -> int:
        """The overall step (controller + image model), which names the run's figures."""
        return self.controller_step + self.model_step

    def overall_step(self) -> int:
        """``step``, under the Trainer's name (the figure functions take either)."""
        return self.step

    @property
    def figure_ext(self) -> str:
        """The run's --figure_ext (the suffix of its figures)."""
        return str(getattr(self.config, "figure_ext", "") or "pdf")

    @property
    def batch_size(self) -> int:
        return int(self.cc_config.batch_size)

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(H, W, C) of the model's images, or None for a controller-only run."""
        if self.model is None:
            return None
        size = int(self.config.input_scale_size)
        return (size, size, int(self.model.channels))

    # -- the data set, read only when asked for
    @cached_property
    def attr(self):
        """The data set's attribute table (0/1, one column per attribute), or None when
        the run's data folder or its attribute file is not on this machine."""
        import data_loader

        try:
            path = data_loader.find_attribute_file(self.dataset_dir)
        except UserError:
            return None
        return data_loader.read_attributes(path)

    @cached_property
    def scm(self):
        """The exact causal model of the data (toy faces' scm.json beside the data), or for
        a toy-faces run whose data folder is absent the built-in model they are rendered
        from; None for other data sets."""
        import toy_faces

        path = self.dataset_dir / SCM_FILE
        if path.is_file():
            try:
                return toy_faces.ToyFacesSCM.from_json(path)
            except (ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
                log.warning("%s cannot be read (%s): no exact truth", path, err)
                return None
        if str(self.config.dataset) == "toyfaces":
            return toy_faces.default_scm()
        return None

    # -- images
    def generate(self, labels, z_gen) -> np.ndarray:
        """Images [N, H, W, C] in [0, 255] (float32 numpy) for controller labels [N, n] and
        image noise z_gen [N, z_dim], in chunks of the batch size
        (``image_models.generate_images``)."""
        if self.model is None:
            raise UserError(f"{self.model_dir} trained the controller only (no image model): "
                            "it has labels but no images. Open a run made with --model_type "
                            "dcgan or began.")
        images = generate_images(self.model, labels, z_gen, self.batch_size)
        if not len(images):
            return np.zeros((0, *self.image_shape), np.float32)
        return images

    def __repr__(self) -> str:
        kind = self.model.name if self.model is not None else "controller only"
        return (f"SavedRun({str(self.model_dir)!r}, {kind}, step {self.step}, "
                f"labels {self.label_names})")


def open_run(path) -> SavedRun:
    """Open the run folder ``path`` (logs/<run>) for reading, restored from its newest
    checkpoint; UserError for a path that is not a run folder or a checkpoint that cannot
    be read."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise UserError(f"{path} {what}. Give a run folder written by main.py, such as "
                        "logs/toyfaces_<MMDD_HHMMSS>.")
    folder = folder.resolve()
    if not (folder / PARAM_FILES["config"]).is_file():
        raise UserError(f"{path} is not a run folder (it has no params.json). Give a folder "
                        "that main.py created under logs/.")
    groups = read_flags(folder)
    model_type = str(groups["config"].model_type or "")
    if model_type and model_type not in MODEL_GROUPS:
        raise UserError(f"{folder / 'params.json'}: model_type {model_type!r} is unknown "
                        f"(known: {', '.join(MODEL_GROUPS)}).")
    graph = read_graph(folder, groups["config"])
    checkpoint = newest_checkpoint(folder)
    return SavedRun(folder, groups, graph, checkpoint)
