"""Test configuration: the project root is importable, TensorFlow stays quiet; the
fidelity tests' shared controller of a known SCM and their panel of readers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# one OpenBLAS thread per test process (before numpy is imported), as the figure command
# line sets it: two workers on two cores, each with two spinning BLAS threads, made the
# fidelity report's small matrix algebra many times slower
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------- fidelity
PANEL_SIZE = 16


class ExactController:
    """A controller whose samples come from a known SCM (so the truth is known), or a
    wrong one that answers do() by conditioning. ``systematic`` draws every sample set by
    systematic sampling of the exact distribution (each label vector about as often as
    its probability says), so that the sets' make-up carries no sampling noise."""

    def __init__(self, scm, names, confuse_do_with_cond=False, systematic=False):
        self.scm, self.label_names = scm, list(names)
        self.confuse, self.systematic = confuse_do_with_cond, systematic

    def sample_label(self, cond_dict=None, do_dict=None, N=None, seed=None):
        rng = np.random.default_rng(seed)
        cond = dict(cond_dict or {})
        do = dict(do_dict or {})
        if self.confuse:
            cond, do = {**cond, **do}, {}
        if self.systematic:
            rows = self._systematic(cond, do, N, rng)
        else:
            found, total = [], 0
            for _ in range(200):
                rows = self.scm.sample(50_000, do=do, seed=int(rng.integers(2**31)))
                for key, value in cond.items():
                    rows = rows[rows[key] == value]
                found.append(rows)
                total += len(rows)
                if total >= N:
                    break
            rows = pd.concat(found).iloc[:N]
        return {name: rows[name].to_numpy(np.float32)[:, None] for name in self.label_names}

    def _systematic(self, cond, do, n, rng):
        states, probs = self.scm.joint(do)
        for key, value in cond.items():
            probs = probs * (states[:, self.scm.nodes.index(key)] == value)
        positions = (rng.random() + np.arange(n)) / n
        index = np.minimum(np.searchsorted(np.cumsum(probs / probs.sum()), positions),
                           len(states) - 1)
        return pd.DataFrame(states[rng.permutation(index)], columns=self.scm.nodes)


@pytest.fixture(scope="session")
def exact_controller():
    """The ExactController class (a controller drawing from a known SCM)."""
    return ExactController


@pytest.fixture(scope="session")
def toy_panel(tmp_path_factory):
    """A 120-face toy data set with a panel of small readers at 16x16 cached in it.

    Shared by the xdist workers of a run (a folder beside theirs): the first to get here
    renders and trains, the others wait on the data set's and the cache's lock files and
    then load what it wrote, so the panel is trained once per run."""
    import toy_faces
    from figure_scripts import classifier, readers

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / "fidelity_panel" / "toyfaces"
    toy_faces.ensure_dataset(folder, n=120, seed=0, workers=1, progress=False)
    plan = classifier.TrainingPlan(n_train=2000, n_test=300, n_data_test=120, steps=500,
                                   batch_size=32, learning_rate=5e-3, render_workers=1)
    panel = readers.get_panel(folder, PANEL_SIZE, plan=plan, progress=False)
    return SimpleNamespace(dataset_dir=folder, data_dir=folder.parent, panel=panel,
                           size=PANEL_SIZE, plan=plan)


@pytest.fixture(scope="session")
def run_once(toy_panel):
    """``run_once(name, compute)``: compute() once per run, shared by the xdist workers (a
    pickle beside the shared panel; a worker that finds another computing waits for it),
    so the fidelity tests' reports are not measured twice when their tests are split."""
    import fcntl
    import pickle

    def cached(name, compute):
        path = toy_panel.data_dir / f"{name}.pickle"
        with open(toy_panel.data_dir / f".{name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            if path.is_file():
                return pickle.loads(path.read_bytes())
            value = compute()
            path.write_bytes(pickle.dumps(value))
            return value

    return cached
