"""The synthetic experiments' Trainer: one data set type, six GANs per run, R runs at once.

Each run (``--num_runs`` of them, one by default) has its own folder,
``--model_dir``/synth_<data_type>_<MMDD_HHMMSS>[_2, _3 ...], or the ``--load_path``::

    params.json          the flags; "seed" is this run's (the process's seed + run index)
    data.json            the data set's random mechanisms (drawn once, reloaded with the run)
    data_tvd.csv         iter,tvd,mvd between two independent data samples: the TVD floor
    data_scatter.png     X1-X2, X1-X3, X2-X3 of 5,000 data samples
    checkpoints/         ckpt-<iter>.npz: every variable of this run by its path (the last 3)
    <generator>/         linear collider complete fc3 fc5 fc10
        tvd.csv          iter,tvd,mvd on the 10x10x10 grid, --tvd_samples samples each
        events.out...    TensorBoard scalars tvd, mvd, d_loss, g_loss and the scatter image
        scatter/<iter>.png   the generator's samples (colour) over the data's (grey)

One training iteration of every GAN of every run is one compiled call
(``GANSet.train_step``); the TVDs are measured from one sampling call every
``--log_step`` iterations and at the end. An update whose losses or gradients hold NaN
or Inf is skipped for that GAN of that run and counted (``skipped=`` on the progress
bar, the scalar ``skipped_updates`` beside ``tvd``); after ``--max_nonfinite`` of them in a
row for one GAN of one run the process stops with ``nonfinite.NonFiniteError`` (exit 2)
and writes no further checkpoint (periodic ones also wait while updates are skipped). Row ``iter`` of tvd.csv is measured after
``iter`` updates. Checkpoints are per run (numpy archives of the run's slice of the
stacked variables, since one tf.train.Checkpoint cannot be split by run), so any run
can be loaded alone; a loaded run draws fresh training noise from its seed and step.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

import nonfinite  # noqa: E402
from errors import UserError  # noqa: E402
from synthetic.config import ARCHITECTURE_FLAGS, RECIPE_FLAGS  # noqa: E402
from synthetic.models import (  # noqa: E402
    NONFINITE_NAMES,
    GANSet,
    draw_data_params,
    grid_histogram,
    tvd_and_max_diff,
)
from utils import new_run_dir, write_json  # noqa: E402

log = logging.getLogger("synthetic")
SCATTER_POINTS = 5000      # points per scatter plot, as in the reference
CHECKPOINTS_KEPT = 3
PAIRS = ((0, 1), (0, 2), (1, 2))  # X1-X2, X1-X3, X2-X3
SHORT = {"linear": "lin", "collider": "col", "complete": "cpl",
         "fc3": "fc3", "fc5": "fc5", "fc10": "fc10"}
NOT_SAVED = ("load_path", "num_runs")  # flags that describe the process, not a run


# ----------------------------------------------------------------------------- files
class TVDLog:
    """tvd.csv (iter,tvd,mvd); a resumed run keeps the rows up to its checkpoint's step."""

    def __init__(self, path: Path, start: int):
        self.path = path
        rows = read_tvd_csv(path) if start > 0 and path.exists() else []
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            csv.writer(f).writerow(["iter", "tvd", "mvd"])
        self.rows = [r for r in rows if r[0] <= start]
        for row in self.rows:
            self._append(*row)

    def _append(self, step: int, tvd: float, mvd: float) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([step, f"{tvd:.6f}", f"{mvd:.6f}"])

    def write(self, step: int, tvd: float, mvd: float) -> None:
        self.rows.append((step, tvd, mvd))
        self._append(step, tvd, mvd)


def read_tvd_csv(path) -> list[tuple[int, float, float]]:
    """Rows (iter, tvd, mvd) of a tvd.csv."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        return [(int(r[0]), float(r[1]), float(r[2])) for r in reader if r]


def scatter_figure(x_gen: np.ndarray | None, x_data: np.ndarray, title: str, path: Path) -> bytes:
    """Three panels X1-X2, X1-X3, X2-X3; generated points (if any) over the data's in grey.
    Saved to ``path``; the PNG bytes are returned for TensorBoard."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, (i, j) in zip(axes, PAIRS, strict=True):
        ax.scatter(x_data[:, i], x_data[:, j], s=1, c="0.75", label="data")
        if x_gen is not None:
            ax.scatter(x_gen[:, i], x_gen[:, j], s=1, c="tab:blue", alpha=0.5,
                       label="generator")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"X{i + 1}", ylabel=f"X{j + 1}",
               title=f"X{i + 1}-X{j + 1}")
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {statistics.stdev(values):.4f}"


