"""The panel of independent attribute readers that the fidelity report reads images with.

One classifier cannot be trusted on generated images: two readers that are both >= 0.99
accurate on real toy faces disagree on generated rare-combination faces (bald women,
made-up men), because those images lie off the data's manifold where nothing pins a
reading down. The report therefore reads every image with a panel of readers trained
separately (``figure_scripts.classifier``: different seeds and training faces, two
architectures, augmented training) and gives every image-level number as the panel's
mean with its min-max; a target passes only when every reader passes it, and the share
of images on which all readers agree says how far a reading can be trusted.

    panel = get_panel(dataset_dir, image_size, channels=3)   # trains missing readers
    panel = get_panel(..., train_if_missing=False)           # None unless all are cached
    reading = panel.read(images)        # PanelReading: probs [R, N, A], features per reader
    panel.columns(names)                # the attributes' columns (UserError if unknown)

Each reader is cached in its own folder, ``<dataset_dir>/classifiers/<size>/<name>/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from errors import UserError
from figure_scripts.classifier import (
    AttributeClassifier,
    ReaderSpec,
    TrainingPlan,
    get_classifier,
)

PANEL = (ReaderSpec("a-maxpool", "maxpool", 0),
         ReaderSpec("b-strided", "strided", 1),
         ReaderSpec("c-maxpool", "maxpool", 2))


@dataclass
class PanelReading:
    """What every reader read from one set of N images."""

    probs: np.ndarray  # [R, N, A]: P(attribute = 1) by each reader
    features: list  # R arrays [N, d_r] (the readers' feature spaces differ)

    def __len__(self) -> int:
        return int(self.probs.shape[1])

    def rates(self, column: int) -> np.ndarray:
        """[R]: each reader's share of the images read as attribute ``column`` = 1 (NaN
        when there are no images)."""
        if len(self) == 0:
            return np.full(len(self.probs), np.nan)
        return (self.probs[:, :, column] > 0.5).mean(axis=1)

    def agree(self, columns: Sequence[int]) -> np.ndarray:
        """[N, len(columns)]: whether all readers read the attribute the same way."""
        read = self.probs[:, :, list(columns)] > 0.5
        return read.all(axis=0) | (~read).all(axis=0)

    @classmethod
    def concat(cls, readings: Sequence[PanelReading]) -> PanelReading:
        readings = [r for r in readings if len(r)]
        if not readings:
            raise ValueError("no readings to join")
        return cls(np.concatenate([r.probs for r in readings], axis=1),
                   [np.concatenate(parts) for parts in zip(*(r.features for r in readings),
                                                           strict=True)])


def spread(values) -> dict:
    """The panel's view of one number per reader: {"mean", "min", "max"} over the readers
    that measured it (NaN when none did)."""
    values = np.asarray(values, float).reshape(-1)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"mean": float(finite.mean()), "min": float(finite.min()),
            "max": float(finite.max())}


class Panel:
    """Readers that read the same attributes of images of the same size."""

    def __init__(self, readers: Sequence[AttributeClassifier], specs: Sequence[ReaderSpec]):
        if len(readers) != len(specs) or not readers:
            raise ValueError("one reader per spec, at least one")
        self.readers, self.specs = list(readers), list(specs)
        self.names = [spec.name for spec in self.specs]
        self.attribute_names = list(self.readers[0].attribute_names)
        if any(r.attribute_names != self.attribute_names for r in self.readers):
            raise UserError("The cached attribute readers read different attributes; train "
                            "them again (--retrain_readers).")
        self.image_size, self.channels = self.readers[0].image_size, self.readers[0].channels

    def __len__(self) -> int:
        return len(self.readers)

    def columns(self, names: Sequence[str]) -> list[int]:
        """Column of each label in the readers' output (UserError if they lack one)."""
        missing = [n for n in names if n not in self.attribute_names]
        if missing:
            raise UserError(f"The attribute readers know no labels {missing} (they read "
                            f"{', '.join(self.attribute_names)}): the run's labels are "
                            "missing from the data set's attribute file.")
        return [self.attribute_names.index(n) for n in names]

    def read(self, images) -> PanelReading:
        """Every reader's probabilities and features of ``images`` [N, H, W, C] in [0, 255]."""
        probs, features = [], []
        for reader in self.readers:
            p, f = reader.read(images)
            probs.append(p)
            features.append(f)
        return PanelReading(np.stack(probs), features)

    @property
    def info(self) -> dict:
        """{reader name: its classifier.json}."""
        return {name: reader.info for name, reader in zip(self.names, self.readers, strict=True)}


def get_panel(dataset_dir, image_size: int, channels: int = 3, *,
              specs: Sequence[ReaderSpec] = PANEL, train_if_missing: bool = True,
              progress: bool = True, cache_dir=None, retrain: bool = False,
              plan: TrainingPlan | None = None) -> Panel | None:
    """The panel of ``specs`` for ``dataset_dir`` at ``image_size``: cached readers are
    loaded, missing ones trained and cached first (``train_if_missing``; otherwise a
    missing reader makes the answer None; ``retrain`` trains them all again)."""
    readers = []
    for spec in specs:
        reader = get_classifier(dataset_dir, image_size, channels, reader=spec,
                                train_if_missing=train_if_missing, progress=progress,
                                cache_dir=cache_dir, retrain=retrain, plan=plan)
        if reader is None:
            return None
        readers.append(reader)
    return Panel(readers, specs)
