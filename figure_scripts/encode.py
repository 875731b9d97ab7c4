"""Counterfactuals of real faces: fit the generator's inputs to a real image, then intervene.

    python -m figure_scripts encode --load_path logs/<run> [--images 000001.jpg 17]
           [--do Bald=1 --do Male=0,Mustache=1] [--steps 300]

"This person, had they been bald", in the three steps of the deep-SCM literature:

1. Abduction. For each real image x (read as the run was trained: crop, resize, no flip),
   gradient descent (Adam) on z_gen in [-1, 1] and the label logits minimises the mean
   squared pixel error between G(sigmoid(logits), z_gen) and x; the error of every step is
   reported (a progress bar, and a CSV). Then each node's controller noise is fitted so
   that the node reproduces its fitted logit from its parents' fitted labels.
2. Action. do(X=v) on the fitted inputs: on logits (the default) 1/0 is the median
   positive/negative logit of X, other values are logits; on labels, the label.
3. Prediction. X's descendants are recomputed by the controller with the fitted noise
   and the changed parents (each descendant's fitted logit plus the change that its
   parents cause, so that the abduction's residual error does not leak in); every other
   label keeps its fitted value, z_gen stays; G draws the counterfactual.

Without ``--do`` every node is flipped in turn (do(X = 1 - fitted X)). Written into
``<run>/figures/encode/`` (or ``--out``):

    <step>_encode_strip.<ext>   rows: images; columns: original | reconstruction | each do
    <step>_encode_loss.csv      reconstruction error (MSE on [0, 1] pixels) per step and image
    <step>_encode_labels.csv    each image's data labels next to the fitted ones

In the session: ``from figure_scripts.encode import encode; encode(trainer)``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

import data_loader
from errors import UserError
from figure_scripts.run import add_run_arguments, attribute_table, load_run
from figure_scripts.sample import check_nodes, descendants, image_model, median_logit
from figure_scripts.utils import figure_dir

LOGIT_LIMIT = 10.0  # fitted logits stay in [-10, 10]
_EPS = 1e-6


@dataclass
class Fit:
    """The abducted inputs of k images."""

    z_gen: np.ndarray           # [k, z_dim]
    logits: np.ndarray          # [k, n] fitted label logits
    reconstruction: np.ndarray  # [k, H, W, C] in [0, 255]
    history: np.ndarray         # [steps + 1, k] MSE (pixels in [0, 1]) before each step and at the end
    noise: np.ndarray | None = None  # [k, n, cc_n_hidden] fitted controller noise

    @property
    def labels(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits))


@dataclass
class Encoded:
    """What ``encode`` made: the images, the fit, the counterfactuals and the files."""

    names: list[str]                  # the images' file names
    images: np.ndarray                # [k, H, W, C] the real images
    data_labels: np.ndarray           # [k, n] their labels in the data set
    fit: Fit
    counterfactuals: list[tuple[str, np.ndarray]]  # (title, images [k, H, W, C])
    paths: list[Path] = field(default_factory=list)


# ----------------------------------------------------------------------------- data
def pick_rows(attr: pd.DataFrame, images=None, count: int = 4, seed: int = 0) -> list[int]:
    """Row positions of the requested images: file names or 0-based positions; default
    ``count`` rows drawn with ``seed``."""
    if not images:
        count = min(int(count), len(attr))
        if count < 1:
            raise UserError("--count must be at least 1.")
        return sorted(np.random.default_rng(seed).choice(len(attr), count, replace=False).tolist())
    positions = {name: i for i, name in enumerate(attr.index)}
    rows = []
    for item in images:
        item = str(item)
        if item in positions:
            rows.append(positions[item])
        elif item.isdigit() and int(item) < len(attr):
            rows.append(int(item))
        else:
            raise UserError(f"--images {item}: neither a file name of the data set nor a row "
                            f"number below {len(attr)} (e.g. {attr.index[0]} or 0).")
    return rows


def load_images(trainer, rows) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The rows' images as the run saw them in training (no flip), their names and labels."""
    cfg = trainer.config
    attr = trainer.attr.iloc[list(rows)]
    data_loader.check_images(trainer.dataset_dir, attr)
    ds = data_loader.image_dataset(
        trainer.dataset_dir, attr, trainer.cc.label_names, len(attr),
        scale_size=int(cfg.input_scale_size), is_crop=bool(cfg.is_crop),
        resize_method=cfg.resize_method, grayscale=bool(cfg.grayscale), num_worker=2, seed=0,
        shuffle=False, flip=False, repeat=False)
    images, labels = next(iter(ds))
    return images.numpy(), list(attr.index), labels.numpy()


