"""CelebA-format datasets: the attribute table and the tf.data input pipelines.

A dataset folder holds ``images/`` and one attribute file, ``list_attr_celeba.txt``
(line 1 the image count, line 2 the attribute names, then ``file v1 ... vk`` with
values +1/-1) or ``list_attr_celeba.csv`` (``image_id`` column, then one column per
attribute, values +1/-1 or 0/1). Labels are handed on as 0/1.

Two pipelines:

* ``label_dataset``: shuffled batches of label vectors for the causal controller;
  needs no images.
* ``image_dataset``: shuffled batches of (image, labels): decode, centre-crop 108x108,
  resize, random left-right flip, values in [0, 255]. The order and the flips follow
  the seed. A file that cannot be read or decoded is skipped with one warning naming it
  (the first 20 are named). If no image of a whole epoch can be read, the pipeline
  stops with an error (``unreadable_data_error`` turns it into a ``UserError``) instead
  of searching for a readable one for ever.

Images are decoded by content, whatever their name says: JPEG, PNG, GIF or BMP, grey,
RGB or RGBA (converted to RGB; the alpha channel is dropped), of any size (the crop
window shrinks to fit, then everything is resized to the same square).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from attributes import read_attributes  # noqa: F401 (re-exported)
from errors import UserError

log = logging.getLogger(__name__)

ATTRIBUTE_FILES = ("list_attr_celeba.txt", "list_attr_celeba.csv")
CROP_SIZE = 108
TOYFACES_DEFAULT_N = 20000
MAX_NAMED_SKIPS = 20  # unreadable images named in warnings, per pipeline
UNREADABLE_MESSAGE = (
    "[unreadable data set] None of the {n} images in {folder} could be read or decoded, "
    "so there is nothing to train on. Check the files (are they JPEG or PNG images?), or "
    "prepare the dataset again.[/unreadable data set]"
)
RESIZE_METHODS = {
    "AREA": tf.image.ResizeMethod.AREA,
    "BILINEAR": tf.image.ResizeMethod.BILINEAR,
    "BICUBIC": tf.image.ResizeMethod.BICUBIC,
    "NEAREST_NEIGHBOR": tf.image.ResizeMethod.NEAREST_NEIGHBOR,
}
CELEBA_STEPS = (
    "To prepare CelebA: download img_align_celeba.zip and list_attr_celeba.txt by hand "
    "from the 'Large-scale CelebFaces Attributes (CelebA) Dataset' page (Google Drive "
    "links there), then run\n"
    "    python download.py --source PATH/img_align_celeba.zip "
    "--source PATH/list_attr_celeba.txt --data_dir {data_dir}\n"
    "Or train on the bundled synthetic faces with --dataset toyfaces (rendered "
    "automatically on first use)."
)


# --------------------------------------------------------------------------------------
# The attribute file
# --------------------------------------------------------------------------------------


def find_attribute_file(dataset_dir) -> Path:
    """The attribute file of a dataset folder (also looked for under ``Anno/``)."""
    dataset_dir = Path(dataset_dir)
    for folder in (dataset_dir, dataset_dir / "Anno"):
        for name in ATTRIBUTE_FILES:
            if (folder / name).is_file():
                return folder / name
    raise UserError(
        f"No attribute file in {dataset_dir}: expected {' or '.join(ATTRIBUTE_FILES)} there "
        "(or in its Anno/ folder). Put the dataset's attribute file there, or prepare "
        "CelebA with download.py."
    )


def check_labels(attr_df: pd.DataFrame, label_names: Sequence[str]) -> None:
    """Raise ``UserError`` if a graph label is not a column of the attribute table."""
    available = list(attr_df.columns)
    missing = [name for name in label_names if name not in attr_df.columns]
    if not missing:
        return
    hints = []
    for name in missing:
        close = difflib.get_close_matches(name, available, n=1)
        if close:
            hints.append(f"{name} -> {close[0]}?")
    hint = f" Did you mean: {', '.join(hints)}" if hints else ""
    raise UserError(
        f"The causal graph uses label(s) the attribute file does not have: "
        f"{', '.join(missing)}.{hint} Available: {', '.join(available)}. Rename the graph's "
        "nodes to match (names are case-sensitive) or choose another dataset."
    )


def resolve_dataset_dir(data_dir, dataset: str, seed: int = 0) -> Path:
    """``data_dir/dataset``, rendering the toy faces there on first use."""
    folder = Path(data_dir) / dataset
    if dataset == "toyfaces":
        try:
            find_attribute_file(folder)
        except UserError:
            _render_toyfaces(folder, seed)
        return folder
    if not folder.is_dir():
        if dataset == "celebA":
            raise UserError(
                f"Dataset folder {folder} does not exist. " + CELEBA_STEPS.format(data_dir=data_dir)
            )
        raise UserError(
            f"Dataset folder {folder} does not exist. Create it with the images in "
            f"{folder / 'images'} and list_attr_celeba.txt in {folder}, or use "
            "--dataset celebA (prepared by download.py) or --dataset toyfaces."
        )
    try:
        find_attribute_file(folder)
    except UserError as err:
        steps = CELEBA_STEPS.format(data_dir=data_dir) if dataset == "celebA" else ""
        raise UserError(f"{err} {steps}".strip()) from None
    return folder


def unreadable_data_error(err) -> UserError | None:
    """The UserError behind an ``image_dataset`` error whose images are all unreadable
    (TensorFlow raises it from inside the pipeline), or None for any other error."""
    text = str(getattr(err, "message", err))
    start, end = "[unreadable data set]", "[/unreadable data set]"
    if start in text and end in text:
        return UserError(text.split(start, 1)[1].split(end, 1)[0].strip())
    return None


def _render_toyfaces(folder: Path, seed: int) -> None:
    """Render the bundled toy faces into ``folder`` unless another process does (or did):
    runs started together render the set once, the others wait and reuse it."""
    import toy_faces

    try:
        rendered = toy_faces.ensure_dataset(
            folder, n=TOYFACES_DEFAULT_N, seed=seed,
            before=lambda: log.info(
                "Dataset %s not found: rendering the toy faces (%d images, seed %d) once.",
                folder, TOYFACES_DEFAULT_N, seed))
    except (OSError, RuntimeError) as err:
        raise UserError(
            f"Cannot render the toy faces into {folder} ({err}). Give --data_dir a folder "
            "you can write to, or render them elsewhere with python toy_faces.py --out "
            "<folder>/toyfaces and pass that <folder> as --data_dir.") from None
    if not rendered:
        log.info("Dataset %s was rendered by another run meanwhile; using it.", folder)


def check_images(dataset_dir, attr_df: pd.DataFrame) -> None:
    """Raise ``UserError`` if some rows' images are missing from ``dataset_dir/images``."""
    folder = Path(dataset_dir) / "images"
    if not folder.is_dir():
        raise UserError(
            f"Image folder {folder} does not exist. Put the dataset's images there "
            "(download.py does this for CelebA)."
        )
    with os.scandir(folder) as entries:
        present = {entry.name for entry in entries}
    missing = attr_df.index[~attr_df.index.isin(present)]
    if len(missing):
        raise UserError(
            f"{len(missing)} of the {len(attr_df)} images listed in the attribute file are "
            f"missing from {folder} (for example {missing[0]}). Copy the missing images "
            "there, or remove their rows from the attribute file."
        )


