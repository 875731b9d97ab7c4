"""Tiny run folders made by main.py for the API and explorer tests, built once per test run.

``tiny_run(tmp_path_factory, kind)`` returns the folder of a run on 48 toy faces over
big_causal_graph: ``"dcgan"`` a controller pretrained for 30 iterations and a CausalGAN
at 16x16 saved beside it (untrained: the tests need a checkpoint, not good faces),
``"controller"`` a run of that controller alone (``--pt_load_path``, no image model). The xdist workers of one pytest run share them (a
folder beside theirs, a lock file), so each is built once. Treat them as read-only:
copy one before changing it.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
from pathlib import Path

TINY = ["--causal_model", "big_causal_graph", "--dataset", "toyfaces", "--num_gpu", "0",
        "--cc_n_layers", "2", "--cc_n_hidden", "4", "--n_critic", "2", "--critic_layers", "3",
        "--num_worker", "1", "--figure_ext", "png", "--log_step", "10", "--batch_size", "4"]
DCGAN = ["--is_pretrain", "True", "--pretrain_iter", "30", "--min_pretrain_iter", "30",
         "--model_type", "dcgan", "--input_scale_size", "16", "--gf_dim", "16",
         "--df_dim", "4", "--z_dim", "4"]


def shared_root(tmp_path_factory) -> Path:
    """A folder that every xdist worker of this pytest run sees."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / "api_runs"
    folder.mkdir(exist_ok=True)
    return folder


def tiny_run(tmp_path_factory, kind: str = "dcgan") -> Path:
    """The run folder of ``kind`` (built by the first caller, found by the others)."""
    import main
    import toy_faces

    root = shared_root(tmp_path_factory)
    data = root / "data"
    toy_faces.ensure_dataset(data / "toyfaces", n=48, seed=0, workers=1, progress=False)
    logs = root / kind / "logs"
    with open(root / f".{kind}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = root / kind / "ready"
        if not ready.is_file():
            flags = DCGAN if kind == "dcgan" else [
                "--pt_load_path", str(tiny_run(tmp_path_factory) / "controller" / "checkpoints")]
            with contextlib.redirect_stderr(io.StringIO()), \
                    contextlib.redirect_stdout(io.StringIO()):  # progress bar, TVD line
                trainer = main.get_trainer([*TINY, *flags, "--data_dir", str(data),
                                            "--log_dir", str(logs)])
                main.main(trainer)
                if kind != "dcgan":
                    trainer.save()
            trainer.summary_writer.close()
            ready.write_text(str(trainer.model_dir))
        return Path(ready.read_text())
