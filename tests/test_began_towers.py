"""Two replicas on two logical CPUs make the same update as one device on the whole batch."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    from trainer import split_cpu
    split_cpu(2)
    from causal_began.CausalBEGAN import CausalBEGAN
    from test_began import began_config

    cfg = began_config(lambda_k=0.3, lambda_l=0.3, lambda_z=0.3, g_lr=0.001, d_lr=0.001)
    names = ["a", "b", "c"]
    rng = np.random.default_rng(0)
    steps = []
    for _ in range(2):  # two steps, so the margins of step 1 enter the losses of step 2
        steps.append((rng.uniform(0, 255, [8, 16, 16, 3]).astype(np.float32),
                      rng.integers(0, 2, [8, 3]).astype(np.float32),
                      np.round(rng.uniform(0, 1, [8, 3])).astype(np.float32),
                      rng.uniform(-1, 1, [8, 4]).astype(np.float32)))

    single = CausalBEGAN(cfg, names, 16, data_format="channels_last", seed=1)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        towers = CausalBEGAN(cfg, names, 16, data_format="channels_last", seed=1)
    for dst, src in zip(towers.trainable_variables, single.trainable_variables, strict=True):
        dst.assign(src)

    g_init = single.G.decoder.fc.w.numpy().copy()
    one = single.make_train_function()
    two = towers.make_train_function(strategy)
    data = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(tuple(np.stack(x) for x in zip(*steps))).unbatch()
        .batch(8))
    it = iter(data)
    split = None
    for batch in steps:
        out1 = one(batch)
        dist = next(it)
        split = [int(v.shape[0]) for v in strategy.experimental_local_results(dist[0])]
        out2 = two(dist)

    def values(model):
        return [v.numpy() for v in model.variables if v.dtype != tf.string]

    diffs = []
    pairs = zip(values(single), [strategy.experimental_local_results(v)[1].numpy()
                                 for v in towers.variables if v.dtype != tf.string], strict=True)
    for a, b in pairs:
        if a.dtype.kind == "f":
            diffs.append(float(np.max(np.abs(a - b)) if a.size else 0.0))
    print(json.dumps({{
        "split": split, "max_diff": max(diffs), "n_vars": len(diffs),
        "k1": float(single.k_t.numpy()), "k2": float(towers.k_t.numpy()),
        "l1": float(single.l_t.numpy()), "l2": float(towers.l_t.numpy()),
        "z1": float(single.z_t.numpy()), "z2": float(towers.z_t.numpy()),
        "loss1": float(out1["d_loss"]), "loss2": float(out2["d_loss"]),
        "steps": [int(single.step.numpy()), int(towers.step.numpy())],
        "replicas": strategy.num_replicas_in_sync,
        "moved": float(np.max(np.abs(single.G.decoder.fc.w.numpy() - g_init))),
    }}))
""")


def test_two_towers_equal_one_device_on_the_concatenated_batch(tmp_path):
    script = tmp_path / "towers.py"
    script.write_text(SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests")))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=180, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and out["split"] == [4, 4]
    assert out["steps"] == [2, 2]
    assert out["n_vars"] > 20
    assert out["max_diff"] < 2e-5, out
    for name in "klz":
        assert abs(out[f"{name}1"] - out[f"{name}2"]) < 1e-6, out
    assert out["moved"] > 1e-4  # the weights did change (by ~2 learning rates)
    assert out["k1"] > 0 and abs(out["loss1"] - out["loss2"]) < 1e-5
