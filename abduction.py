"""Abduction for counterfactuals: recover a face's image noise and the controller's noise.

    encoder = get_encoder(trainer)                     # cached in <run>/counterfactual/encoder/
    fit = abduct(model, encoder, images, labels01)     # z_gen of real faces, in seconds
    noise = controller_noise(cc, labels01, seed=0)     # node noise that reproduces the labels
    cf = counterfactual_labels(cc, labels01, noise, {"Male": 0})

1. The encoder (``Encoder``) inverts G: a small CNN maps an image to G's image noise z_gen
   (tanh, the range of U[-1, 1]) and one logit per label. It is trained on G's own
   samples (G is fixed, so they are free): labels from the controller (a share replaced by
   independent fair bits, so that rare combinations are seen), z_gen ~ U[-1, 1], the
   image G draws; the loss is the squared error on z_gen plus the labels' cross-entropy.
   It is saved with the step of the model it inverts and the steps it was trained for, and
   trained again when the model's step changes or more steps are asked for.
2. Refinement: a few Adam steps on z_gen (started at the encoder's guess, kept in
   [-1, 1]) minimise the squared pixel error between G(labels, z_gen) and the face,
   with the face's labels fixed (the data set's, or the encoder's reading).
3. The controller's noise: for each node, candidates of its noise are drawn and the first
   whose rounded label, from the face's parent labels, equals the face's label is kept
   (one draw from the noise's posterior; the node's most confident candidate when none
   matches). A counterfactual sets the intervened nodes, recomputes their descendants from
   that noise and the changed parents, and keeps every other label. A descendant whose
   parents keep their labels in a row keeps its label there too: the noise reproduces it
   anyway, except where no candidate matched, and there the face's label is the evidence.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

import causal_graph
from errors import UserError
from nets import to_unit

ENCODER_DIR = Path("counterfactual") / "encoder"
WEIGHTS_FILE = "encoder.weights.h5"
INFO_FILE = "encoder.json"
RANDOM_LABEL_SHARE = 0.3  # of the encoder's training labels: independent fair bits
CANDIDATES = 256  # noise candidates per face and node
ENCODER_STEPS = 1500  # the encoder's training steps (docs/COUNTERFACTUALS.md measures these)
REFINE_STEPS = 100    # Adam steps on each face's z_gen after the encoder
REFINE_LR = 0.1       # and their learning rate

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the encoder
def build_encoder(image_size: int, channels: int, z_dim: int, n_labels: int, width: int = 32):
    """Keras model: images in [-1, 1] -> (z_gen [N, z_dim] in (-1, 1), label logits)."""
    import keras
    from keras import layers

    inputs = keras.Input((image_size, image_size, channels))
    h = inputs
    side, filters = image_size, width
    while side > 4:
        h = layers.Conv2D(filters, 4, strides=2, padding="same")(h)
        h = layers.LeakyReLU(0.2)(h)
        side, filters = side // 2, min(filters * 2, 8 * width)
    h = layers.Dense(512)(layers.Flatten()(h))
    h = layers.LeakyReLU(0.2)(h)
    z = layers.Dense(z_dim, activation="tanh", name="z_gen")(h)
    logits = layers.Dense(n_labels, name="label_logits")(h)
    return keras.Model(inputs, [z, logits], name="encoder")


@dataclass
class Encoder:
    """A trained inverse of one run's G, and what it was trained on."""

    network: object
    info: dict

    def __call__(self, images) -> tuple[np.ndarray, np.ndarray]:
        """(z_gen [N, z_dim], label logits [N, n]) for images [N, H, W, C] in [0, 255]."""
        z, logits = [], []
        for start in range(0, len(images), 256):
            chunk = to_unit(tf.constant(np.asarray(images[start:start + 256], np.float32)))
            a, b = self.network(chunk, training=False)
            z.append(a.numpy())
            logits.append(b.numpy())
        return np.concatenate(z), np.concatenate(logits)

    def save(self, folder) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.network.save_weights(str(folder / WEIGHTS_FILE))
        (folder / INFO_FILE).write_text(json.dumps(self.info, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder) -> Encoder:
        info = json.loads((Path(folder) / INFO_FILE).read_text())
        network = build_encoder(info["image_size"], info["channels"], info["z_dim"],
                                len(info["label_names"]), info["width"])
        network.load_weights(str(Path(folder) / WEIGHTS_FILE))
        return cls(network, info)


def training_labels(cc, n: int, rng: tf.random.Generator) -> tf.Tensor:
    """[n, labels] in {0, 1}: the controller's rounded labels, RANDOM_LABEL_SHARE of the
    rows replaced by fair bits."""
    noise = rng.uniform([n, len(cc.label_names), cc.n_hidden], -1.0, 1.0)
    labels = tf.round(cc.sample(noise=noise)[0])
    bits = tf.round(rng.uniform(tf.shape(labels)))
    keep = rng.uniform([n, 1]) >= RANDOM_LABEL_SHARE
    return tf.where(keep, labels, bits)


def train_encoder(model, cc, image_size: int, channels: int, *, steps: int = ENCODER_STEPS,
                  batch: int = 64, learning_rate: float = 1e-3, seed: int = 0,
                  progress: bool = True, model_step: int = 0) -> Encoder:
    """An encoder trained on ``steps`` batches of G's samples (module docstring, 1)."""
    import keras
    from tqdm import tqdm

    keras.utils.set_random_seed(seed)
    z_dim, names = int(model.z_dim), list(cc.label_names)
    network = build_encoder(image_size, channels, z_dim, len(names))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1))
    optimizer = keras.optimizers.Adam(schedule)
    rng = tf.random.Generator.from_seed(seed + 17)
    batch = max(int(model.batch_size), batch // int(model.batch_size) * int(model.batch_size))

    @tf.function
    def step():
        labels = training_labels(cc, batch, rng)
        z = rng.uniform([batch, z_dim], -1.0, 1.0)
        x = to_unit(model.generate(labels, z, round_labels=True))
        with tf.GradientTape() as tape:
            z_hat, logits = network(x, training=True)
            z_loss = tf.reduce_mean(tf.square(z_hat - z))
            label_loss = tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
            loss = z_loss + label_loss
        grads = tape.gradient(loss, network.trainable_variables)
        optimizer.apply_gradients(zip(grads, network.trainable_variables, strict=True))
        return z_loss, label_loss

    start = time.perf_counter()
    history = []
    bar = tqdm(range(steps), desc="counterfactual: training the encoder on G's samples",
               disable=not progress, dynamic_ncols=True)
    for i in bar:
        z_loss, label_loss = step()
        if i % 50 == 0 or i == steps - 1:
            history.append([i, float(z_loss), float(label_loss)])
            bar.set_postfix(z=f"{history[-1][1]:.4f}", labels=f"{history[-1][2]:.4f}")
    bar.close()
    info = {"image_size": int(image_size), "channels": int(channels), "z_dim": z_dim,
            "label_names": names, "width": 32, "steps": int(steps), "batch": int(batch),
            "learning_rate": learning_rate, "seed": int(seed), "model_step": int(model_step),
            "random_label_share": RANDOM_LABEL_SHARE,
            "seconds": round(time.perf_counter() - start, 1),
            "final_z_mse": history[-1][1] if history else None,
            "final_label_loss": history[-1][2] if history else None, "history": history}
    return Encoder(network, info)


def writable(folder) -> bool:
    """Whether ``folder`` can be made and written (its nearest existing ancestor is
    writable)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK)


def get_encoder(trainer, *, steps: int = ENCODER_STEPS, retrain: bool = False, seed: int = 0,
                progress: bool = True, folder=None, save: bool = True) -> Encoder:
    """The run's cached encoder (``<run>/counterfactual/encoder/``), trained first when
    missing, made for another step of the model, trained for fewer than ``steps`` steps,
    or ``retrain``; a newly trained one is written to the cache unless ``save`` is False
    or the folder cannot be written (then it is kept in memory and a warning says so).
    ``trainer``: a ``saved_run.SavedRun`` (or anything with its ``model``, ``cc``,
    ``config``, ``model_dir``, ``model_step``)."""
    model = getattr(trainer, "model", None)
    if model is None:
        raise UserError("This run has no image model (it trained the controller only); "
                        "counterfactual images need a run made with --model_type began "
                        "(or dcgan).")
    if not hasattr(model, "z_dim"):
        raise UserError("This run's image model takes no image noise z_gen to abduct.")
    folder = Path(folder) if folder is not None else Path(trainer.model_dir) / ENCODER_DIR
    size, channels = int(trainer.config.input_scale_size), 1 if trainer.config.grayscale else 3
    step = int(trainer.model_step)
    if not retrain and (folder / INFO_FILE).is_file():
        info = json.loads((folder / INFO_FILE).read_text())
        if (info.get("model_step") == step and info.get("image_size") == size
                and info.get("label_names") == list(trainer.cc.label_names)
                and info.get("steps", 0) >= steps):
            return Encoder.load(folder)
    in_memory = f"{folder} cannot be written: the counterfactuals' encoder is kept in memory " \
                "(trained again in each session)"
    if save and not writable(folder):
        log.warning(in_memory)
        save = False
    encoder = train_encoder(model, trainer.cc, size, channels, steps=steps, seed=seed,
                            progress=progress, model_step=step)
    if save:
        try:
            encoder.save(folder)
        except OSError as err:
            log.warning("%s (%s)", in_memory, err)
    return encoder


# ----------------------------------------------------------------------------- refinement
@dataclass
class Abduction:
    """The image noise of k faces and how well G redraws them from it."""

    z_gen: np.ndarray           # [k, z_dim] refined
    z_encoded: np.ndarray       # [k, z_dim] the encoder's guess
    reconstruction: np.ndarray  # [k, H, W, C] in [0, 255]
    mse: np.ndarray             # [steps + 1] mean squared pixel error (pixels in [0, 1])
    seconds: float


def refine(model, images, labels01, z0, *, steps: int = REFINE_STEPS,
           lr: float = REFINE_LR) -> Abduction:
    """Adam on z_gen from ``z0`` so that G(labels01, z_gen) redraws ``images`` (module
    docstring, 2). All faces are refined together (G's batch statistics see them all)."""
    import keras

    start = time.perf_counter()
    target = tf.constant(np.asarray(images, np.float32) / 255.0)
    labels = tf.constant(np.asarray(labels01, np.float32))
    z = tf.Variable(np.asarray(z0, np.float32))
    optimizer = keras.optimizers.Adam(lr)

    def error():
        drawn = model.generate(labels, z, round_labels=True)
        return tf.reduce_mean(tf.square(drawn / 255.0 - target)), drawn

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss, _ = error()
        optimizer.apply_gradients([(tape.gradient(loss, z), z)])
        z.assign(tf.clip_by_value(z, -1.0, 1.0))
        return loss

    history = [float(step()) for _ in range(steps)]
    final, drawn = error()
    history.append(float(final))
    return Abduction(z.numpy(), np.asarray(z0, np.float32), drawn.numpy(), np.array(history),
                     time.perf_counter() - start)


def abduct(model, encoder: Encoder, images, labels01=None, *, steps: int = REFINE_STEPS,
           lr: float = REFINE_LR) -> tuple[Abduction, np.ndarray]:
    """(the faces' refined image noise, the labels used): ``labels01`` [k, n] or, when
    None, the encoder's reading of the faces."""
    z0, logits = encoder(images)
    labels = (logits > 0).astype(np.float32) if labels01 is None else np.asarray(labels01,
                                                                                 np.float32)
    return refine(model, images, labels, z0, steps=steps, lr=lr), labels


# ----------------------------------------------------------------------------- the controller
def _node_logits(cc, i: int, noise, labels) -> np.ndarray:
    """Node i's logits [rows] for its noise [rows, h] and the labels [rows, n] of its parents."""
    node = cc.nodes[i]
    index = {name: j for j, name in enumerate(cc.label_names)}
    parents = [tf.constant(labels[:, index[p]:index[p] + 1], tf.float32) for p in node.parents]
    return node.logit(tf.constant(noise, tf.float32), parents).numpy()[:, 0]


def controller_noise(cc, labels01, seed: int = 0, candidates: int = CANDIDATES) -> np.ndarray:
    """Noise [k, n, h] with which every node draws the face's label from the face's parent
    labels (module docstring, 3)."""
    labels = np.asarray(labels01, np.float32)
    k, n, h = len(labels), len(cc.label_names), int(cc.n_hidden)
    rng = np.random.default_rng(seed)
    chosen = np.zeros([k, n, h], np.float32)
    for i in range(n):
        noise = rng.uniform(-1.0, 1.0, [k, candidates, h]).astype(np.float32)
        logits = _node_logits(cc, i, noise.reshape(k * candidates, h),
                              np.repeat(labels, candidates, axis=0)).reshape(k, candidates)
        signed = np.where(labels[:, i:i + 1] > 0.5, logits, -logits)  # > 0: the face's label
        pick = np.where((signed > 0).any(axis=1), (signed > 0).argmax(axis=1),
                        signed.argmax(axis=1))
        chosen[:, i] = noise[np.arange(k), pick]
    return chosen


def counterfactual_labels(cc, labels01, noise, do) -> np.ndarray:
    """Labels [k, n] in {0, 1} under ``do`` {node: 0/1}: the intervened nodes set, their
    descendants recomputed from ``noise`` in the rows where a parent's label changed, the
    rest kept (module docstring, 3)."""
    factual = np.asarray(labels01, np.float32)
    labels = factual.copy()
    names = list(cc.label_names)
    index = {name: i for i, name in enumerate(names)}
    below = set()
    for node in do:
        if node not in names:
            raise UserError(f"do({node}=...): {node} is not a node of this run's graph; its "
                            f"nodes: {', '.join(names)}.")
        below.update(causal_graph.descendants(cc.graph, node))
    for i, name in enumerate(names):  # topological order
        if name in do:
            labels[:, i] = float(do[name])
        elif name in below:
            parents = [index[p] for p in cc.nodes[i].parents]
            moved = (labels[:, parents] != factual[:, parents]).any(axis=1)
            if moved.any():
                drawn = _node_logits(cc, i, noise[moved, i], labels[moved]) > 0
                labels[moved, i] = drawn.astype(np.float32)
    return labels