# --------------------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------------------


def _pick_seed(seed) -> int:
    if seed is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    return int(seed)


def _epoch_order(n: int, seed: int, epoch, shuffle: bool) -> tf.Tensor:
    """Row indices of one epoch: a permutation fixed by (seed, epoch), or 0..n-1."""
    indices = tf.range(n, dtype=tf.int64)
    if not shuffle:
        return indices
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(indices, seed=key)


def _label_table(attr_df: pd.DataFrame, label_names: Sequence[str]) -> np.ndarray:
    check_labels(attr_df, label_names)
    if len(attr_df) == 0:
        raise UserError("The attribute table is empty; there is nothing to train on.")
    return attr_df[list(label_names)].to_numpy(dtype=np.float32)


def _check_batch_size(batch_size: int) -> None:
    if int(batch_size) < 1:
        raise UserError(f"--batch_size must be at least 1, got {batch_size}.")


def rare_label_weights(table, rate: float) -> np.ndarray:
    """[n_labels, 2]: the weight of a row holding value 0 / 1 of each label, for
    ``--rare_label_rate``. A label whose rarer value v has frequency p < rate gives that
    value the weight rate (1 - p) / (p (1 - rate)), which alone would make it as frequent
    as ``rate``; every other entry is 1. A row's weight is ``row_repeats``."""
    table = np.asarray(table, np.float64)
    weights = np.ones([table.shape[1], 2])
    if not 0.0 < rate < 0.5:
        if rate != 0.0:
            raise UserError(f"--rare_label_rate must be in [0, 0.5), got {rate}.")
        return weights
    ones = (table > 0.5).mean(axis=0)
    for j, p1 in enumerate(ones):
        rare, p = (1, p1) if p1 <= 0.5 else (0, 1.0 - p1)
        if 0.0 < p < rate:
            weights[j, rare] = rate * (1.0 - p) / (p * (1.0 - rate))
    return weights