def ranking_table(finals: dict[str, list[float]], lowest: dict[str, list[float]],
                  floors: list[float]) -> str:
    """Generators ranked by final TVD (mean over runs; ± one standard deviation)."""
    runs = len(floors)
    head = "final TVD" + (f" (mean ± sd, {runs} runs)" if runs > 1 else "")
    width = max(len(head), 9)
    lines = [f"{'rank':>4}  {'generator':<9}  {head:>{width}}  {'lowest TVD':>16}"]
    order = sorted(finals, key=lambda name: statistics.fmean(finals[name]))
    for rank, name in enumerate(order, 1):
        lines.append(f"{rank:>4}  {name:<9}  {_spread(finals[name]):>{width}}  "
                     f"{_spread(lowest[name]):>16}")
    lines.append(f"TVD floor (two independent data samples of the same size): "
                 f"{_spread(floors)}")
    return "\n".join(lines)


def set_threads(count: int) -> None:
    """TensorFlow's intra- and inter-op thread counts; only possible before TensorFlow
    starts running, so a process that already ran something keeps its counts (a warning)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(count)
        tf.config.threading.set_inter_op_parallelism_threads(count)
    except RuntimeError:
        if tf.config.threading.get_intra_op_parallelism_threads() != count:
            log.warning("--num_threads %d ignored: TensorFlow is already running in this "
                        "process", count)


# ----------------------------------------------------------------------------- runs
class Run:
    """One run's folder: its flags, data set, TVD logs and TensorBoard writers."""

    def __init__(self, path: Path, params: dict, data_params: dict, names, start: int):
        self.path, self.params, self.data_params = path, params, data_params
        self.logs = {n: TVDLog(path / n / "tvd.csv", start) for n in names}
        self.floor_log = TVDLog(path / "data_tvd.csv", start)
        self.writers = {n: tf.summary.create_file_writer(str(path / n)) for n in names}
        self.floor = float("nan")
        self.current: dict[str, float] = {}  # the latest measured TVD of each generator
        for name, log in self.logs.items():
            if log.rows:
                self.current[name] = log.rows[-1][1]

    def lowest(self, name: str) -> float:
        return min([row[1] for row in self.logs[name].rows] + [self.current[name]])

    def latest_checkpoint(self) -> Path | None:
        found = sorted((self.path / "checkpoints").glob("ckpt-*.npz"),
                       key=lambda p: int(p.stem.split("-")[1]))
        return found[-1] if found else None

    def save(self, state: dict, step: int) -> None:
        folder = self.path / "checkpoints"
        folder.mkdir(exist_ok=True)
        tmp = folder / f"ckpt-{step}.tmp.npz"
        np.savez(tmp, **state)
        os.replace(tmp, folder / f"ckpt-{step}.npz")
        found = sorted(folder.glob("ckpt-*.npz"), key=lambda p: int(p.stem.split("-")[1]))
        for old in found[:-CHECKPOINTS_KEPT]:
            old.unlink()
        for writer in self.writers.values():
            writer.flush()


