"""NaN/Inf in the image models: a non-finite update is skipped (weights, Adam slots and
iteration counts, margins stay), counted, and --max_nonfinite in a row stop the run
(NonFiniteError, exit code 2 through main.py) with the last good checkpoint kept."""

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from test_began import batch as began_batch
from test_began import began_config
from test_dcgan import NAMES, dcgan_config
from test_dcgan import batch as dcgan_batch
from test_trainer import GRAPH, make_configs, read_events

import nonfinite
import trainer as trainer_module
from causal_began import CausalBEGAN as cb
from causal_dcgan import CausalGAN as cg

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import toy_faces

    folder = tmp_path_factory.mktemp("data")
    toy_faces.render_dataset(folder / "toyfaces", n=48, seed=0, workers=1, progress=False)
    return folder


def snapshot(model, optimizers):
    """Every float variable of the model (weights, margins) and every optimizer variable
    (iteration count, learning rate, Adam's m and v), by a readable key."""
    state = {f"model/{i}/{v.name}": v.numpy().copy()
             for i, v in enumerate(model.variables) if v.dtype.is_floating}
    for opt in optimizers:
        for i, v in enumerate(opt.variables):
            state[f"{opt.name}/{i}/{v.name}"] = np.array(v.numpy()).copy()
    return state


def changed(before, after):
    return sorted(k for k in before if not np.array_equal(before[k], after[k]))


def with_nan(images, row=1):
    images = images.copy()
    images[row, 2, 3, 0] = np.nan
    return images


# ----------------------------------------------------------------------------- one step
def test_began_skips_an_update_with_a_nan_image_and_counts_it():
    cfg = began_config(lambda_k=0.5, lambda_l=0.5, lambda_z=0.5)
    model = cb.CausalBEGAN(cfg, ["a", "b", "c"], 8, data_format="channels_last", seed=2)
    optimizers = [model.g_optimizer, model.d_optimizer]
    step = model.make_train_function()
    images, real, fake, z = began_batch(8)
    out = step((images, real, fake, z))  # a good step first: slots and margins move
    assert int(out["nonfinite"]) == 0 and float(model.k_t) > 0
    counter = nonfinite.NonFiniteCounter(3, model.nonfinite_names, what="CausalBEGAN")
    before = snapshot(model, optimizers)

    out = step((with_nan(images), real, fake, z))
    mask = int(out["nonfinite"])
    assert "d_loss" in nonfinite.describe(mask, model.nonfinite_names)
    assert "gradients of d_loss" in nonfinite.describe(mask, model.nonfinite_names)
    assert changed(before, snapshot(model, optimizers)) == []  # weights, slots, margins
    assert int(model.step) == 2  # the step still counts, as in controller pretraining
    assert counter.update(mask, int(model.step)) == 1 and counter.skipped == 1

    out = step((images, real, fake, z))  # a good batch trains again
    assert int(out["nonfinite"]) == 0 and counter.update(int(out["nonfinite"]), 3) == 0
    assert [int(o.iterations.numpy()) for o in optimizers] == [2, 2]
    assert changed(before, snapshot(model, optimizers))