def rare_pair_weights(table, rate: float, pair_rate: float) -> np.ndarray:
    """[n, 2, n, 2]: the weight of a row holding value a of label i and value c of label
    j, for ``--rare_label_rate`` with ``--rare_pair_rate``. The diagonal (i, a, i, a)
    holds ``rare_label_weights(table, rate)``; a pair of values (i=a, j=c), i != j, held
    by a fraction p < pair_rate of the rows (p > 0) gets pair_rate (1 - p) / (p (1 -
    pair_rate)); every other entry is 1."""
    table = np.asarray(table, np.float64)
    n = table.shape[1]
    if not 0.0 <= pair_rate < 0.5:
        raise UserError(f"--rare_pair_rate must be in [0, 0.5), got {pair_rate}.")
    weights = np.ones([n, 2, n, 2])
    single = rare_label_weights(table, rate)
    for j in range(n):
        weights[j, 0, j, 0], weights[j, 1, j, 1] = single[j]
    if pair_rate == 0.0:
        return weights
    hot = np.stack([table <= 0.5, table > 0.5], axis=-1).astype(np.float64)  # [rows, n, 2]
    share = np.einsum("ria,rjc->iajc", hot, hot) / len(table)
    rare = (share > 0.0) & (share < pair_rate)
    for j in range(n):
        rare[j, :, j, :] = False
    weights[rare] = pair_rate * (1.0 - share[rare]) / (share[rare] * (1.0 - pair_rate))
    return weights


def rare_weights(table, rate: float, pair_rate: float = 0.0) -> np.ndarray | None:
    """The label weights of --rare_label_rate (with --rare_pair_rate: of pairs of values)
    for the rows of ``table``: ``rare_pair_weights`` or ``rare_label_weights``, or None
    when every weight is 1 (nothing is shown more often)."""
    weights = (rare_pair_weights(table, rate, pair_rate) if pair_rate
               else rare_label_weights(table, rate))
    return None if np.all(weights == 1.0) else weights


def row_repeats(labels, weights):
    """The integer weight of each label row [B, n] (values rounded to 0/1): the largest
    weight of the values it holds, rounded; >= 1. ``weights`` is [n, 2]
    (``rare_label_weights``, one per value) or [n, 2, n, 2] (``rare_pair_weights``, one
    per pair of values). Works on numpy arrays and on tensors alike (TensorFlow ops)."""
    labels = tf.cast(tf.round(tf.convert_to_tensor(labels, tf.float32)), tf.int32)
    w = tf.convert_to_tensor(weights, tf.float32)
    if w.shape.rank == 4:
        hot = tf.one_hot(labels, 2)                                      # [B, n, 2]
        per_pair = tf.einsum("bia,iajc,bjc->bij", hot, w, hot)           # [B, n, n]
        return tf.maximum(tf.round(tf.reduce_max(per_pair, axis=[1, 2])), 1.0)
    per_value = tf.where(labels > 0, w[:, 1], w[:, 0])                # [B, n]
    return tf.maximum(tf.round(tf.reduce_max(per_value, axis=1)), 1.0)


