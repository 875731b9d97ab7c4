"""The causal controller: construction, sampling, interventions, conditioning."""

import logging
import warnings

import numpy as np
import pytest
import tensorflow as tf

import causal_controller.config as cc_flags
from causal_controller.CausalController import CausalController, topological_order
from errors import UserError

BIG = [("Young", []), ("Male", []), ("Eyeglasses", ["Young"]), ("Bald", ["Male", "Young"]),
       ("Mustache", ["Male", "Young"]), ("Smiling", ["Male", "Young"]),
       ("Wearing_Lipstick", ["Male", "Young"]), ("Mouth_Slightly_Open", ["Young", "Smiling"]),
       ("Narrow_Eyes", ["Male", "Young", "Smiling"])]
# A -> B -> C, and D on its own
CHAIN = [("A", []), ("B", ["A"]), ("C", ["B"]), ("D", [])]


def config(**kw):
    """The controller's flags at their defaults (causal_controller/config.py), overridden."""
    cfg = cc_flags.get_config([])[0]
    vars(cfg).update(kw)
    return cfg


def set_copy_weights(node, source, scale=20.0):
    """Hand-set a node so its logit is +-scale: the sign of noise unit 0 for a root, or
    (2 * parent - 1) for a node with one parent (the label then copies the parent)."""
    for w, b in zip(node.weights, node.biases, strict=True):
        w.assign(tf.zeros_like(w))
        b.assign(tf.zeros_like(b))
    n_hidden = node.n_hidden
    first = np.zeros(node.weights[0].shape, np.float32)
    first[0 if source == "noise" else n_hidden, 0] = 1.0
    node.weights[0].assign(first)
    for w in node.weights[1:-1]:
        eye = np.zeros(w.shape, np.float32)
        eye[0, 0] = 1.0
        w.assign(eye)
    last = np.zeros(node.weights[-1].shape, np.float32)
    if source == "noise":
        last[0, 0] = scale * 5  # lrelu keeps the sign; 0.2 x on the negative side
    else:
        last[0, 0] = 2 * scale
        node.biases[-1].assign([-scale])
    node.weights[-1].assign(last)


@pytest.fixture
def chain():
    cc = CausalController(CHAIN, config(cc_n_layers=3, cc_n_hidden=4), seed=1)
    set_copy_weights(cc.A, "noise")
    set_copy_weights(cc.B, "A")
    set_copy_weights(cc.C, "B")
    set_copy_weights(cc.D, "noise")
    return cc


def test_builds_in_topological_order_and_exposes_nodes():
    shuffled = [BIG[5], BIG[0], BIG[8], BIG[1], BIG[2], BIG[3], BIG[4], BIG[6], BIG[7]]
    cc = CausalController(shuffled, config(), seed=0)
    order = cc.node_names
    assert order == cc.label_names and len(cc) == 9 and sorted(order) == sorted(n for n, _ in BIG)
    for node, parents in BIG:
        assert all(order.index(p) < order.index(node) for p in parents)
    assert cc.Smiling is cc.node_dict["Smiling"] and cc.Smiling.parents == ["Male", "Young"]
    # the valid order of big_causal_graph is kept as given
    assert topological_order(BIG) == list(range(9))
    # variables: 6 layers per node, weights and biases; tracked once each
    assert len(cc.trainable_variables) == 9 * 12
    assert cc.Smiling.weights[0].shape == (10 + 2, 10) and cc.Smiling.weights[-1].shape == (10, 1)
    assert cc.step.dtype == tf.int64 and int(cc.step.numpy()) == 0
    assert np.all(cc.Bald.biases[0].numpy() == 0)
    with pytest.raises(AttributeError):
        _ = cc.NotANode


def test_cycles_and_unknown_parents_are_user_errors():
    with pytest.raises(UserError, match="cycle"):
        CausalController([("A", ["B"]), ("B", ["A"]), ("C", [])], config())
    with pytest.raises(UserError, match="not nodes"):
        CausalController([("A", ["Z"])], config())
    with pytest.raises(UserError, match="twice"):
        CausalController([("A", []), ("A", [])], config())