def test_dcgan_skips_the_updates_that_see_a_nan_image():
    images, real, fake, z = dcgan_batch(16)
    bad = with_nan(images)

    # labeler pretraining: the one update of the iteration sees the images
    model = cg.CausalGAN(dcgan_config(pretrain_LabelerR=True, pretrain_LabelerR_no_of_iters=10),
                         NAMES, 16, seed=3)
    optimizers = [opt for _, opt in model.networks()]
    train = model.make_train_function()
    assert int(train((images, real, fake, z))["nonfinite"]) == 0
    before = snapshot(model, optimizers)
    mask = int(train((bad, real, fake, z))["nonfinite"])
    assert nonfinite.describe(mask, model.nonfinite_names) == [
        "d_loss_real_label", "gradients of d_loss_real_label"]
    assert changed(before, snapshot(model, optimizers)) == []  # k_t included
    assert int(model.step) == 2

    # the reference's G + all-networks iteration: the G update sees no image and is
    # applied; the update of all five networks is skipped as a whole
    model = cg.CausalGAN(dcgan_config(tau=2.0), NAMES, 16, seed=4)
    train = model.make_train_function()
    assert train((images, real, fake, z))["nonfinite"].numpy().tolist() == [0, 0]
    model.step.assign(3)  # the next G + all iteration
    others = [model.D, model.labeler, model.anti_labeler, model.z_estimator]
    others_opt = [model.d_optimizer, model.labeler_optimizer, model.anti_labeler_optimizer,
                  model.z_optimizer]
    before = {name: snapshot(net, [opt]) for name, net, opt in
              zip("DLAZ", others, others_opt, strict=True)}
    k_before = float(model.k_t)
    masks = train((bad, real, fake, z))["nonfinite"].numpy()
    assert masks[0] == 0 and "gradients of d_loss" in nonfinite.describe(
        masks[1], model.nonfinite_names)
    for name, net, opt in zip("DLAZ", others, others_opt, strict=True):
        assert changed(before[name], snapshot(net, [opt])) == [], name
    assert int(model.g_optimizer.iterations.numpy()) == 3  # two before, one now
    assert [int(o.iterations.numpy()) for o in others_opt] == [1, 1, 1, 1]
    # k_t decays on schedule with the step, as the learning rates of CausalBEGAN halve
    assert np.isclose(float(model.k_t), k_before * math.exp(-1 / 2.0), rtol=1e-6)
    counter = nonfinite.NonFiniteCounter(2, model.nonfinite_names, what="CausalGAN")
    assert counter.update(masks.reshape(1, -1), 4) == 1 and counter.streak == 1


TOWERS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    from trainer import split_cpu
    split_cpu(2)
    from causal_began.CausalBEGAN import CausalBEGAN
    from test_began import began_config

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = CausalBEGAN(began_config(lambda_k=0.3, lambda_l=0.3, lambda_z=0.3), ["a", "b", "c"],
                            8, data_format="channels_last", seed=1)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, [8, 8, 8, 3]).astype(np.float32)
    labels = rng.integers(0, 2, [8, 3]).astype(np.float32)
    fake = np.round(rng.uniform(0, 1, [8, 3])).astype(np.float32)
    z = rng.uniform(-1, 1, [8, 4]).astype(np.float32)

    @tf.function
    def step(batch):  # both replicas' masks
        masks = strategy.run(model.train_step, args=batch)["nonfinite"]
        return strategy.experimental_local_results(masks)

    def run(images):
        data = tf.data.Dataset.from_tensors((images, labels, fake, z)).unbatch().batch(8)
        return [int(m) for m in step(next(iter(strategy.experimental_distribute_dataset(data))))]

    def state():  # every device's copy of every variable, and of the optimizers'
        out = []
        for v in [*model.variables, *model.g_optimizer.variables, *model.d_optimizer.variables]:
            v = v if isinstance(v, tf.Variable) else v.value  # a Keras variable
            for local in strategy.experimental_local_results(v):
                out.append(np.array(local.numpy()).tolist())
        return out

    good = run(images)
    before = state()
    bad_images = images.copy()
    bad_images[6, 1, 1, 1] = np.nan  # a row of the second replica only
    bad = run(bad_images)
    after = state()
    steps = [int(s.numpy()) for s in strategy.experimental_local_results(model.step)]
    # the step differs; everything else must not
    same = [a == b for a, b in zip(before, after, strict=True)]
    print(json.dumps({{"good": good, "bad": bad, "steps": steps,
                      "changed": len(same) - sum(same)}}))
