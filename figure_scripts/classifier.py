"""One attribute reader: an independent classifier of the data set's attributes.

The fidelity report reads generated images with a panel of such readers
(``figure_scripts.readers``); this module is one reader: its networks, its training and
its cache. A reader is trained on a data set's real images (never on a model's labeler
or weights), one per data set, image size, colour mode and ``ReaderSpec`` (name,
architecture, seed), and cached so that later reports and the training-time consistency
scalars reuse it:

    <dataset_dir>/classifiers/<size>/<reader name>/     (<size>-gray for one channel)
        weights.weights.h5                   the network's weights
        classifier.json                      attributes, architecture, feature scales,
                                             how it was trained, its held-out scores

A reader is written into a hidden sibling folder and renamed into place when complete;
readers trained at once by two processes take turns on a lock file in the cache folder.

It must not lean on the data's correlations, or it would call every bald face a man and
hide the very effect the report measures. On the bundled toy faces (a ``scm.json`` beside
the attributes) it is therefore trained on faces rendered with independent, balanced
labels (every attribute Bernoulli(0.5)) by ``toy_faces.render_dataset`` and read through
``data_loader.image_dataset``, so its images are exactly the pipeline's; each reader
renders its own faces (from its seed). On CelebA (or any other folder) it is trained on
the real images outside a fixed held-out tenth with a class-balanced loss (each
attribute's positives and negatives weigh half each), and its accuracy inside the rare
subgroups is reported, flagged when a subgroup holds fewer than ``MIN_SUBGROUP`` images.
Training batches are augmented (``figure_scripts.augment``: flips, shifts, colour
jitter, blur, noise) so that texture does not decide a reading.

Two architectures (``ARCHITECTURES``): ``maxpool`` (3x3 convolutions, batch norm, ReLU,
2x2 max pooling, widths 32 to 128, a 128-unit hidden layer) and ``strided`` (5x5
convolutions of stride 2, group norm, swish, widths 24 to 96, a 96-unit hidden layer).

Public surface::

    clf = get_classifier(dataset_dir, image_size, channels=3, *, reader=DEFAULT_READER,
                         train_if_missing=True, progress=True)  # None if missing, not trained
    clf.attribute_names                                # the data set's attributes, in order
    clf.predict_proba(images)   # images [N, H, W, C] in [0, 255] -> [N, n_attr] in [0, 1]
    clf.features(images)        # -> [N, d], the space the Fréchet distances use
    clf.read(images)            # both in one pass
    clf.info                    # classifier.json: training and held-out scores

Features are the global averages of every convolution block and the last hidden layer,
each part divided by its mean norm on the training images, so colours and textures (the
first blocks) count as much as attributes (the last layers): noise and blur that the
hidden layer learnt to ignore still move the first blocks' averages.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

import data_loader
from errors import UserError

log = logging.getLogger(__name__)

CACHE_FOLDER = "classifiers"  # under the data set's folder
WEIGHTS_FILE = "weights.weights.h5"
INFO_FILE = "classifier.json"
LOCK_FILE = ".training.lock"  # in the size folder, while a process trains readers there
MIN_SUBGROUP = 50  # subgroups with fewer held-out images are flagged as too small to trust
HELDOUT_MODULUS = 10  # real (non-toy) data: a file is held out when crc32(name) % 10 == 0
RESIZE_METHOD = "AREA"  # the pipeline's default (--resize_method)
PREDICT_BATCH = 256
# (condition, attribute) pairs whose rare cells the classifier must read correctly:
# Male among Bald=1 (bald women are rare) and among Wearing_Lipstick=1 (made-up men are rare)
SUBGROUPS = (("Bald", "Male"), ("Wearing_Lipstick", "Male"))


@dataclass
class TrainingPlan:
    """How a reader is trained; the defaults train one at 32x32 in one to two minutes on
    two CPU cores."""

    n_train: int = 8000  # training images (toy: rendered; real data: drawn from the split)
    n_test: int = 2000  # held-out rendered toy faces (independent, balanced labels)
    n_data_test: int = 20000  # held-out images of the data set itself (at most)
    steps: int = 1000  # optimizer steps
    batch_size: int = 64  # images per step
    learning_rate: float = 2e-3  # Adam, cosine-decayed to zero over the steps
    render_workers: int | None = None  # processes rendering toy faces (None: CPU count)
    augment: bool = True  # figure_scripts.augment on every training batch


@dataclass(frozen=True)
class ReaderSpec:
    """One reader of the panel: its cache folder's name, its network, its seed (weights,
    training order, augmentation and, on the toy faces, the faces it is trained on)."""

    name: str
    architecture: str  # a key of ARCHITECTURES
    seed: int


DEFAULT_READER = ReaderSpec("a-maxpool", "maxpool", 0)


# ----------------------------------------------------------------------------- network
def block_widths(image_size: int, first: int = 32, most: int = 128) -> list[int]:
    """Channels of the convolution blocks: halve the side down to 4 pixels (at least one)."""
    blocks = max(1, int(np.log2(max(int(image_size), 8))) - 2)
    return [min(first * 2**i, most) for i in range(blocks)]


def _maxpool_blocks(h, image_size: int) -> list:
    """conv 3x3 -> batch norm -> ReLU (its average is a feature part) -> 2x2 max pool."""
    from keras import layers

    parts = []
    for width in block_widths(image_size):
        h = layers.Conv2D(width, 3, padding="same", use_bias=False)(h)
        h = layers.BatchNormalization(momentum=0.9)(h)  # settles within short trainings
        h = layers.ReLU()(h)
        parts.append(layers.GlobalAveragePooling2D()(h))
        h = layers.MaxPooling2D(2)(h)
    return parts


def _strided_blocks(h, image_size: int) -> list:
    """conv 5x5 of stride 2 -> group norm (8 groups) -> swish (its average is a part)."""
    from keras import layers

    parts = []
    for width in block_widths(image_size, first=24, most=96):
        h = layers.Conv2D(width, 5, strides=2, padding="same", use_bias=False)(h)
        h = layers.GroupNormalization(groups=8)(h)
        h = layers.Activation("swish")(h)
        parts.append(layers.GlobalAveragePooling2D()(h))
    return parts


# name -> (blocks, hidden units, hidden activation)
ARCHITECTURES = {"maxpool": (_maxpool_blocks, 128, "relu"),
                 "strided": (_strided_blocks, 96, "swish")}


def build_network(image_size: int, channels: int, n_attributes: int,
                  architecture: str = "maxpool"):
    """Keras model: images in [0, 255] -> [logits, block_1 avg, ..., block_k avg, hidden]:
    the ``architecture``'s convolution blocks, a global average of the last, a hidden
    layer and one logit per attribute."""
    import keras
    from keras import layers

    if architecture not in ARCHITECTURES:
        raise UserError(f"Unknown reader architecture {architecture!r}; use one of "
                        f"{', '.join(ARCHITECTURES)}.")
    blocks, units, activation = ARCHITECTURES[architecture]
    inputs = keras.Input((image_size, image_size, channels))
    parts = blocks(layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs), image_size)
    hidden = layers.Dense(units, activation=activation)(parts[-1])
    logits = layers.Dense(n_attributes)(hidden)
    return keras.Model(inputs, [logits, *parts, hidden], name=f"reader_{architecture}")


class AttributeClassifier:
    """A trained reader: its network, attribute names and feature scales (module doc)."""

    def __init__(self, network, attribute_names: Sequence[str], image_size: int, channels: int,
                 feature_scales: Sequence[float], info: dict | None = None,
                 architecture: str = "maxpool"):
        self.network = network
        self.architecture = architecture
        self.attribute_names = list(attribute_names)
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.feature_scales = np.asarray(feature_scales, np.float32)
        self.info = dict(info or {})
        spec = tf.TensorSpec([None, self.image_size, self.image_size, self.channels], tf.float32)
        self._forward = tf.function(self._outputs, input_signature=[spec])

    def _outputs(self, images):
        logits, *parts = self.network(tf.clip_by_value(images, 0.0, 255.0), training=False)
        return tf.sigmoid(logits), tf.concat(parts, axis=1) if len(parts) > 1 else parts[0]

    def _check(self, images) -> np.ndarray:
        images = np.asarray(images, np.float32)
        if images.ndim == 3 and self.channels == 1:
            images = images[..., None]
        expected = (self.image_size, self.image_size, self.channels)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise UserError(f"The attribute classifier reads images of shape [N, {expected[0]}, "
                            f"{expected[1]}, {expected[2]}]; got {images.shape}. Use the "
                            "classifier of the run's image size and channels.")
        return images

    def read(self, images) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [N, n_attr], features [N, d]) in one pass; values are clipped
        to [0, 255] first, as a saved image would be."""
        images = self._check(images)
        probs, feats = [], []
        for start in range(0, len(images), PREDICT_BATCH):
            chunk = images[start:start + PREDICT_BATCH]
            p, f = self._forward(tf.constant(chunk))
            probs.append(p.numpy())
            feats.append(f.numpy())
        if not probs:
            return (np.zeros([0, len(self.attribute_names)], np.float32),
                    np.zeros([0, int(self._part_sizes().sum())], np.float32))
        return np.concatenate(probs), self._scale(np.concatenate(feats))

    def predict_proba(self, images) -> np.ndarray:
        """P(attribute = 1) [N, n_attr] for images [N, H, W, C] in [0, 255]."""
        return self.read(images)[0]

    def features(self, images) -> np.ndarray:
        """Feature vectors [N, d]: the scaled block averages and hidden layer."""
        return self.read(images)[1]

    def _part_sizes(self) -> np.ndarray:
        return np.array([int(t.shape[-1]) for t in self.network.outputs[1:]])

    def _scale(self, raw: np.ndarray) -> np.ndarray:
        scales = np.repeat(self.feature_scales, self._part_sizes())
        return raw / scales[None, :]

    def raw_part_norms(self, images) -> np.ndarray:
        """Mean L2 norm of each feature part (unscaled) over ``images``."""
        _, raw = self._forward(tf.constant(self._check(images)[:PREDICT_BATCH * 4]))
        raw = raw.numpy()
        bounds = np.cumsum([0, *self._part_sizes()])
        return np.array([np.linalg.norm(raw[:, a:b], axis=1).mean() + 1e-6
                         for a, b in zip(bounds[:-1], bounds[1:], strict=True)])

    # -- files
    def save(self, folder) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.network.save_weights(str(folder / WEIGHTS_FILE))
        info = dict(self.info, attribute_names=self.attribute_names, image_size=self.image_size,
                    channels=self.channels, architecture=self.architecture,
                    feature_scales=[float(s) for s in self.feature_scales])
        (folder / INFO_FILE).write_text(json.dumps(_plain(info), indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder) -> AttributeClassifier:
        folder = Path(folder)
        info = json.loads((folder / INFO_FILE).read_text())
        architecture = info.get("architecture", "maxpool")
        network = build_network(info["image_size"], info["channels"], len(info["attribute_names"]),
                                architecture)
        network.load_weights(str(folder / WEIGHTS_FILE))
        return cls(network, info["attribute_names"], info["image_size"], info["channels"],
                   info["feature_scales"], info, architecture)


def _plain(value):
    """JSON-friendly copy: numpy scalars to Python, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    return value


# ----------------------------------------------------------------------------- scores
def binary_scores(predicted, truth) -> dict:
    """Accuracy, balanced accuracy (mean of the two classes' recalls; NaN when a class is
    absent) and the recalls themselves (``tpr`` of the positives, ``tnr`` of the negatives)
    of 0/1 predictions against 0/1 truth."""
    predicted = np.asarray(predicted).reshape(-1) > 0.5
    truth = np.asarray(truth).reshape(-1) > 0.5
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    accuracy = float(np.mean(predicted == truth)) if truth.size else float("nan")
    tpr = float(predicted[truth].mean()) if n_pos else float("nan")
    tnr = float((~predicted[~truth]).mean()) if n_neg else float("nan")
    balanced = 0.5 * (tpr + tnr) if n_pos and n_neg else float("nan")
    return {"accuracy": accuracy, "balanced_accuracy": balanced, "tpr": tpr, "tnr": tnr,
            "n_pos": n_pos, "n_neg": n_neg}


def attribute_scores(probs: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict:
    """{attribute: binary_scores} of probabilities [N, k] against labels [N, k]."""
    return {name: binary_scores(probs[:, j], labels[:, j]) for j, name in enumerate(names)}


def subgroup_scores(probs: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> list[dict]:
    """Accuracy inside the rare cells of SUBGROUPS: e.g. among Bald=1, for Male=0 and
    Male=1, how often the classifier reads Male and Bald right. Cells with fewer than
    MIN_SUBGROUP images are flagged ``too_small``."""
    rows = []
    col = {name: j for j, name in enumerate(names)}
    for condition, attribute in SUBGROUPS:
        if condition not in col or attribute not in col:
            continue
        given = labels[:, col[condition]] > 0.5
        for value in (0, 1):
            cell = given & ((labels[:, col[attribute]] > 0.5) == bool(value))
            for read in (attribute, condition):
                hit = (probs[cell, col[read]] > 0.5) == (labels[cell, col[read]] > 0.5)
                rows.append({"subgroup": f"{condition}=1", "cell": f"{attribute}={value}",
                             "attribute": read, "n": int(cell.sum()),
                             "accuracy": float(hit.mean()) if cell.any() else float("nan"),
                             "too_small": bool(cell.sum() < MIN_SUBGROUP)})
    return rows


# ----------------------------------------------------------------------------- data
def is_toy_dataset(dataset_dir) -> bool:
    """The bundled toy faces: a scm.json beside attributes that are toy_faces.NODES."""
    import toy_faces

    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / "scm.json").is_file():
        return False
    attr = data_loader.read_attributes(data_loader.find_attribute_file(dataset_dir))
    return sorted(attr.columns) == sorted(toy_faces.NODES)


def independent_scm():
    """The toy faces' labels made independent and balanced: every node Bernoulli(0.5)."""
    import toy_faces

    return toy_faces.ToyFacesSCM([(node, []) for node in toy_faces.NODES],
                                 {node: [0.5] for node in toy_faces.NODES})


def heldout_mask(names: Sequence[str]) -> np.ndarray:
    """Real data's held-out files: crc32(name) % HELDOUT_MODULUS == 0 (stable across runs)."""
    return np.array([zlib.crc32(str(n).encode()) % HELDOUT_MODULUS == 0 for n in names])


def load_images(dataset_dir, attr: pd.DataFrame, image_size: int, channels: int,
                progress: bool = True, desc: str = "reading images",
                resize_method: str = RESIZE_METHOD) -> tuple[np.ndarray, np.ndarray]:
    """The rows' images through the training pipeline (crop 108, resize, no flip), as
    float16 [N, S, S, C] in [0, 255], with their labels [N, k] (attribute order)."""
    from tqdm import tqdm

    data_loader.check_images(dataset_dir, attr)
    batch = 100
    whole = len(attr) // batch * batch
    # the pipeline keeps whole batches only: the remainder goes as one smaller batch
    parts = [(rows, size) for rows, size in ((attr.iloc[:whole], batch),
                                             (attr.iloc[whole:], len(attr) - whole))
             if len(rows)]
    images, labels = [], []
    bar = tqdm(total=len(attr), desc=desc, unit="img", disable=not progress, leave=False)
    with bar:
        for rows, size in parts:
            ds = data_loader.image_dataset(
                dataset_dir, rows, list(rows.columns), size, scale_size=image_size,
                is_crop=True, resize_method=resize_method, grayscale=channels == 1, seed=0,
                shuffle=False, flip=False, repeat=False)
            for x, y in ds:
                images.append(x.numpy().astype(np.float16))
                labels.append(y.numpy())
                bar.update(len(x))
    if not images:
        return (np.zeros([0, image_size, image_size, channels], np.float16),
                np.zeros([0, attr.shape[1]], np.float32))
    return np.concatenate(images), np.concatenate(labels).astype(np.float32)


def _render_and_load(folder: Path, n: int, seed: int, image_size: int, channels: int,
                     plan: TrainingPlan, progress: bool, desc: str):
    import toy_faces

    toy_faces.render_dataset(folder, n=n, seed=seed, workers=plan.render_workers,
                             progress=progress, scm=independent_scm())
    attr = data_loader.read_attributes(folder / "list_attr_celeba.txt")
    return load_images(folder, attr, image_size, channels, progress, desc)


# ----------------------------------------------------------------------------- training
def _fit(network, images: np.ndarray, labels: np.ndarray, plan: TrainingPlan, seed: int,
         progress: bool, desc: str = "training an attribute reader") -> list[float]:
    """Adam on the class-balanced sigmoid cross-entropy, batches augmented (augment.py)."""
    import keras
    from tqdm import tqdm

    from figure_scripts.augment import augment

    positive = np.clip(labels.mean(axis=0), 1e-3, 1 - 1e-3).astype(np.float32)
    w_pos, w_neg = tf.constant(0.5 / positive), tf.constant(0.5 / (1 - positive))
    schedule = keras.optimizers.schedules.CosineDecay(plan.learning_rate, max(plan.steps, 1))
    optimizer = keras.optimizers.Adam(schedule)
    variables = network.trainable_variables

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits = network(x, training=True)[0]
            weight = y * w_pos + (1 - y) * w_neg
            loss = tf.reduce_mean(weight * tf.nn.sigmoid_cross_entropy_with_logits(y, logits))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    def prepare(x, y):
        x = tf.cast(x, tf.float32)
        return (augment(x, seed) if plan.augment else x), y

    ds = (tf.data.Dataset.from_tensor_slices((images, labels))
          .shuffle(len(images), seed=seed, reshuffle_each_iteration=True).repeat()
          .batch(plan.batch_size, drop_remainder=True).map(prepare).prefetch(2))
    losses = []
    bar = tqdm(total=plan.steps, desc=desc, unit="step", disable=not progress)
    with bar:
        for step, (x, y) in enumerate(ds.take(plan.steps)):
            loss = float(train_step(x, y))
            losses.append(loss)
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    return losses


def train_classifier(dataset_dir, image_size: int, channels: int = 3, *,
                     reader: ReaderSpec = DEFAULT_READER, progress: bool = True,
                     plan: TrainingPlan | None = None, scratch_dir=None) -> AttributeClassifier:
    """Train a reader for the data set (toy: rendered balanced faces; real data: the
    non-held-out images) and score it on held-out images. Not cached; see get_classifier."""
    plan = plan or TrainingPlan()
    seed = int(reader.seed)
    dataset_dir = Path(dataset_dir)
    attr = data_loader.read_attributes(data_loader.find_attribute_file(dataset_dir))
    names = list(attr.columns)
    tf.keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    info: dict = {"dataset_dir": str(dataset_dir.resolve()), "reader": reader.name,
                  "seed": seed, "plan": asdict(plan), "resize_method": RESIZE_METHOD}
    evaluations: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if is_toy_dataset(dataset_dir):
        info["training_data"] = ("toy faces rendered with independent, balanced labels "
                                 "(every attribute Bernoulli(0.5))")
        scratch_dir = Path(scratch_dir or dataset_dir / CACHE_FOLDER)
        scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".render-", dir=scratch_dir) as scratch:
            images, labels = _render_and_load(Path(scratch) / "train", plan.n_train,
                                              10_000 + seed, image_size, channels, plan,
                                              progress, "reading rendered faces")
            evaluations["balanced"] = _render_and_load(
                Path(scratch) / "test", plan.n_test, 20_000 + seed, image_size, channels, plan,
                progress, "reading held-out rendered faces")
        # the data set's own images were never trained on: all of them are held out
        data_rows = attr.iloc[np.sort(rng.permutation(len(attr))[:plan.n_data_test])]
    else:
        info["training_data"] = ("the data set's real images outside the held-out split, "
                                 "class-balanced loss")
        held = heldout_mask(attr.index)
        train_rows = attr[~held]
        train_rows = train_rows.iloc[np.sort(rng.permutation(len(train_rows))[:plan.n_train])]
        if len(train_rows) == 0:
            raise UserError(f"{dataset_dir} has too few images to train the attribute classifier "
                            "(none outside the held-out split).")
        images, labels = load_images(dataset_dir, train_rows, image_size, channels, progress,
                                     "reading training images")
        heldout = attr[held]
        data_rows = heldout.iloc[np.sort(rng.permutation(len(heldout))[:plan.n_data_test])]
    if len(data_rows):
        evaluations["data"] = load_images(dataset_dir, data_rows, image_size, channels,
                                          progress, "reading held-out data images")
    network = build_network(image_size, channels, len(names), reader.architecture)
    losses = _fit(network, images, labels, plan, seed, progress,
                  f"training attribute reader {reader.name}")
    classifier = AttributeClassifier(network, names, image_size, channels,
                                     np.ones(len(network.outputs) - 1), info, reader.architecture)
    classifier.feature_scales = classifier.raw_part_norms(images[:1024]).astype(np.float32)
    info["train_images"] = len(images)
    info["final_loss"] = float(np.mean(losses[-50:])) if losses else float("nan")
    info["train_seconds"] = round(time.perf_counter() - start, 1)
    info["scores"] = {}
    info["subgroups"] = {}
    for key, (x, y) in evaluations.items():
        probs = classifier.predict_proba(x)
        info["scores"][key] = attribute_scores(probs, y, names)
        info["subgroups"][key] = subgroup_scores(probs, y, names)
        info.setdefault("eval_images", {})[key] = len(x)
    classifier.info = info
    return classifier