def test_sample_shapes_ranges_and_logits():
    cc = CausalController(BIG, config(), seed=0)
    labels, logits = cc.sample(64)
    assert labels.shape == (64, 9) and logits.shape == (64, 9) and labels.dtype == tf.float32
    np.testing.assert_allclose(labels.numpy(), tf.sigmoid(logits).numpy(), atol=1e-6)
    assert cc.sample()[0].shape == (16, 9)  # default batch_size


def test_fixed_noise_is_reproducible_and_matches_seeded_draws():
    cc = CausalController(BIG, config(), seed=0)
    noise = cc.draw_noise(32, seed=5)
    assert noise.shape == (32, 9, 10)
    a, _ = cc.sample(noise=noise)
    b, _ = cc.sample(noise=noise)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    c, _ = cc.sample(32, seed=5)
    np.testing.assert_array_equal(a.numpy(), c.numpy())
    d, _ = cc.sample(32, seed=6)
    assert not np.allclose(a.numpy(), d.numpy())
    as_dict = {n: noise[:, i] for i, n in enumerate(cc.node_names)}
    np.testing.assert_array_equal(cc.sample(noise=as_dict)[0].numpy(), a.numpy())
    with pytest.raises(UserError, match="shape"):
        cc.sample(noise=tf.zeros([4, 9, 3]))


def test_intervention_changes_descendants_only(chain):
    noise = chain.draw_noise(2000, seed=0)
    base, _ = chain.sample(noise=noise)
    base = base.numpy()
    # the hand-set chain copies A into B and C
    assert 0.4 < (base[:, 0] > 0.5).mean() < 0.6
    np.testing.assert_array_equal(base[:, 0] > 0.5, base[:, 1] > 0.5)
    np.testing.assert_array_equal(base[:, 1] > 0.5, base[:, 2] > 0.5)
    for value in (0.0, 1.0):
        do_b, _ = chain.sample(noise=noise, do_labels={"B": value})
        do_b = do_b.numpy()
        np.testing.assert_array_equal(do_b[:, 0], base[:, 0])  # ancestor: same individuals
        np.testing.assert_array_equal(do_b[:, 3], base[:, 3])  # unrelated node untouched
        assert np.all(do_b[:, 1] == value)
        assert np.all((do_b[:, 2] > 0.5) == bool(value))       # child follows the intervention
    # same individuals under two interventions differ only downstream
    one, _ = chain.sample(noise=noise, do_labels={"A": 1})
    zero, _ = chain.sample(noise=noise, do_labels={"A": 0})
    assert np.all(one.numpy()[:, 1] > 0.5) and np.all(zero.numpy()[:, 1] < 0.5)
    np.testing.assert_array_equal(one.numpy()[:, 3], zero.numpy()[:, 3])


def test_do_on_logits_equals_do_on_the_matching_label(chain):
    noise = chain.draw_noise(50, seed=3)
    chain.B.biases[-1].assign([-5.0])  # make B depend smoothly on A's label
    labels_g, logits_g = chain.sample(noise=noise, do_logits={"A": 0.3})
    value = float(tf.sigmoid(0.3))
    labels_l, logits_l = chain.sample(noise=noise, do_labels={"A": value})
    np.testing.assert_allclose(labels_g.numpy()[:, 0], value, rtol=1e-6)
    np.testing.assert_allclose(logits_g.numpy()[:, 0], 0.3, rtol=1e-6)
    np.testing.assert_allclose(labels_l.numpy(), labels_g.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits_l.numpy()[:, 0], 0.3, rtol=1e-4)
    assert np.all(labels_g.numpy()[:, 1] > 0.5) != np.all(labels_g.numpy()[:, 1] < 0.5)
    with pytest.raises(UserError, match="both"):
        chain.sample(noise=noise, do_labels={"A": 1}, do_logits={"A": 2.0})


