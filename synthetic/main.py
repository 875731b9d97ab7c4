"""Train the six generators on one synthetic data set and rank them by TVD.

    python synthetic/main.py --data_type collider                  # a new run under logs/
    python synthetic/main.py --data_type linear --max_step 5000 --num_threads 1
    python synthetic/main.py --load_path logs/synth_collider_1128_093000 --max_step 60000
    python synthetic/main.py --load_path logs/synth_collider_1128_093000 --is_train False

Exit codes: 0 done, 2 a bad flag or value (one line on stderr), 130 interrupted (a
checkpoint is written first, so --load_path continues the run).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a script, Python puts synthetic/ first on the path, where config.py would hide
# the project's own config module: put the project root there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported

from errors import UserError  # noqa: E402
from synthetic.config import PROG, get_config  # noqa: E402


def get_trainer(argv=None):
    """Parse the flags and build (or load) a run."""
    config, given = get_config(argv)
    from synthetic.trainer import Trainer  # TensorFlow is imported only once flags are good

    return Trainer(config, given)


def main(trainer) -> None:
    """Train (or only measure a loaded run), then print the ranking table."""
    if trainer.config.is_train:
        try:
            trainer.train()
        except KeyboardInterrupt:
            trainer.save()
            raise
    else:
        trainer.evaluate(record=False)
        trainer.scatter()
    print(trainer.report(), flush=True)


def run(argv=None) -> int:
    """Command-line entry point: 0 on success, 2 on a user error, 130 when interrupted."""
    try:
        main(get_trainer(argv))
    except UserError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (checkpoint saved)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    code = run()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip TensorFlow's slow teardown; everything is written by now