# ----------------------------------------------------------------------------- abduction
def fit_inputs(model, images, n_labels: int, steps: int = 300, lr: float = 0.05,
               seed: int = 0, progress: bool = True) -> Fit:
    """Gradient descent on z_gen and the label logits to reproduce ``images`` [k, H, W, C]
    in [0, 255] through ``model.generate(sigmoid(logits), z_gen, round_labels=False)``."""
    import keras
    from tqdm import tqdm

    target = tf.constant(np.asarray(images, np.float32) / 255.0)
    k = int(target.shape[0])
    rng = np.random.default_rng(seed)
    z = tf.Variable(rng.uniform(-0.1, 0.1, [k, int(model.z_dim)]).astype(np.float32))
    logits = tf.Variable(tf.zeros([k, n_labels]))
    optimizer = keras.optimizers.Adam(lr)

    def errors():
        recon = model.generate(tf.sigmoid(logits), z, round_labels=False)
        return tf.reduce_mean(tf.square(recon / 255.0 - target), axis=[1, 2, 3]), recon

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            per_image, _ = errors()
            loss = tf.reduce_sum(per_image)
        grads = tape.gradient(loss, [z, logits])
        optimizer.apply_gradients(zip(grads, [z, logits], strict=True))
        z.assign(tf.clip_by_value(z, -1.0, 1.0))
        logits.assign(tf.clip_by_value(logits, -LOGIT_LIMIT, LOGIT_LIMIT))
        return per_image

    history = []
    bar = tqdm(range(steps), desc="encode: fitting z_gen and logits", disable=not progress,
               dynamic_ncols=True)
    for _ in bar:
        history.append(step().numpy())
        bar.set_postfix(mse=f"{history[-1].mean():.5f}")
    bar.close()
    final, recon = errors()
    history.append(final.numpy())
    return Fit(z.numpy(), logits.numpy(), recon.numpy(), np.stack(history))


def _node_logit(cc, name: str, noise, labels) -> tf.Tensor:
    """Node ``name``'s logit [k] for its noise [k, h] and the labels [k, n] of its parents."""
    node = cc.node_dict[name]
    index = {n: i for i, n in enumerate(cc.label_names)}
    parents = [labels[:, index[p]:index[p] + 1] for p in node.parents]
    return node.logit(noise, parents)[:, 0]


def fit_noise(cc, labels, logits, steps: int = 200, lr: float = 0.05, seed: int = 0) -> np.ndarray:
    """Controller noise [k, n, h] in [-1, 1] with which every node reproduces its fitted
    logit from its parents' fitted labels (least squares, by Adam)."""
    import keras

    labels = tf.constant(labels, tf.float32)
    target = tf.constant(logits, tf.float32)
    k, n, h = int(labels.shape[0]), len(cc.label_names), int(cc.n_hidden)
    rng = np.random.default_rng(seed)
    noise = tf.Variable(rng.uniform(-1.0, 1.0, [k, n, h]).astype(np.float32))
    optimizer = keras.optimizers.Adam(lr)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            out = tf.stack([_node_logit(cc, name, noise[:, i], labels)
                            for i, name in enumerate(cc.label_names)], axis=1)
            loss = tf.reduce_sum(tf.square(out - target))
        optimizer.apply_gradients([(tape.gradient(loss, noise), noise)])
        noise.assign(tf.clip_by_value(noise, -1.0, 1.0))
        return loss

    for _ in range(steps):
        step()
    return noise.numpy()