def label_dataset(
    attr_df: pd.DataFrame,
    label_names: Sequence[str],
    batch_size: int,
    seed=None,
    shuffle: bool = True,
) -> tf.data.Dataset:
    """An endless stream of float32 label batches ``[batch_size, len(label_names)]``.

    Each epoch is a fresh full-table permutation (fixed by the seed); its rows are cut
    into whole batches in one vectorised gather, the leftover rows of the epoch being
    dropped. Needs no images.
    """
    _check_batch_size(batch_size)
    table = _label_table(attr_df, label_names)
    n, k = table.shape
    seed = _pick_seed(seed)
    reps = -(-batch_size // n)  # tables smaller than a batch: join several epochs
    n_batches = (reps * n) // batch_size
    table_t = tf.constant(table)

    def epoch_batches(epoch):
        order = tf.concat(
            [_epoch_order(n, seed, epoch * reps + r, shuffle) for r in range(reps)], axis=0
        )
        rows = tf.gather(table_t, order[: n_batches * batch_size])
        return tf.data.Dataset.from_tensor_slices(tf.reshape(rows, [n_batches, batch_size, k]))

    ds = tf.data.Dataset.counter().flat_map(epoch_batches)
    return ds.prefetch(tf.data.AUTOTUNE)


def _decode(data: tf.Tensor, is_crop: bool) -> tf.Tensor:
    """uint8 [h, w, 3]: JPEGs decode only the crop window; anything else decodes whole."""

    def window(height, width):
        ch, cw = tf.minimum(CROP_SIZE, height), tf.minimum(CROP_SIZE, width)
        return (height - ch) // 2, (width - cw) // 2, ch, cw

    def jpeg():
        if not is_crop:
            return tf.io.decode_jpeg(data, channels=3)
        shape = tf.image.extract_jpeg_shape(data)
        top, left, ch, cw = window(shape[0], shape[1])
        return tf.image.decode_and_crop_jpeg(data, tf.stack([top, left, ch, cw]), channels=3)

    def other():
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        if not is_crop:
            return image
        shape = tf.shape(image)
        top, left, ch, cw = window(shape[0], shape[1])
        return image[top : top + ch, left : left + cw]

    is_jpeg = tf.strings.substr(data, 0, 3) == b"\xff\xd8\xff"
    image = tf.cond(is_jpeg, jpeg, other)
    image.set_shape([None, None, 3])
    return image


def _resize_method(resize_method: str, scale_size: int):
    """The tf.image resize method named by --resize_method, after checking the output size."""
    method = RESIZE_METHODS.get(str(resize_method).upper())
    if method is None:
        raise UserError(
            f"Unknown --resize_method {resize_method!r}; use one of {', '.join(RESIZE_METHODS)}."
        )
    if int(scale_size) < 1:
        raise UserError(f"--input_scale_size must be a positive size, got {scale_size}.")
    return method


def _image_loader(paths, labels, size, channels, method, is_crop, grayscale, flip, flip_seed):
    """The map function (position, row index) -> (position, image, label); index -1 is a marker."""
    k = labels.shape[1]

    def load(position, index):
        if_marker = tf.zeros([size, size, channels]), tf.zeros([k])
        return tf.cond(index < 0, lambda: (position, *if_marker),
                       lambda: load_image(position, index))

    def load_image(position, index):
        image = _decode(tf.io.read_file(paths[index]), is_crop)
        image = tf.image.resize(image, [size, size], method=method)
        image = tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0)
        if grayscale:
            image = tf.image.rgb_to_grayscale(image)
        if flip:
            key = tf.stack([tf.constant(flip_seed, tf.int64), position])
            coin = tf.random.stateless_uniform([], seed=key)
            image = tf.cond(coin < 0.5, lambda: tf.image.flip_left_right(image), lambda: image)
        image.set_shape([size, size, channels])
        return position, image, labels[index]

    return load