""")


def test_two_towers_skip_together_when_one_replica_sees_a_nan(tmp_path):
    script = tmp_path / "towers.py"
    script.write_text(TOWERS.format(root=str(ROOT), tests=str(ROOT / "tests")))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=300, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["good"] == [0, 0]
    assert out["bad"][0] == out["bad"][1] != 0  # the same decision on both replicas
    assert out["steps"] == [2, 2]
    assert out["changed"] == 2  # only the step counter's two copies


# ----------------------------------------------------------------------------- the trainer
def last_checkpoint(run: Path):
    return tf.train.latest_checkpoint(str(run / "checkpoints"))


@pytest.mark.parametrize("model_type", ["began", "dcgan"])
def test_nan_in_a_weight_stops_training_and_keeps_the_last_good_checkpoint(
        data_dir, tmp_path, model_type, capsys):
    run = tmp_path / "run"
    config, cc_config, model_config = make_configs(data_dir, run, model_type=model_type,
                                                   num_iter=2, log_step=2, save_secs=0)
    if model_type == "dcgan":
        model_config = dcgan_config(num_iter=2, log_step=2)
    config.max_nonfinite = 4
    trainer = trainer_module.Trainer(config, cc_config, model_config, GRAPH)
    trainer.train_loop()  # two good steps, a checkpoint after each (--save_secs 0)
    good = last_checkpoint(run)
    assert good.endswith("ckpt-2")
    files = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}

    model = trainer.model
    weight = model.D.trainable_variables[0]
    weight.assign(tf.tensor_scatter_nd_update(weight, [[0] * weight.shape.rank], [np.nan]))
    model_config.num_iter = 100
    with pytest.raises(nonfinite.NonFiniteError) as info:
        trainer.train_loop()
    text = str(info.value)
    # CausalBEGAN: one update per step, steps 3..6; CausalGAN: two per step, steps 3..4
    stop = {"began": 6, "dcgan": 4}[model_type]
    assert f"{model.name} stopped at step {stop}: 4 updates in a row were skipped " \
           "(since step 3)" in text
    assert "d_loss" in text and f"--load_path {run}" in text and good in text
    assert trainer.model_step == stop
    # no checkpoint after the last good update, although --save_secs 0 asks for one per step
    assert last_checkpoint(run) == good
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == files
    steps = read_events(run / "summaries")["misc/skipped_updates"]
    assert 2 in steps and stop in steps  # at the log steps, and at the stop
    assert "skipped=2" in capsys.readouterr().err  # the progress bar


def test_a_diverging_image_model_stops_through_main_with_exit_2(data_dir, tmp_path):
    """Learning rates of 1e30: after the first update every loss is NaN or Inf; each
    update is skipped, and --max_nonfinite of them in a row end the run (exit 2) with
    the checkpoint written after pretraining kept."""
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps({node: parents for node, parents in GRAPH}))
    logs = tmp_path / "logs"
    args = ["--causal_model", str(graph), "--dataset", "toyfaces", "--data_dir", str(data_dir),
            "--log_dir", str(logs), "--num_gpu", "0", "--batch_size", "4",
            "--cc_n_layers", "2", "--cc_n_hidden", "4", "--n_critic", "2",
            "--critic_layers", "3", "--critic_hidden_size", "4", "--is_pretrain", "True",
            "--pretrain_iter", "2", "--model_type", "began", "--is_train", "True",
            "--num_iter", "1000", "--input_scale_size", "8", "--conv_hidden_num", "4",
            "--z_num", "8", "--z_dim", "4", "--d_lr", "1e30", "--g_lr", "1e30",
            "--max_nonfinite", "3"]
    result = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    err = result.stderr
    assert result.returncode == 2 and "Traceback" not in err, err[-3000:]
    (message,) = [line for line in err.splitlines() if line.startswith("main.py: error:")]
    found = re.search(r"CausalBEGAN stopped at step (\d+): 3 updates in a row were skipped "
                      r"\(since step (\d+)\) because (.*) held NaN or Inf", message)
    assert found and int(found.group(1)) == int(found.group(2)) + 2, message
    assert "d_loss" in found.group(3)
    (run,) = logs.iterdir()
    assert last_checkpoint(run).endswith("ckpt-2")  # the pretrained run: overall step 2
    assert f"--load_path {run}" in message