# ----------------------------------------------------------------------------- action, prediction
def parse_do(text: str) -> dict[str, float]:
    """``"Bald=1,Male=0"`` -> {"Bald": 1.0, "Male": 0.0}."""
    setting = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        name, sep, value = part.partition("=")
        try:
            setting[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise UserError(f"--do {text!r}: write NODE=VALUE[,NODE=VALUE...], e.g. Bald=1.")
    if not setting:
        raise UserError(f"--do {text!r}: write NODE=VALUE[,NODE=VALUE...], e.g. Bald=1.")
    return setting


def counterfactual_labels(cc, fit: Fit, setting, on_logits: bool = True) -> np.ndarray:
    """Labels [k, n] under do(setting) (values scalar or per image) from the fitted inputs:
    the module docstring's action and prediction steps."""
    names = list(cc.label_names)
    check_nodes(cc, setting, "--do")
    k = len(fit.logits)
    logits = fit.logits.astype(np.float32).copy()
    labels = fit.labels.astype(np.float32).copy()
    for name, value in setting.items():
        v = np.broadcast_to(np.asarray(value, np.float32), [k]).copy()
        j = names.index(name)
        if on_logits:
            if np.all(np.isin(v, (0.0, 1.0))):
                v = median_logit(cc, name, v)
            logits[:, j] = v
            labels[:, j] = 1.0 / (1.0 + np.exp(-v))
        else:
            if np.any((v < 0) | (v > 1)):
                raise UserError(f"--do {name}={value}: a label lies in [0, 1]; drop --on_labels "
                                "to set a logit.")
            labels[:, j] = v
            clipped = np.clip(v, _EPS, 1 - _EPS)
            logits[:, j] = np.log(clipped) - np.log1p(-clipped)
    if fit.noise is None:
        return labels
    below = set()
    for name in setting:
        below.update(descendants(cc, name))
    fitted = tf.constant(fit.labels, tf.float32)
    for i, name in enumerate(names):  # topological order
        if name in below and name not in setting:
            noise = tf.constant(fit.noise[:, i])
            change = (_node_logit(cc, name, noise, tf.constant(labels))
                      - _node_logit(cc, name, noise, fitted)).numpy()
            logits[:, i] = fit.logits[:, i] + change
            labels[:, i] = 1.0 / (1.0 + np.exp(-logits[:, i]))
    return labels


def strip(images, columns: list[tuple[str, np.ndarray]], row_names, path) -> Path:
    """A table of images: rows = images, columns = (title, images [k, H, W, C])."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    k, cols = len(images), len(columns)
    fig = Figure(figsize=(1.3 * cols + 0.4, 1.3 * k + 0.5), dpi=100)
    for r in range(k):
        for c, (title, block) in enumerate(columns):
            ax = fig.add_subplot(k, cols, r * cols + c + 1)
            picture = np.clip(np.rint(block[r]), 0, 255).astype(np.uint8)
            if picture.shape[-1] == 1:
                ax.imshow(picture[..., 0], cmap="gray", vmin=0, vmax=255)
            else:
                ax.imshow(picture)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
            if c == 0:
                ax.set_ylabel(str(row_names[r]), fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def encode(trainer, images=None, count: int = 4, interventions=None, steps: int = 300,
           lr: float = 0.05, on_logits: bool = True, seed: int = 0, out=None,
           figure_ext: str | None = None, progress: bool = True) -> Encoded:
    """Fit, intervene, draw; see the module docstring. ``interventions``: a list of
    {node: value} (or "Bald=1,Male=0" strings); default every node flipped."""
    model = image_model(trainer)
    cc = trainer.cc
    if steps < 1:
        raise UserError(f"--steps must be at least 1; got {steps}.")
    settings = [parse_do(s) if isinstance(s, str) else dict(s) for s in interventions or []]
    for setting in settings:
        check_nodes(cc, setting, "--do")
    rows = pick_rows(attribute_table(trainer, "encode"), images, count, seed)
    real, names, data_labels = load_images(trainer, rows)
    fit = fit_inputs(model, real, len(cc.label_names), steps, lr, seed, progress)
    fit.noise = fit_noise(cc, fit.labels, fit.logits, seed=seed)
    z = fit.z_gen
    columns = [("original", real), ("reconstruction", fit.reconstruction)]
    if settings:
        titled = [(", ".join(f"{k}={v:g}" for k, v in s.items()), s) for s in settings]
    else:
        flipped = (fit.labels < 0.5).astype(np.float32)
        titled = [(f"flip {name}", {name: flipped[:, j]})
                  for j, name in enumerate(cc.label_names)]
    counterfactuals = []
    for title, setting in titled:
        labels = counterfactual_labels(cc, fit, setting, on_logits)
        drawn = model.generate(tf.constant(labels), tf.constant(z), round_labels=False).numpy()
        counterfactuals.append((title if title.startswith("flip") else f"do({title})", drawn))
    columns += counterfactuals

    ext = figure_ext or trainer.figure_ext
    folder = figure_dir(trainer.model_dir, out, "encode")
    step = trainer.overall_step()
    paths = [strip(real, columns, names, folder / f"{step}_encode_strip.{ext}")]
    loss = pd.DataFrame(fit.history, columns=names)
    loss.insert(0, "mean", fit.history.mean(axis=1))
    loss.insert(0, "step", np.arange(len(fit.history)))
    paths.append(folder / f"{step}_encode_loss.csv")
    loss.to_csv(paths[-1], index=False, float_format="%.6f")
    table = pd.DataFrame([{"image": img, "label": lab, "data": data_labels[r, j],
                           "fitted": fit.labels[r, j], "fitted_logit": fit.logits[r, j]}
                          for r, img in enumerate(names)
                          for j, lab in enumerate(cc.label_names)])
    paths.append(folder / f"{step}_encode_labels.csv")
    table.to_csv(paths[-1], index=False, float_format="%.4f")
    return Encoded(names, real, data_labels, fit, counterfactuals, paths)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m figure_scripts encode",
        description="Counterfactuals of real faces: fit z_gen and the label logits to real "
                    "images, then regenerate them under interventions.")
    add_run_arguments(parser)
    parser.add_argument("--images", nargs="+", default=None,
                        help="Images of the data set: file names (000001.jpg) or row numbers "
                             "(default: --count images drawn with --seed).")
    parser.add_argument("--count", type=int, default=4, help="Images when --images is absent.")
    parser.add_argument("--do", action="append", default=None, metavar="NODE=V[,NODE=V]",
                        help="One counterfactual column (repeat for more; default: every "
                             "node flipped).")
    parser.add_argument("--steps", type=int, default=300, help="Gradient steps of the fit.")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam's learning rate.")
    parser.add_argument("--on_labels", action="store_true",
                        help="Intervene on labels instead of logits.")
    return parser


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    settings = [parse_do(text) for text in args.do or []]  # bad --do fails before loading
    trainer = load_run(args.load_path)
    result = encode(trainer, args.images, args.count, settings, args.steps, args.lr,
                    not args.on_labels, args.seed, args.out or None, args.figure_ext)
    first, last = result.fit.history[0].mean(), result.fit.history[-1].mean()
    print(f"encode: reconstruction error (MSE) {first:.5f} -> {last:.5f} over {args.steps} "
          f"steps; wrote {', '.join(str(p) for p in result.paths)}")
    return 0
