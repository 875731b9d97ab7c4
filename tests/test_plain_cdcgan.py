"""The plain conditional DCGAN that benchmarks/bench_dcgan.py --demo times CausalGAN
against: it builds and one step trains both networks."""

import numpy as np
import tensorflow as tf

from benchmarks.plain_cdcgan import PlainCDCGAN


def test_one_step_updates_g_and_d_once_with_finite_losses():
    model = PlainCDCGAN(n_labels=3, size=16, gf_dim=16, df_dim=4, z_dim=4, batch_size=4, seed=1)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, [4, 16, 16, 3]), tf.float32)
    labels = tf.constant(rng.integers(0, 2, [4, 3]), tf.float32)
    assert model.generate(labels, tf.zeros([4, 4])).shape == (4, 16, 16, 3)
    logit, _, head = model.D(images / 127.5 - 1.0)
    assert logit.shape == (4, 1) and head.shape == (4, 3)
    before = [v.numpy().copy() for v in model.trainable_variables]
    d_loss, g_loss = model.train_step(images, labels)
    assert np.isfinite(float(d_loss)) and np.isfinite(float(g_loss))
    assert int(model.d_optimizer.iterations) == 1 and int(model.g_optimizer.iterations) == 1
    moved = [not np.array_equal(a, v.numpy())
             for a, v in zip(before, model.trainable_variables, strict=True)]
    assert all(moved)  # every weight of G and D (and the label head) took a step