def _skip_tracker(paths_np, order, m, n, folder, is_crop):
    """The scan function that names skipped files and stops on an epoch with nothing read."""
    warned: set[str] = set()

    def report_skipped(first, end):
        # Positions first..end-1 vanished in ignore_errors: name their files (a few).
        for position in range(int(first), int(end)):
            if len(warned) >= MAX_NAMED_SKIPS:
                break
            epoch, offset = divmod(position, m)
            index = int(order(epoch)[offset])
            path = paths_np[index]
            if path in warned:
                continue
            warned.add(path)
            try:
                _decode(tf.io.read_file(path), is_crop)
                reason = "unknown error"
            except (tf.errors.OpError, ValueError) as err:
                reason = getattr(err, "message", str(err)).splitlines()[0]
                reason = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:.*$", "", reason)
            log.warning("Skipped image %s: it cannot be read or decoded (%s).%s", path, reason,
                        " Further unreadable images are skipped without a warning."
                        if len(warned) == MAX_NAMED_SKIPS else "")
        return np.int64(0)

    def track(state, element):
        # state: (next position expected, images read so far in this epoch). A gap in the
        # positions is a skipped file; an epoch's end marker with nothing read stops the
        # pipeline instead of letting it look for a readable image for ever.
        expected, read = state
        position, image, label = element
        is_end = position < 0
        end = tf.where(is_end, (-position) * m, position)  # an end marker: -(epoch + 1)
        report = tf.cond(
            end > expected,
            lambda: tf.py_function(report_skipped, [expected, end], tf.int64),
            lambda: tf.constant(0, tf.int64),
        )
        unreadable = tf.logical_and(is_end, tf.equal(read, 0))
        check = tf.debugging.Assert(tf.logical_not(unreadable), [UNREADABLE_MESSAGE.format(
            n=n, folder=folder)])
        with tf.control_dependencies([check]):
            expected = tf.where(is_end, end, position + 1) + 0 * report
            read = tf.where(is_end, tf.constant(0, tf.int64), read + 1)
        return (expected, read), (position, image, label)

    return track


def image_dataset(
    dataset_dir,
    attr_df: pd.DataFrame,
    label_names: Sequence[str],
    batch_size: int,
    *,
    scale_size: int = 64,
    is_crop: bool = True,
    resize_method: str = "AREA",
    grayscale: bool = False,
    num_worker: int = 24,
    seed=None,
    shuffle: bool = True,
    flip: bool = True,
    repeat: bool = True,
    repeats=None,
) -> tf.data.Dataset:
    """Batches of ``(images float32 [B, S, S, C] in [0, 255], labels float32 [B, n])``.

    ``repeats`` (ints, one per row of attr_df; ``--rare_label_rate``) makes each epoch a
    permutation of the rows each repeated that many times (its flips drawn per position).

    Images are read from ``dataset_dir/images/<index of attr_df>``. The order (one
    permutation per epoch) and the flips are fixed by ``seed``. A file that cannot be
    read or decoded is skipped; the first time, a warning names it. An epoch in which no
    image can be read raises tf.errors.InvalidArgumentError (see
    ``unreadable_data_error``).
    """
    _check_batch_size(batch_size)
    method = _resize_method(resize_method, scale_size)
    table = _label_table(attr_df, label_names)
    n = table.shape[0]
    rows = np.arange(n) if repeats is None else np.repeat(np.arange(n), np.asarray(repeats, int))
    m = len(rows)  # positions per epoch
    rows_t = tf.constant(rows, tf.int64)
    size, channels = int(scale_size), 1 if grayscale else 3
    seed = _pick_seed(seed)
    folder = Path(dataset_dir) / "images"
    paths_np = np.array([str(folder / name) for name in attr_df.index])
    paths, labels = tf.constant(paths_np), tf.constant(table)
    parallel = max(1, min(int(num_worker), os.cpu_count() or 1))

    def order(e):
        return tf.gather(rows_t, _epoch_order(m, seed, e, shuffle))

    def epoch(e):
        items = tf.data.Dataset.from_tensor_slices(
            (e * m + tf.range(m, dtype=tf.int64), order(e)))
        end = tf.data.Dataset.from_tensors((-(e + 1), tf.constant(-1, tf.int64)))
        return items.concatenate(end)

    load = _image_loader(paths, labels, size, channels, method, is_crop, grayscale, flip,
                         flip_seed=seed ^ 0x5DEECE66D)
    track = _skip_tracker(paths_np, order, m, n, folder, is_crop)
    epochs = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(1)
    ds = epochs.flat_map(epoch)
    ds = ds.map(load, num_parallel_calls=parallel, deterministic=True)
    ds = ds.ignore_errors()
    ds = ds.scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), track)
    ds = ds.filter(lambda position, image, label: position >= 0)
    ds = ds.map(lambda position, image, label: (image, label))
    ds = ds.batch(int(batch_size), drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)