def load_run_folder(config, given: set[str]) -> tuple[Path, dict, dict]:
    """A saved run: its folder, flags and data set. It keeps its data set, networks and
    (unless given again) its learning rates and batch size; the other flags are the
    command line's."""
    path = Path(config.load_path).expanduser()
    if not (path / "params.json").is_file() or not (path / "data.json").is_file():
        raise UserError(f"--load_path {config.load_path}: not a synthetic run folder (it "
                        "needs params.json and data.json); give a folder such as "
                        "logs/synth_collider_1128_093000")
    if config.num_runs != 1:
        raise UserError("--load_path loads one run; leave out --num_runs")
    saved = json.loads((path / "params.json").read_text())
    for flag in ARCHITECTURE_FLAGS:
        if flag in given and getattr(config, flag) != saved[flag]:
            raise UserError(f"--{flag} {getattr(config, flag)} differs from the loaded run's "
                            f"{saved[flag]}; leave it out with --load_path")
    for flag in ARCHITECTURE_FLAGS + RECIPE_FLAGS:
        if flag not in given:
            setattr(config, flag, saved[flag])
    data_params = json.loads((path / "data.json").read_text())
    if data_params["data_type"] != config.data_type:
        raise UserError(f"{path}/data.json holds a {data_params['data_type']} data set but "
                        f"params.json says {config.data_type}")
    return path.resolve(), saved, data_params


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """Builds (or loads) the runs, trains them (``train``), measures them (``evaluate``,
    ``scatter``), saves them (``save``); ``report()`` is the final ranking table."""

    def __init__(self, config, given_flags=frozenset()):
        if config.num_threads:
            set_threads(config.num_threads)
        self.config = config
        given = set(given_flags)
        self.loaded = bool(config.load_path)
        if self.loaded:
            path, _, data_params = load_run_folder(config, given)
            runs = [(path, data_params)]
        else:
            if not config.is_train:
                raise UserError("--is_train False only measures a saved run: give --load_path "
                                "<run folder>, or train with --is_train True")
            if config.seed is None:
                config.seed = int.from_bytes(os.urandom(4), "little") % (2 ** 31)
            runs = []
            for r in range(config.num_runs):
                path = new_run_dir(config.model_dir, f"synth_{config.data_type}")
                data_params = draw_data_params(config.data_type,
                                               np.random.default_rng(config.seed + r))
                write_json(path / "data.json", data_params)
                runs.append((path, data_params))
        seeds = [config.seed + r for r in range(len(runs))]
        self.gans = GANSet(config, [d for _, d in runs], seeds,
                           jit_compile=config.jit_compile)
        self.names = self.gans.names
        if self.loaded:
            self._restore(runs[0][0], seeds[0])
        start = self.step
        self.runs = []
        for r, (path, data_params) in enumerate(runs):
            params = {k: v for k, v in vars(config).items() if k not in NOT_SAVED}
            params.update(seed=seeds[r], run_index=r, runs_in_process=len(runs))
            write_json(path / "params.json", params)
            self.runs.append(Run(path, params, data_params, self.names, start))
        limit = int(getattr(config, "max_nonfinite", nonfinite.DEFAULT_LIMIT))
        others = (" The other runs of this process stop with it; each resumes from its own "
                  "last checkpoint." if len(self.runs) > 1 else "")
        # counters[r][generator]: the skipped updates of one GAN of one run
        self.counters = [{name: nonfinite.NonFiniteCounter(
            limit, NONFINITE_NAMES, what=f"The {name} GAN of {run.path}",
            advice=f"Resume from its last checkpoint with --load_path {run.path}.{others}")
            for name in self.names} for run in self.runs]
        self.train_seconds = 0.0
        self.trained = 0  # iterations trained by this process

    def _restore(self, path: Path, seed: int) -> None:
        found = sorted((path / "checkpoints").glob("ckpt-*.npz"),
                       key=lambda p: int(p.stem.split("-")[1]))
        if not found:
            raise UserError(f"--load_path {path}: no checkpoints/ckpt-<iter>.npz (the run "
                            "stopped before saving one)")
        with np.load(found[-1]) as archive:
            try:
                self.gans.load_run_state(dict(archive))
            except ValueError as err:
                raise UserError(f"--load_path {path}: {err}") from err
        step = self.step
        self.gans.rng.reset_from_seed([seed, 1 + 2 * step])
        self.gans.eval_rng.reset_from_seed([seed, 2 + 2 * step])

    @property
    def step(self) -> int:
        return int(self.gans.step.numpy())

    @property
    def model_dirs(self) -> list[Path]:
        return [run.path for run in self.runs]

    # ------------------------------------------------------------------ measuring
    def evaluate(self, losses: dict | None = None, record: bool = True) -> None:
        """TVD and max cell difference of every generator of every run against fresh
        data samples, written to tvd.csv and TensorBoard (with the losses, if given)
        unless ``record`` is False (a loaded run that is only measured)."""
        step = self.step
        x = self.gans.sample(self.config.tvd_samples).numpy()
        losses = {k: v.numpy() for k, v in losses.items()} if losses else None
        for r, run in enumerate(self.runs):
            p_data = grid_histogram(x[r, 0])
            run.floor, floor_mvd = tvd_and_max_diff(grid_histogram(x[r, 1]), p_data)
            if record:
                run.floor_log.write(step, run.floor, floor_mvd)
            for k, name in enumerate(self.names):
                tvd, mvd = tvd_and_max_diff(grid_histogram(x[r, k + 2]), p_data)
                run.current[name] = tvd
                if not record:
                    continue
                run.logs[name].write(step, tvd, mvd)
                with run.writers[name].as_default(step=step):
                    tf.summary.scalar("tvd", tvd)
                    tf.summary.scalar("mvd", mvd)
                    tf.summary.scalar("skipped_updates", self.counters[r][name].skipped)
                    if losses is not None:
                        tf.summary.scalar("d_loss", losses[f"{name}/d_loss"][r])
                        tf.summary.scalar("g_loss", losses[f"{name}/g_loss"][r])

    def scatter(self) -> None:
        """Scatter plots of every generator (and, once, of the data) of every run."""
        step = self.step
        x = self.gans.sample(SCATTER_POINTS).numpy()
        for r, run in enumerate(self.runs):
            data_type = run.data_params["data_type"]
            data_png = run.path / "data_scatter.png"
            if not data_png.exists():
                scatter_figure(None, x[r, 0], f"data: {data_type}", data_png)
            for k, name in enumerate(self.names):
                png = scatter_figure(x[r, k + 2], x[r, 0], f"{name} generator on {data_type} "
                                     f"data, iteration {step}",
                                     run.path / name / "scatter" / f"{step:06d}.png")
                with run.writers[name].as_default(step=step):
                    tf.summary.image("scatter", tf.io.decode_png(png, channels=3)[None])

    def save(self) -> None:
        """A checkpoint of every run, but none of a run whose variables hold NaN/Inf."""
        step = self.step
        for r, run in enumerate(self.runs):
            state = self.gans.run_state(r)
            if not all(np.isfinite(v).all() for v in state.values() if v.dtype.kind == "f"):
                log.warning("%s: its variables hold NaN or Inf at step %d; no checkpoint is "
                            "written (the last good one stays)", run.path, step)
                continue
            run.save(state, step)

    @property
    def skipped(self) -> int:
        """Updates skipped so far in this process, over every GAN of every run."""
        return sum(c.skipped for counters in self.counters for c in counters.values())

    @property
    def skipping(self) -> bool:
        """Whether the last update of some GAN of some run was skipped."""
        return any(c.streak for counters in self.counters for c in counters.values())

    def count_skipped(self, masks, step: int) -> int:
        """Count the skipped updates of one iteration (``masks`` [6, R] from train_step);
        ``NonFiniteError`` when one GAN of one run has reached --max_nonfinite in a row."""
        masks = np.asarray(masks)
        if not masks.any() and not self.skipping:
            return 0
        count = 0
        for k, name in enumerate(self.names):
            for r, counters in enumerate(self.counters):
                count += counters[name].update(masks[k, r], step)
        return count

    # ------------------------------------------------------------------ training
    def train(self) -> None:
        """Train from the current step to --max_step, one compiled call per iteration;
        TVD every --log_step, scatter plots every --scatter_step, checkpoints every
        --save_step, and all three at the end."""
        cfg = self.config
        start, end = self.step, cfg.max_step
        if start == 0:
            self.evaluate()
        runs = f" x {len(self.runs)} runs" if len(self.runs) > 1 else ""
        bar = tqdm(total=max(end - start, 0), desc=f"{cfg.data_type}: 6 GANs{runs}",
                   unit="it", mininterval=1.0, dynamic_ncols=True)
        self._postfix(bar)
        began = time.perf_counter()
        try:
            for done in range(start + 1, end + 1):
                losses = self.gans.train_step()
                if self.count_skipped(losses["nonfinite"], done):
                    self._postfix(bar)
                if done % cfg.log_step == 0 or done == end:
                    self.evaluate(losses)
                    self._postfix(bar)
                if (cfg.scatter_step and done % cfg.scatter_step == 0) or done == end:
                    self.scatter()
                if (done % cfg.save_step == 0 and not self.skipping) or done == end:
                    self.save()
                bar.update(1)
        finally:
            bar.close()
        self.train_seconds = time.perf_counter() - began
        self.trained = max(end - start, 0)
        if end <= start:  # nothing to train: still measure (not a new row) and plot
            if start > 0:
                self.evaluate(record=False)
            self.scatter()

    def _postfix(self, bar) -> None:
        mean = {n: statistics.fmean(run.current[n] for run in self.runs) for n in self.names}
        bar.set_postfix_str("TVD " + " ".join(f"{SHORT[n]} {mean[n]:.3f}" for n in self.names)
                            + f" skipped={self.skipped}", refresh=False)

    def report(self) -> str:
        """The final table: generators ranked by their last TVD (mean over the runs)."""
        where = (str(self.runs[0].path) if len(self.runs) == 1
                 else f"{len(self.runs)} runs in {self.runs[0].path.parent}")
        head = f"{self.config.data_type} data, {self.step} iterations, {where}"
        if self.trained and self.train_seconds:
            head += (f"\n{self.trained} iterations trained in {self.train_seconds:.0f} s "
                     f"({self.trained / self.train_seconds:.1f} it/s including measurements)")
        finals = {n: [run.current[n] for run in self.runs] for n in self.names}
        lowest = {n: [run.lowest(n) for run in self.runs] for n in self.names}
        return head + "\n" + ranking_table(finals, lowest, [run.floor for run in self.runs])
