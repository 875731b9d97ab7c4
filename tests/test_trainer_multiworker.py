"""TF_CONFIG with two local workers: both train in lock-step, only the chief writes."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    from test_trainer import GRAPH, make_configs
    from trainer import Trainer
    config, cc_config, model_config = make_configs(
        {data!r}, sys.argv[1], num_iter=3, log_step=100000)
    t = Trainer(config, cc_config, model_config, GRAPH)
    t.train_loop()
    m = t.model
    print(json.dumps({{"replicas": t.strategy.num_replicas_in_sync, "chief": t.chief,
                      "step": int(m.step.numpy()), "k_t": float(m.k_t.numpy()),
                      "w": float(m.G.decoder.fc.w.numpy().sum())}}), flush=True)
""")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import toy_faces

    folder = tmp_path_factory.mktemp("data")
    toy_faces.render_dataset(folder / "toyfaces", n=64, seed=0, workers=1, progress=False)
    return folder


def test_two_local_workers_train_in_lock_step(data_dir, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT), tests=str(ROOT / "tests"),
                                    data=str(data_dir)))
    cluster = {"worker": [f"localhost:{p}" for p in free_ports(2)]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "run")], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=150)
            assert proc.returncode == 0, err[-3000:]
            outs.append(json.loads(out.strip().splitlines()[-1]))
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        pytest.fail("the two workers did not finish in 150 s")
    chief, other = outs
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["chief"] and not other["chief"]
    assert chief["step"] == other["step"] == 3
    assert chief["k_t"] == other["k_t"] > 0
    assert abs(chief["w"] - other["w"]) < 1e-6  # identical weights on both workers
    checkpoints = list((tmp_path / "run" / "checkpoints").glob("ckpt-*.index"))
    assert [p.name for p in checkpoints] == ["ckpt-3.index"]
