"""The trainer's own loop at the demo's CausalGAN flags, on a tiny toy-face set: what
``Trainer.train_loop`` achieves end to end against the bare compiled iteration.

    build_demo_trainer(folder)      main.get_trainer on --dataset toyfaces rendered in folder
    LoopTimer(trainer).loop(iters)  (seconds in train_loop, seconds of figures/checkpoints)
    LoopTimer(trainer).bare(iters)  seconds of the same train function on one fixed batch

The loop counts everything ``train_loop`` does per iteration: the input pipeline (with
--rare_label_rate's repeated rows), the controller's labels with their resampling, the
non-finite accounting, the progress bar and the summary steps (every --log_step). What
every call of ``train_loop`` does once, building the input pipeline (``image_stream``)
and writing figures and a checkpoint at the end, is timed on its own and reported apart.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from pathlib import Path

import numpy as np

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "toyfaces_demo.txt"
# what the demo's flag file says, but that concerns what to run, where and for how long
NOT_TIMED = {"--dataset", "--causal_model", "--num_gpu", "--is_pretrain", "--pretrain_iter",
             "--pt_cc_lr", "--pt_dcc_lr", "--is_train", "--num_iter", "--log_step",
             "--figure_ext"}


def demo_flags(path=DEMO_CONFIG) -> list[str]:
    """The image-model flags of the README's demo, read from its flag file (so the
    benchmarks time the demo as it is now configured)."""
    import main

    words, out = main.expand_flag_files([f"@{path}"]), []
    for flag, value in zip(words[::2], words[1::2], strict=True):
        if flag not in NOT_TIMED:
            out += [flag, value]
    return out


DEMO_FLAGS = demo_flags()


def build_demo_trainer(folder, n_images: int = 1000, log_step: int = 50):
    """A Trainer with the demo's CausalGAN flags on ``n_images`` toy faces in ``folder``."""
    import main
    import toy_faces

    folder = Path(folder)
    toy_faces.render_dataset(folder / "data" / "toyfaces", n=n_images, seed=0, workers=2,
                             progress=False)
    argv = ["--causal_model", "big_causal_graph", "--dataset", "toyfaces", "--data_dir",
            str(folder / "data"), "--log_dir", str(folder / "logs"), "--num_gpu", "0",
            "--is_train", "True", "--num_iter", "1", "--log_step", str(log_step),
            "--figure_ext", "png", *DEMO_FLAGS]
    with contextlib.redirect_stdout(io.StringIO()):  # the --rare_label_rate report
        trainer = main.get_trainer(argv)
    logging.getLogger().setLevel(logging.WARNING)
    return trainer


class LoopTimer:
    """Times ``trainer.train_loop`` and its bare train function, figures apart."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.side_seconds = 0.0  # pipeline start, figures, checkpoints of the last loop
        for name in ("image_stream", "write_figures", "_save_good"):
            setattr(trainer, name, self._timed(getattr(trainer, name)))
        self.batch = None

    def _timed(self, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.side_seconds += time.perf_counter() - start
        return wrapper

    def loop(self, iters: int) -> tuple[float, float]:
        """(seconds of ``train_loop`` for ``iters`` more iterations, of which the pipeline's
        start, figures and checkpoints)."""
        trainer = self.trainer
        trainer.model_config.num_iter = trainer.model_step + int(iters)
        self.side_seconds = 0.0
        start = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # the progress bar
            trainer.train_loop()
        return time.perf_counter() - start, self.side_seconds

    def warm_up(self) -> None:
        """Trace everything the timed loops run: the train function (a short loop) and the
        summary step's diagnostics (one summary written)."""
        self.loop(2)
        self.bare(1)
        self.trainer.write_summaries(self.trainer._train_fn(self.batch), self.batch)

    def bare(self, iters: int) -> float:
        """Seconds of ``iters`` calls of the trainer's train function on one fixed batch,
        each waited for as train_loop waits (its non-finite mask)."""
        trainer = self.trainer
        if self.batch is None:
            self.batch = next(iter(trainer.image_stream()))
        start = time.perf_counter()
        for _ in range(int(iters)):
            np.asarray(trainer._train_fn(self.batch)["nonfinite"])
        return time.perf_counter() - start
