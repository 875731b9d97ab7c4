"""The one place that maps ``--model_type`` to an image-model class.

Both the Trainer (which trains a model) and ``saved_run`` (which opens a saved one for
reading) build image models here, so a new model needs one line in ``IMAGE_MODELS``.
"""

from __future__ import annotations

import importlib

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
