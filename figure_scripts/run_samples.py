"""What the fidelity report draws from a run: controller labels under do() and cond(),
and the images the image model generates from them.

Only the image-model interface is used (``generate(labels, z_gen)``, ``z_dim``,
``channels``); image noise is U[-1, 1]^z_dim as in the Trainer's fixed figure inputs.
Conditioning never waits on a condition the controller (almost) never meets: see
``LabelSampler``.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from image_models import generate_images

GENERATE_BATCH = 256
MAX_CONDITIONING_DRAWS = 4_000_000  # controller draws one conditional may cost
_CONTROLLER_LOGGER = "causal_controller.CausalController"


@contextlib.contextmanager
def quiet_conditioning():
    """Rejection sampling that finds too few samples warns; the report counts instead."""
    loggers = [logging.getLogger(name) for name in (_CONTROLLER_LOGGER, "tensorflow")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:  # also TensorFlow's note that each condition traces a sampler
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _matrix(label_dict: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """{name: (N, 1)} -> float32 [N, len(names)]."""
    if not names:
        return np.zeros([0, 0], np.float32)
    return np.concatenate([np.asarray(label_dict[n], np.float32).reshape(-1, 1) for n in names],
                          axis=1)


def _sample(cc, names, n: int, seed: int, do=None, cond=None) -> np.ndarray:
    """Controller labels [<=n, k] (fewer when conditioning finds fewer)."""
    with quiet_conditioning():
        return _matrix(cc.sample_label(cond_dict=cond, do_dict=do, N=int(n), seed=int(seed)),
                       names)


class LabelSampler:
    """Controller labels under do() or cond(), never stuck on a condition the controller
    (almost) never meets: a probe of ``probe`` samples measures how often each condition
    holds (jointly, for a condition on several labels), and conditioning asks for at most
    as many samples as MAX_CONDITIONING_DRAWS draws would give at that rate (none when
    the probe never met the condition)."""

    def __init__(self, cc, names: Sequence[str], seed: int = 0, probe: int = 20000):
        self.cc, self.names = cc, list(names)
        self.observed = _sample(cc, self.names, probe, seed)

    def condition_rate(self, cond: Mapping[str, int]) -> float:
        """The share of the probe's samples that meet ``cond`` (1.0 for a label the
        probe does not hold)."""
        if not len(self.observed):
            return 0.0
        keep = np.ones(len(self.observed), bool)
        for name, value in cond.items():
            if name in self.names:
                keep &= (self.observed[:, self.names.index(name)] > 0.5) == bool(value)
        return float(keep.mean())

    def __call__(self, n: int, seed: int, do=None, cond=None) -> np.ndarray:
        if cond:
            n = min(int(n), int(self.condition_rate(cond) * MAX_CONDITIONING_DRAWS))
            if n < 1:
                return np.zeros([0, len(self.names)], np.float32)
        return _sample(self.cc, self.names, n, seed, do=do, cond=cond)


def stratified_labels(sampler: LabelSampler, n: int, seed: int = 0) -> np.ndarray:
    """About ``n`` controller label vectors: for each label and value v in {0, 1} the same
    share drawn conditioned on label = v, so every label has both values often enough."""
    names = sampler.names
    per = max(1, int(np.ceil(n / (2 * len(names)))))
    parts = [sampler(per, seed + 7 * i + v, cond={name: v})
             for i, name in enumerate(names) for v in (0, 1)]
    return np.concatenate(parts) if parts else np.zeros([0, len(names)], np.float32)


def generate(model, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Images [N, H, W, C] in [0, 255] (clipped) for controller labels [N, n_labels]; the
    image noise is U[-1, 1]^z_dim drawn from ``seed``."""
    labels = np.asarray(labels, np.float32)
    z = np.random.default_rng(seed).uniform(-1.0, 1.0, (len(labels), int(model.z_dim)))
    return np.clip(generate_images(model, labels, z, GENERATE_BATCH), 0.0, 255.0)