# ----------------------------------------------------------------------------- cache
def cache_folder(dataset_dir, image_size: int, channels: int = 3, cache_dir=None,
                 reader: ReaderSpec | None = None) -> Path:
    """Where the readers of this data set, size and colour mode are kept (with
    ``reader``: that reader's own folder)."""
    root = Path(cache_dir) if cache_dir else Path(dataset_dir) / CACHE_FOLDER
    folder = root / (f"{int(image_size)}" + ("-gray" if int(channels) == 1 else ""))
    return folder / reader.name if reader is not None else folder


_LOADED: dict[tuple[str, float], AttributeClassifier] = {}


def load_cached(folder) -> AttributeClassifier | None:
    """The reader saved in ``folder`` (kept in memory after the first load), or None."""
    folder = Path(folder)
    info = folder / INFO_FILE
    if not info.is_file() or not (folder / WEIGHTS_FILE).is_file():
        return None
    key = (str(folder.resolve()), info.stat().st_mtime)
    if key not in _LOADED:
        _LOADED[key] = AttributeClassifier.load(folder)
    return _LOADED[key]


@contextlib.contextmanager
def _training_lock(folder: Path):
    """One process trains the readers of a cache folder at a time (a lock file in it)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def get_classifier(dataset_dir, image_size: int, channels: int = 3, *,
                   reader: ReaderSpec = DEFAULT_READER, train_if_missing: bool = True,
                   seed: int | None = None, progress: bool = True, cache_dir=None,
                   retrain: bool = False,
                   plan: TrainingPlan | None = None) -> AttributeClassifier | None:
    """The cached ``reader`` of ``dataset_dir`` at ``image_size`` (``channels`` 3 or 1).

    Trained and cached first when missing (or when ``retrain``) if ``train_if_missing``;
    otherwise a missing reader gives None. ``seed`` replaces the reader's seed for a new
    training (a cached reader is returned as it is); ``cache_dir`` replaces
    ``<dataset_dir>/classifiers``; ``plan`` sets the training sizes (TrainingPlan).
    """
    dataset_dir = Path(dataset_dir)
    if int(channels) not in (1, 3):
        raise UserError(f"The attribute readers read 1 or 3 channels; got {channels}.")
    if seed is not None:
        reader = replace(reader, seed=int(seed))
    folder = cache_folder(dataset_dir, image_size, channels, cache_dir, reader)
    if not retrain:
        found = load_cached(folder)
        if found is not None or not train_if_missing:
            return found
    attr = data_loader.read_attributes(data_loader.find_attribute_file(dataset_dir))
    if not (dataset_dir / "images").is_dir():
        raise UserError(f"The data set {dataset_dir} has no images/ folder: the attribute "
                        "readers are trained and tested on its real images. Put them in "
                        f"{dataset_dir / 'images'} (download.py does this for CelebA).")
    data_loader.check_images(dataset_dir, attr)
    with _training_lock(folder.parent):
        if not retrain:  # another process may have trained it while we waited
            found = load_cached(folder)
            if found is not None:
                return found
        log.info("training attribute reader %s for %s at %dx%d (cached in %s)", reader.name,
                 dataset_dir, image_size, image_size, folder)
        classifier = train_classifier(dataset_dir, image_size, channels, reader=reader,
                                      progress=progress, plan=plan, scratch_dir=folder.parent)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
        try:
            classifier.save(staging)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if load_cached(folder) is None:
                raise
    return load_cached(folder) or classifier
