"""Long runs through python main.py: stop requests, kills at any moment, several runs at once."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--causal_model", "big_causal_graph", "--dataset", "toyfaces", "--num_gpu", "0",
         "--batch_size", "4", "--cc_n_layers", "2", "--cc_n_hidden", "4"]
PRETRAIN = ["--dataset", "toyfaces", "--num_gpu", "0", "--batch_size", "4",
            "--cc_n_layers", "2", "--cc_n_hidden", "4", "--n_critic", "2", "--critic_layers", "3",
            "--critic_hidden_size", "4", "--log_step", "1", "--is_pretrain", "True",
            "--pretrain_iter", "100000", "--min_pretrain_iter", "100000"]
GRAPH = {"Young": [], "Male": [], "Bald": ["Male", "Young"]}  # small: compiles in seconds


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import toy_faces

    folder = tmp_path_factory.mktemp("data")
    toy_faces.render_dataset(folder / "toyfaces", n=48, seed=0, workers=1, progress=False)
    return folder


class Run:
    """python main.py as a child process, its output in files."""

    def __init__(self, folder: Path, *args):
        self.out, self.err = folder / "stdout.txt", folder / "stderr.txt"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT,
                                            stdout=out, stderr=err, start_new_session=True)

    def signal(self, signum):
        os.killpg(self.process.pid, signum)

    def wait(self, timeout=120):
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.signal(signal.SIGKILL)
        return code, self.out.read_text(), self.err.read_text()


def wait_for(condition, timeout=120, process=None):
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended early (exit code {process.returncode})")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def complete_steps(run: Path) -> list[int]:
    """Steps of the controller checkpoints whose .index exists (complete by construction)."""
    return sorted(int(p.name[len("CC-Model-"):-len(".index")])
                  for p in (run / "controller" / "checkpoints").glob("CC-Model-*.index"))


def run_checkpoint_step(run: Path) -> int:
    import tensorflow as tf

    path = tf.train.latest_checkpoint(str(run / "checkpoints"))
    return int(path.rsplit("-", 1)[1]) if path else -1


def resumed_step(err: str) -> int:
    """The step a resumed run started from, as it logged it."""
    steps = [int(s) for s in re.findall(r"restored \S+ \(overall step (\d+)\)", err)]
    steps += [int(s) for s in re.findall(r"pretraining continues from \S+ \(step (\d+)\)", err)]
    return max(steps)


def test_pretraining_survives_stop_requests_and_kills_at_any_moment(data_dir, tmp_path):
    """SIGTERM, SIGKILL during a checkpoint write, SIGKILL between writes, Ctrl-C: each time
    --load_path continues from the last complete checkpoint, and the run finishes."""
    logs = tmp_path / "logs"
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps(GRAPH))
    first = Run(tmp_path, "--causal_model", str(graph), *PRETRAIN, "--data_dir", str(data_dir),
                "--log_dir", str(logs))
    wait_for(lambda: logs.exists() and any(logs.iterdir()), process=first.process)
    run = next(logs.iterdir())
    wait_for(lambda: complete_steps(run), process=first.process)

    # 1. SIGTERM: a controller checkpoint and a run checkpoint, exit 143
    first.signal(signal.SIGTERM)
    code, out, err = first.wait(timeout=60)
    assert code == 143, err[-2000:]
    stopped = int(re.search(r"Stopped at controller step (\d+)", out).group(1))
    assert stopped in complete_steps(run) and run_checkpoint_step(run) == stopped
    assert "Traceback" not in err

    # 2. SIGKILL while a controller checkpoint is being written
    ckpts = run / "controller" / "checkpoints"
    for _ in range(3):  # the write takes milliseconds: catch one in the act
        expected = max(complete_steps(run)[-1], run_checkpoint_step(run))
        resumed = Run(tmp_path, "--load_path", str(run))
        wait_for(lambda: any(p.name.startswith(".CC-Model") for p in ckpts.iterdir()),
                 process=resumed.process)
        resumed.signal(signal.SIGKILL)
        code, _, err = resumed.wait()
        assert code == -signal.SIGKILL
        assert resumed_step(err) == expected  # continued from the last complete checkpoint
        if any(p.name.startswith(".CC-Model") for p in ckpts.iterdir()):
            break  # killed mid-write: a half-written checkpoint lies in its temporary folder
    else:
        pytest.fail("no kill landed during a checkpoint write in 3 attempts")

    # 3. SIGKILL between checkpoints, during training
    expected = max(complete_steps(run)[-1], run_checkpoint_step(run))
    resumed = Run(tmp_path, "--load_path", str(run))
    wait_for(lambda: complete_steps(run)[-1] > expected, process=resumed.process)
    time.sleep(0.05)
    resumed.signal(signal.SIGKILL)
    code, _, err = resumed.wait()
    assert code == -signal.SIGKILL and resumed_step(err) == expected

    # 4. Ctrl-C: checkpoints, exit 130
    expected = max(complete_steps(run)[-1], run_checkpoint_step(run))
    resumed = Run(tmp_path, "--load_path", str(run))
    wait_for(lambda: complete_steps(run)[-1] > expected, process=resumed.process)
    resumed.signal(signal.SIGINT)
    code, out, err = resumed.wait(timeout=60)
    assert code == 130 and resumed_step(err) == expected, err[-2000:]
    stopped = int(re.search(r"Stopped at controller step (\d+)", out).group(1))
    assert run_checkpoint_step(run) == stopped == complete_steps(run)[-1]

    # 5. the last resume runs to the end; nothing half-written is left behind
    end = stopped + 15
    resumed = Run(tmp_path, "--load_path", str(run), "--pretrain_iter", str(end))
    code, _, err = resumed.wait()
    assert code == 0 and resumed_step(err) == stopped, err[-2000:]
    assert complete_steps(run)[-1] == end and run_checkpoint_step(run) == end
    assert (run / "controller" / f"{end}_glabel_crosstab.txt").read_text().startswith(
        f"Step: {end}\n")
    leftovers = [p for p in run.rglob("*") if ".partial-" in p.name or ".tmp-" in p.name]
    assert not leftovers, leftovers


def test_a_diverging_run_stops_naming_the_loss_and_the_step(data_dir, tmp_path):
    """Learning rates of 1e30: after the first updates every loss is NaN or Inf; each
    update is skipped, and --max_nonfinite of them in a row end the run (exit 2)."""
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps(GRAPH))
    logs = tmp_path / "logs"
    run = Run(tmp_path, "--causal_model", str(graph), *PRETRAIN, "--data_dir", str(data_dir),
              "--log_dir", str(logs), "--pt_cc_lr", "1e30", "--pt_dcc_lr", "1e30",
              "--max_nonfinite", "10")
    code, _, err = run.wait()
    assert code == 2 and "Traceback" not in err, err[-2000:]
    message = [line for line in err.splitlines() if line.startswith("main.py: error:")]
    assert len(message) == 1
    assert re.search(r"stopped at step \d+: 10 updates in a row were skipped", message[0])
    assert "dcc_loss" in message[0]
    (folder,) = logs.iterdir()
    assert run_checkpoint_step(folder) == 0  # the last good checkpoint: nothing after it


STUCK_PIPELINE = """
import signal, sys, time
sys.path.insert(0, {root!r})
import main
import tensorflow as tf