def test_per_row_interventions(chain):
    values = np.array([0, 1, 0, 1, 1], np.float32)
    labels, _ = chain.sample(noise=chain.draw_noise(5, seed=1), do_labels={"A": values})
    np.testing.assert_array_equal(labels.numpy()[:, 0], values)
    np.testing.assert_array_equal(labels.numpy()[:, 2] > 0.5, values > 0.5)
    with pytest.raises(UserError, match="entries"):
        chain.sample(5, do_labels={"A": [0, 1]})
    with pytest.raises(UserError, match="not nodes"):
        chain.sample(5, do_labels={"Z": 1})


def test_one_trace_serves_all_interventions():
    cc = CausalController(BIG, config(), seed=0)
    for do in ({}, {"Bald": 1}, {"Male": 0, "Smiling": 1}, {"Young": np.ones(7)}):
        cc.sample(7, do_labels=do)
        cc.sample(33, do_logits={"Bald": 2.0})
    assert cc._sample_seeded_fn.experimental_get_tracing_count() == 1


def test_sample_label_do_versus_condition(chain):
    do = chain.sample_label(do_dict={"B": 1}, N=4000, seed=0)
    assert set(do) == {"A", "B", "C", "D"} and do["A"].shape == (4000, 1)
    assert np.all(do["B"] == 1) and np.all(do["C"] > 0.5)
    assert 0.45 < (do["A"] > 0.5).mean() < 0.55            # the ancestor keeps its marginal
    cond = chain.sample_label(cond_dict={"B": 1}, N=4000, seed=0)
    assert cond["A"].shape == (4000, 1)
    assert np.all(cond["B"] > 0.5) and np.all(cond["A"] > 0.5)  # conditioning shifts it
    both = chain.sample_label(do_dict={"B": 0}, cond_dict={"D": 1}, N=500, seed=2)
    assert np.all(both["B"] == 0) and np.all(both["D"] > 0.5) and np.all(both["C"] < 0.5)
    assert 0.4 < (both["A"] > 0.5).mean() < 0.6


def test_conditioning_on_many_node_sets_gives_no_retracing_warning(chain):
    # one compiled sampler per set of conditioned nodes, each traced once: TensorFlow's
    # "retracing" warning about them (seen in the demo's final figures) is filtered out
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    tf.get_logger().addHandler(handler)
    sets = ({"A": 1}, {"B": 1}, {"C": 1}, {"D": 1}, {"A": 1, "D": 1}, {"B": 1, "D": 1})
    try:
        for cond in sets:
            chain.sample_label(cond_dict=cond, N=8, seed=0)
    finally:
        tf.get_logger().removeHandler(handler)
    assert len(chain._accepted_cache) == len(sets)
    assert not [r for r in records if "retracing" in r.getMessage()]


@pytest.mark.parametrize("kwargs, match", [
    ({"do_dict": {"A": 0.5}}, "0 or 1"),
    ({"cond_dict": {"B": 2}}, "0 or 1"),
    ({"cond_dict": {"Nope": 1}}, "Nope"),
    ({"do_dict": {"Bald": 1}}, "Bald"),
    ({"N": 0}, "at least 1"),
])
def test_sample_label_rejects_bad_requests(chain, kwargs, match):
    with pytest.raises(UserError, match=match):
        chain.sample_label(**kwargs)


def test_conditioning_gives_up_with_a_warning(chain):
    chain.D.biases[-1].assign([-1000.0])  # D is never 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = chain.sample_label(cond_dict={"D": 1}, N=5, seed=0)
    assert out["D"].shape == (0, 1)
    assert any("found only 0 of the 5" in str(w.message) for w in caught)
    chain.D.biases[-1].assign([0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a possible condition does not warn
        assert chain.sample_label(cond_dict={"D": 1}, N=5, seed=0)["D"].shape == (5, 1)
