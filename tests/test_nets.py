"""nets.py's shared blocks: the one-conditional non-finite update against Keras's own
Adam step, and lrelu as one op."""

import numpy as np
import tensorflow as tf

import nets

NAMES = ("loss", nets.gradient_name("loss"))


def _pair(seed=0):
    """Two identical sets of variables (a kernel and a bias) with their Adams."""
    rng = np.random.default_rng(seed)
    init = [rng.normal(size=[5, 3]).astype(np.float32), rng.normal(size=[3]).astype(np.float32)]
    out = []
    for _ in range(2):
        variables = [tf.Variable(v) for v in init]
        out.append((variables, nets.make_adam(variables, 1e-2, 0.5, 0.999)))
    return out


def _state(variables, optimizer):
    return [v.numpy().copy() for v in variables] + [
        np.array(v.numpy()).copy() for v in optimizer.variables]


def test_finite_update_equals_keras_adam_bit_for_bit():
    (ours, opt), (theirs, ref) = _pair()
    rng = np.random.default_rng(1)

    @tf.function
    def step(grads):
        def replica():
            loss = tf.reduce_sum(grads[0])
            return nets.apply_mean_gradients_if_finite(
                [("loss", opt, grads, ours)], {"loss": loss}, NAMES)[1]
        return tf.distribute.get_strategy().run(replica)

    @tf.function
    def keras_step(grads):
        nets.apply_mean_gradients(ref, grads, theirs)

    for _ in range(3):
        grads = [tf.constant(rng.normal(size=v.shape), tf.float32) for v in ours]
        assert int(step(grads)) == 0
        keras_step(grads)
    for a, b in zip(_state(ours, opt), _state(theirs, ref), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(opt.iterations.numpy()) == 3


def test_a_nan_gradient_skips_every_variable_and_the_count():
    (variables, opt), _ = _pair()

    @tf.function
    def step(grads):
        return nets.apply_mean_gradients_if_finite(
            [("loss", opt, grads, variables)], {"loss": tf.constant(1.0)}, NAMES)[1]

    good = [tf.ones_like(v) for v in variables]
    assert int(step(good)) == 0
    before = _state(variables, opt)
    bad = [good[0], tf.constant([1.0, np.nan, 1.0])]
    assert int(step(bad)) == 2  # the bit of "gradients of loss"
    for a, b in zip(before, _state(variables, opt), strict=True):
        np.testing.assert_array_equal(a, b)


def test_lrelu_is_max_of_x_and_a_fifth_of_x_with_its_gradient():
    x = tf.constant(np.random.default_rng(2).normal(size=[1000]), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours, reference = nets.lrelu(x), tf.maximum(x, 0.2 * x)
    np.testing.assert_array_equal(ours, reference)
    np.testing.assert_array_equal(tape.gradient(ours, x), tape.gradient(reference, x))