main.start_stop_watchdog(grace=1.0)
requests = []
signal.signal(signal.SIGTERM, lambda signum, frame: requests.append(signum))  # as StopRequest

def wait_for_data(x):
    time.sleep(3600)  # a data source that never answers
    return x

ds = tf.data.Dataset.range(3).map(lambda x: tf.py_function(wait_for_data, [x], tf.int64))
print("waiting", flush=True)
next(iter(ds))
"""


def test_a_stop_request_ends_a_run_stuck_in_the_input_pipeline(tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text(STUCK_PIPELINE.format(root=str(ROOT)))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout.readline().strip() == "waiting"
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = process.wait(timeout=60)
        assert code == 143 and time.monotonic() - sent < 30
        assert "while waiting for the input pipeline" in process.stderr.read()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_sigterm_on_a_data_set_of_corrupt_images_ends_the_run_promptly(data_dir, tmp_path):
    """The scheduler's `timeout 180 python main.py ...` on corrupt JPEGs: a prompt exit."""
    import shutil

    corrupt = tmp_path / "data"
    shutil.copytree(data_dir, corrupt)
    for image in (corrupt / "toyfaces" / "images").iterdir():
        image.write_bytes(image.read_bytes()[:100])
    logs = tmp_path / "logs"
    args = [*SMALL, "--data_dir", str(corrupt), "--log_dir", str(logs),
            "--model_type", "began", "--is_train", "True", "--num_iter", "1000000",
            "--input_scale_size", "8", "--conv_hidden_num", "4", "--z_num", "8", "--z_dim", "4",
            "--num_worker", "2"]
    run = Run(tmp_path, *args)
    wait_for(lambda: logs.exists() and any(logs.iterdir()), process=run.process)
    time.sleep(2)
    if run.process.poll() is None:
        run.signal(signal.SIGTERM)
    sent = time.monotonic()
    code, _, err = run.wait(timeout=60)
    assert code != 0 and time.monotonic() - sent < 45
    assert "Traceback" not in err, err[-3000:]


def test_runs_started_together_get_their_own_folders(tmp_path):
    code = ("import sys, utils\n"
            "for _ in range(15): print(utils.new_run_dir(sys.argv[1], 'toyfaces'))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    folders = [line for p in procs for line in p.communicate(timeout=60)[0].split()]
    assert all(p.returncode == 0 for p in procs)
    assert len(folders) == len(set(folders)) == 45
    assert len(list(tmp_path.iterdir())) == 45


FAKE_TENSORBOARD = """#!{python}
import socket, sys, time
port = int(sys.argv[sys.argv.index("--port") + 1])
time.sleep(1.5)  # TensorBoard takes a while before it listens
server = socket.socket()
server.bind(("localhost", port))
server.listen(1)
print("listening on", port, flush=True)
time.sleep(120)
"""


def test_tensorboards_started_together_get_their_own_ports(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tensorboard"
    fake.write_text(FAKE_TENSORBOARD.format(python=sys.executable))
    fake.chmod(0o755)
    (tmp_path / "logs" / "toyfaces_0101_000000").mkdir(parents=True)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "TMPDIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "tboard.py", "--log_dir", str(tmp_path / "logs"),
                               "--port", "16006"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              text=True, start_new_session=True) for _ in range(2)]
    try:
        lines = [[p.stdout.readline() for _ in range(2)] for p in procs]
        ports = [int(re.search(r"localhost:(\d+)", "".join(pair)).group(1)) for pair in lines]
        listening = [int(re.search(r"listening on (\d+)", "".join(pair)).group(1))
                     for pair in lines]
        assert len(set(ports)) == 2 and sorted(ports) == sorted(listening)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
