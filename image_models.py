"""The one place that maps ``--model_type`` to an image-model class, and the one way to
draw images from a model (``generate_images``).

Both the Trainer (which trains a model) and ``saved_run`` (which opens a saved one for
reading) build image models here, so a new model needs one line in ``IMAGE_MODELS``. The
Trainer's figures, ``SavedRun.generate``, the figure scripts' sampler and the fidelity
report all generate through ``generate_images``.
"""

from __future__ import annotations

import contextlib
import importlib
import weakref

import numpy as np

from errors import UserError

IMAGE_MODELS = {  # --model_type -> (module, class)
    "began": ("causal_began.CausalBEGAN", "CausalBEGAN"),
    "dcgan": ("causal_dcgan.CausalGAN", "CausalGAN"),
}


def make_model(model_type: str, model_config, label_names, image_size: int, channels: int,
               **kwargs):
    """The image model of ``--model_type`` (build it inside the strategy's scope)."""
    if model_type not in IMAGE_MODELS:
        raise UserError(f"--model_type {model_type!r} is unknown: use one of "
                        f"{', '.join(IMAGE_MODELS)}.")
    module, cls = IMAGE_MODELS[model_type]
    return getattr(importlib.import_module(module), cls)(
        model_config, label_names, image_size, channels, **kwargs)


# per image model: its compiled generate (the model is held weakly, so it can be freed)
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_generate(model):
    """``model.generate(labels, z_gen)`` as one tf.function per model (reduce_retracing:
    chunks of another size reuse the graph), reused across calls; a model that cannot be
    weakly referenced is compiled at each call."""
    import tensorflow as tf

    try:
        fn = _COMPILED.get(model)
    except TypeError:
        fn = None
    if fn is None:
        try:
            ref = weakref.ref(model)
        except TypeError:
            fn = tf.function(lambda labels, z: model.generate(labels, z), reduce_retracing=True)
        else:
            fn = tf.function(lambda labels, z: ref().generate(labels, z), reduce_retracing=True)
            with contextlib.suppress(TypeError):
                _COMPILED[model] = fn
    return fn


def generate_images(model, labels, z_gen, batch_size: int) -> np.ndarray:
    """Images [N, H, W, C] (float32 numpy, the model's [0, 255] range, not clipped) for
    controller labels [N, n] and image noise z_gen [N, z_dim], in chunks of
    ``batch_size`` rows through ``compiled_generate(model)``. No rows: an empty array
    [0, 1, 1, C]."""
    import tensorflow as tf

    labels = np.asarray(labels, np.float32)
    z_gen = np.asarray(z_gen, np.float32)
    fn = compiled_generate(model)
    parts = [np.asarray(fn(tf.constant(labels[i:i + batch_size]),
                           tf.constant(z_gen[i:i + batch_size])), np.float32)
             for i in range(0, len(labels), int(batch_size))]
    if not parts:
        return np.zeros([0, 1, 1, int(getattr(model, "channels", 1))], np.float32)
    return np.concatenate(parts)
