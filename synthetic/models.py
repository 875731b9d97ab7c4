"""Data sets, generators, discriminator, losses and TVD of the synthetic experiments.

Three variables X1, X2, X3 in [0, 1]. A data set is a structural causal model whose
mechanisms are random cubic polynomials of their causes and one uniform noise each
(``linear`` X1 -> X2 -> X3, ``collider`` X1 -> X2 <- X3, ``complete`` X1 -> X2 -> X3 and
X1 -> X3), or a random 5-layer tanh net of a single noise (``network``); outputs are
rescaled to [0.05, 0.95]. Six generators learn it as plain GANs: three shaped like the
graphs (one small tanh net per variable, its own noise plus its parents' values) and
three fully connected nets of 3, 5 and 10 layers.

Public surface::

    params = draw_data_params(data_type, np_rng)        # JSON-able; saved in data.json
    data = SyntheticData([params, ...]); x = data.sample(n, tf_rng)   # [R, n, 3]
    gen = make_generator(name, z_dim, hidden, [tf_rng] * R); x = gen(z)  # z [R, n, 3 z_dim]
    gans = GANSet(config, [params, ...], seeds)      # R runs x six GANs
    losses = gans.train_step()                       # all of them, one compiled call
    losses["nonfinite"]                              # [6, R] masks: skipped updates
    x = gans.sample(n)                               # [R, 2 data + 6 generators, n, 3]
    p = grid_histogram(x[r, k]); tvd, mvd = tvd_and_max_diff(p_gen, p_data)

Every tensor carries a leading axis R: R independent runs (their own data set and
initial weights) trained side by side in one process, R = 1 for a plain run. The
networks are tiny, so ten runs side by side cost far less than ten times the CPU of one
and start up once (measured by benchmarks/bench_synthetic.py; synthetic/README.md, Speed).

The maths (losses, cubic mechanisms, minibatch features, TVD) are small pure functions
at the top; the classes only hold variables and string the functions together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

import nets
import nonfinite
from causal_controller.adam import Adam  # TF1's AdamOptimizer, as the reference ran
from synthetic.config import DATA_TYPES, FC_LAYERS, GENERATORS, GRAPHS  # noqa: F401

VARIABLES = ("X1", "X2", "X3")

BOUNDARY = 0.05          # data are rescaled from [0, 1] to [BOUNDARY, 1 - BOUNDARY]
INIT_STDDEV = 0.7        # the reference's N(0, 0.7) weights of every dense layer
MINIBATCH_STDDEV = 0.02  # ...and N(0, 0.02) for the minibatch-feature projection
MINIBATCH_KERNELS = 5    # minibatch features: number of kernels...
MINIBATCH_KERNEL_DIM = 3  # ...and the size of each
NETWORK_HIDDEN = 10      # width of the random net of the "network" data set
NETWORK_LAYERS = 5
TVD_BINS = 10            # TVD on a 10 x 10 x 10 grid over [0, 1]^3
# what the bits of a GAN update's non-finite mask stand for (nonfinite.py)
NONFINITE_NAMES = ("d_loss", "g_loss", "gradients of d_loss", "gradients of g_loss")


# ----------------------------------------------------------------------------- losses
# Every tensor below carries a leading axis R: R independent runs trained side by side
# (R = 1 for a single run). Losses are per run, shape [R].
def sigmoid_xent(logits: tf.Tensor, target: float) -> tf.Tensor:
    """Per-run mean sigmoid cross-entropy of logits [R, B, 1] against a constant 0 or 1."""
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.fill(tf.shape(logits), target), logits=logits), axis=[1, 2])


def d_loss_fn(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
    """Discriminator: real examples labelled 1, generated ones 0."""
    return sigmoid_xent(real_logits, 1.0) + sigmoid_xent(fake_logits, 0.0)


def g_loss_fn(fake_logits: tf.Tensor) -> tf.Tensor:
    """Generator (non-saturating): its examples should be labelled 1."""
    return sigmoid_xent(fake_logits, 1.0)


# ----------------------------------------------------------------------------- data
def cubic(inputs: tf.Tensor, coef: tf.Tensor) -> tf.Tensor:
    """sum_ijl coef[i,j,l] y_i y_j y_l with y = (1, inputs): every monomial of degree <= 3.

    inputs [R, n, k], coef [R, k+1, k+1, k+1] -> [R, n, 1]."""
    y = tf.concat([tf.ones_like(inputs[..., :1]), inputs], axis=-1)
    t = tf.einsum("rnl,rijl->rnij", y, coef)
    t = tf.einsum("rnj,rnij->rni", y, t)
    return tf.reduce_sum(y * t, axis=-1, keepdims=True)


def normalized_cubic(n_inputs: int, rng: np.random.Generator) -> np.ndarray:
    """Coefficients U[-1, 1] of a cubic of ``n_inputs`` variables, shifted and scaled so
    that it maps [0, 1]^n_inputs onto [0, 1]: min and max are taken on a grid that
    includes the corners (1001, 201, 101 points per axis for 1, 2, 3 inputs); the few
    values a finer grid would find beyond them are clipped when sampling."""
    dim = n_inputs + 1
    coef = rng.uniform(-1.0, 1.0, (dim, dim, dim))
    points = {1: 1001, 2: 201, 3: 101}[n_inputs]
    axes = np.meshgrid(*[np.linspace(0.0, 1.0, points)] * n_inputs, indexing="ij")
    y = np.stack([np.ones(axes[0].size)] + [a.reshape(-1) for a in axes], axis=1)
    values = np.einsum("ni,nj,nl,ijl->n", y, y, y, coef, optimize=True)
    low, high = values.min(), values.max()
    coef[0, 0, 0] -= low
    coef /= high - low
    return coef.astype(np.float32)


def rescale(x: tf.Tensor) -> tf.Tensor:
    """[0, 1] -> [0.05, 0.95] (the reference found data at 0 or 1 hard for a sigmoid)."""
    return (1.0 - 2.0 * BOUNDARY) * x + BOUNDARY


def draw_data_params(data_type: str, rng: np.random.Generator) -> dict:
    """One random data set: its mechanisms' coefficients as plain lists (for data.json).

    Graph data sets: {"data_type", "mechanisms": {var: coef [k+1]^3}} where var's inputs
    are its causes (GRAPHS order) and then its own noise. ``network``: {"data_type",
    "weights": [w0 .. w4]} of a tanh net 1 -> 10 -> 10 -> 10 -> 10 -> 3 (sigmoid out,
    zero biases, N(0, 0.7) weights) of one uniform noise."""
    if data_type in GRAPHS:
        mechanisms = {var: normalized_cubic(len(causes) + 1, rng).tolist()
                      for var, causes in GRAPHS[data_type].items()}
        return {"data_type": data_type, "mechanisms": mechanisms}
    if data_type == "network":
        widths = [1] + [NETWORK_HIDDEN] * (NETWORK_LAYERS - 1) + [len(VARIABLES)]
        weights = [rng.normal(0.0, INIT_STDDEV, (a, b)).astype(np.float32).tolist()
                   for a, b in zip(widths[:-1], widths[1:], strict=True)]
        return {"data_type": data_type, "weights": weights}
    raise ValueError(f"unknown data type {data_type!r}; one of {', '.join(DATA_TYPES)}")


class SyntheticData(tf.Module):
    """Samples R data sets of one type, each drawn by ``draw_data_params`` (constants)."""

    def __init__(self, params: Sequence[Mapping]):
        super().__init__(name="data")
        types = {p["data_type"] for p in params}
        if len(types) != 1:
            raise ValueError(f"the runs of one process share a data type, got {sorted(types)}")
        self.data_type = types.pop()
        self.runs = len(params)
        if self.data_type in GRAPHS:
            self.graph = GRAPHS[self.data_type]
            self.coef = {var: tf.constant(np.stack([p["mechanisms"][var] for p in params]),
                                          tf.float32) for var in self.graph}
        else:
            self.graph = None
            self.weights = [tf.constant(np.stack([p["weights"][i] for p in params]), tf.float32)
                            for i in range(NETWORK_LAYERS)]

    def sample(self, n, rng: tf.random.Generator) -> tf.Tensor:
        """[R, n, 3] samples (X1, X2, X3) in [0.05, 0.95]."""
        if self.graph is None:
            h = rng.uniform([self.runs, n, 1])
            for w in self.weights[:-1]:
                h = tf.tanh(tf.matmul(h, w))
            return rescale(tf.sigmoid(tf.matmul(h, self.weights[-1])))
        noise = rng.uniform([self.runs, n, len(VARIABLES)])
        values = {}
        for var, causes in self.graph.items():
            k = VARIABLES.index(var)
            inputs = tf.concat([values[c] for c in causes] + [noise[..., k:k + 1]], axis=-1)
            values[var] = tf.clip_by_value(cubic(inputs, self.coef[var]), 0.0, 1.0)
        return rescale(tf.concat([values[v] for v in VARIABLES], axis=-1))


# ----------------------------------------------------------------------------- networks
def normal_init(shape: Sequence[int], stddev: float, rngs: Sequence[tf.random.Generator]):
    """[R, *shape] initial values, run r's drawn from its own generator rngs[r]."""
    return tf.stack([nets.normal(shape, stddev, rng) for rng in rngs])


class Dense(tf.Module):
    """x [R, B, n_in] -> x @ w + b [R, B, n_out]: R independent layers side by side (one
    batched matmul), N(0, stddev) weights (the reference's init) and zero biases.

    ``nets.Dense`` is one such layer; the runs axis is what this one adds."""

    def __init__(self, n_in: int, n_out: int, rngs: Sequence[tf.random.Generator],
                 stddev: float = INIT_STDDEV, name: str | None = None):
        super().__init__(name=name)
        self.w = tf.Variable(normal_init([n_in, n_out], stddev, rngs), name="w")
        self.b = tf.Variable(tf.zeros([len(rngs), 1, n_out]), name="b")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.matmul(x, self.w) + self.b


def tanh_net(widths: Sequence[int], rngs, name: str) -> list[Dense]:
    """Dense layers between consecutive widths (tanh between them, sigmoid at the end)."""
    return [Dense(a, b, rngs, name=f"{name}_{i}")
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))]


def run_tanh_net(layers: Sequence[Dense], h: tf.Tensor) -> tf.Tensor:
    for layer in layers[:-1]:
        h = tf.tanh(layer(h))
    return tf.sigmoid(layers[-1](h))


class GraphGenerator(tf.Module):
    """One net per variable, z_dim -> hidden -> hidden -> 1 (tanh, tanh, sigmoid), fed
    its own z_dim noise and its parents' generated values, run in causal order.

    The noise z [R, n, 3 * z_dim] is split in three: X1 uses the first chunk, X2 the
    second, X3 the third, whatever the graph."""

    def __init__(self, graph: Mapping[str, Sequence[str]], z_dim: int, hidden: int, rngs,
                 name: str):
        super().__init__(name=name)
        self.graph = {var: list(causes) for var, causes in graph.items()}
        self.z_dim = z_dim
        self.nets = {var: tanh_net([z_dim + len(causes), hidden, hidden, 1], rngs, var)
                     for var, causes in self.graph.items()}

    def __call__(self, z: tf.Tensor) -> tf.Tensor:
        chunks = tf.split(z, len(VARIABLES), axis=-1)
        values = {}
        for var, causes in self.graph.items():
            own = chunks[VARIABLES.index(var)]
            values[var] = run_tanh_net(self.nets[var],
                                       tf.concat([values[c] for c in causes] + [own], -1))
        return tf.concat([values[v] for v in VARIABLES], axis=-1)


class FCGenerator(tf.Module):
    """n_layers dense layers z_dim -> hidden ... hidden -> 3 (tanh, sigmoid at the end).

    As in the reference it reads only the first z_dim of its 3 * z_dim noise."""

    def __init__(self, n_layers: int, z_dim: int, hidden: int, rngs, name: str):
        super().__init__(name=name)
        self.z_dim = z_dim
        self.net = tanh_net([z_dim] + [hidden] * (n_layers - 1) + [len(VARIABLES)], rngs, name)

    def __call__(self, z: tf.Tensor) -> tf.Tensor:
        return run_tanh_net(self.net, z[..., :self.z_dim])


def make_generator(name: str, z_dim: int, hidden: int, rngs):
    """One of GENERATORS, R = len(rngs) copies of it."""
    if name in GRAPHS:
        return GraphGenerator(GRAPHS[name], z_dim, hidden, rngs, name=name)
    if name in FC_LAYERS:
        return FCGenerator(FC_LAYERS[name], z_dim, hidden, rngs, name=name)
    raise ValueError(f"unknown generator {name!r}; one of {', '.join(GENERATORS)}")


def minibatch_features(a: tf.Tensor) -> tf.Tensor:
    """Salimans et al.'s minibatch discrimination: a [R, B, kernels, dim] -> [R, B, kernels],
    feature k of row i = sum_j exp(-||a_ik - a_jk||_1) over the batch (j = i included).

    Computed as [R, kernels, B, B] tables, one per dim, with the batch innermost: faster
    on CPU than the [R, B, B, kernels, dim] broadcast (the dim axis is only 3)."""
    per_dim = tf.transpose(a, [3, 0, 2, 1])  # [dim, R, K, B]
    l1 = tf.add_n([tf.abs(x[..., :, None] - x[..., None, :]) for x in tf.unstack(per_dim)])
    return tf.transpose(tf.reduce_sum(tf.exp(-l1), axis=-1), [0, 2, 1])


class Discriminator(tf.Module):
    """3 -> hidden -> hidden (ReLU), minibatch features appended, -> 1 logit.

    The reference wrote max(0.5 h, h) after a ReLU, which is the ReLU itself."""

    def __init__(self, hidden: int, rngs, name: str = "disc"):
        super().__init__(name=name)
        self.l0 = Dense(len(VARIABLES), hidden, rngs, name="d0")
        self.l1 = Dense(hidden, hidden, rngs, name="d1")
        self.mb = Dense(hidden, MINIBATCH_KERNELS * MINIBATCH_KERNEL_DIM, rngs,
                        stddev=MINIBATCH_STDDEV, name="minibatch")
        self.out = Dense(hidden + MINIBATCH_KERNELS, 1, rngs, name="d3")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        h = tf.nn.relu(self.l1(tf.nn.relu(self.l0(x))))
        shape = tf.concat([tf.shape(h)[:2], [MINIBATCH_KERNELS, MINIBATCH_KERNEL_DIM]], 0)
        features = minibatch_features(tf.reshape(self.mb(h), shape))
        return self.out(tf.concat([h, features], axis=-1))


# ----------------------------------------------------------------------------- GANs
class RunsAdam(Adam):
    """``Adam`` for variables whose leading axis holds R runs, each with its own iteration
    count [R], so that one run's update can be skipped (``finite`` [R] False) while the
    others' go on. With every run finite it computes what ``Adam`` computes.

    The one update that skips by selecting (``tf.where``) instead of ``nonfinite.apply_if``.
    ``apply_if`` is a ``tf.cond`` on one scalar: it runs or skips the whole update. Here
    every variable (weights and both moments, leading axis R) holds all R runs' slices,
    so with ``finite`` = [True, False] neither branch is right: applying writes run 1's
    non-finite step into its slice, skipping holds back run 0 too. Branching per run
    would take R conditionals, each writing one slice of every variable; instead one
    select per tensor keeps a skipped run's slices, and its own iteration count (its
    bias correction) does not advance. With R = 1, where a branch would do, the select
    costs little: docs/SPEED.md, "The synthetic experiments' per-run skip against one
    branch"."""

    def __init__(self, variables: Sequence[tf.Variable], learning_rate: float, runs: int,
                 name: str = "adam"):
        super().__init__(variables, learning_rate, name=name)
        self.iterations = tf.Variable(tf.zeros([int(runs)], tf.int64), trainable=False,
                                      name="iterations")

    def apply(self, grads: Sequence[tf.Tensor], variables: Sequence[tf.Variable],
              finite=None) -> None:
        """One step of every run whose ``finite`` [R] is True (all runs when None); a
        skipped run's weights, moments and iteration count stay as they were."""
        if finite is None:
            finite = tf.ones_like(self.iterations, tf.bool)
        t = tf.cast(self.iterations.assign_add(tf.cast(finite, tf.int64)), tf.float32)
        t = tf.maximum(t, 1.0)  # a skipped first update must not divide by zero
        lr_t = self.learning_rate * tf.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        for g, var, m, v in zip(grads, variables, self.m, self.v, strict=True):
            per_run = [-1] + [1] * (var.shape.rank - 1)  # [R] -> broadcast over a run's slice
            ok, lr = tf.reshape(finite, per_run), tf.reshape(lr_t, per_run)
            m_new = m.assign(tf.where(ok, self.beta1 * m + (1.0 - self.beta1) * g, m))
            v_new = v.assign(tf.where(ok, self.beta2 * v + (1.0 - self.beta2) * tf.square(g), v))
            var.assign(tf.where(ok, var - lr * m_new / (tf.sqrt(v_new) + self.epsilon), var))


class GAN(tf.Module):
    """A generator, its discriminator and their two Adam optimizers (R copies of each)."""

    def __init__(self, name: str, config, rngs):
        super().__init__(name=name)
        self.gen = make_generator(name, config.gen_z_dim, config.gen_hidden_size, rngs)
        self.disc = Discriminator(config.disc_hidden_size, rngs)
        runs = len(rngs)
        self.g_opt = RunsAdam(self.gen.trainable_variables, config.lr_gen, runs, name="g_adam")
        self.d_opt = RunsAdam(self.disc.trainable_variables, config.lr_disc, runs,
                              name="d_adam")

    def train_step(self, real: tf.Tensor, z: tf.Tensor) -> dict[str, tf.Tensor]:
        """One simultaneous update of both players from the same batch (the reference
        grouped the two minimize ops): gradients first, then both Adam steps. The runs'
        losses are summed for the gradients; each run's weights get only its own.

        A run whose losses or gradients hold NaN or Inf skips this update (both players,
        weights and Adam state alike); "nonfinite" [R] is each run's mask of
        NONFINITE_NAMES (0: applied)."""
        with tf.GradientTape(persistent=True) as tape:
            fake_logits = self.disc(self.gen(z))
            d_loss = d_loss_fn(self.disc(real), fake_logits)
            g_loss = g_loss_fn(fake_logits)
            d_total, g_total = tf.reduce_sum(d_loss), tf.reduce_sum(g_loss)
        d_vars, g_vars = self.disc.trainable_variables, self.gen.trainable_variables
        d_grads = tape.gradient(d_total, d_vars)
        g_grads = tape.gradient(g_total, g_vars)
        del tape
        finite, bad = nonfinite.check_runs({"d_loss": d_loss, "g_loss": g_loss,
                                            "gradients of d_loss": d_grads,
                                            "gradients of g_loss": g_grads}, NONFINITE_NAMES)
        self.d_opt.apply(d_grads, d_vars, finite)
        self.g_opt.apply(g_grads, g_vars, finite)
        return {"d_loss": d_loss, "g_loss": g_loss, "nonfinite": bad}


class GANSet(tf.Module):
    """The six GANs trained side by side on one data set, for R = len(seeds) runs.

    Run r's data set is ``data_params[r]`` and its initial weights come from its own
    seed; the training noise of all runs comes from one generator seeded with seeds[0].
    ``train_step()`` is ONE compiled call: it draws one real batch per run (shared by the
    six GANs of that run, as in the reference) and one noise batch per generator, and
    updates every GAN once; it returns {"<generator>/d_loss" | "/g_loss": [R]} and
    "nonfinite": [6, R], each GAN's (GENERATORS order) per-run masks of NONFINITE_NAMES
    (0: the update was applied, else it was skipped).
    ``sample(n)`` returns, in one call, two independent data samples and every
    generator's samples: [R, 2 + 6, n, 3]. Training and measuring draw their noise from
    two separate random generators, so how often a run measures does not change its
    training.
    """

    def __init__(self, config, data_params: Sequence[Mapping], seeds: Sequence[int],
                 jit_compile: bool = True):
        super().__init__(name="gans")
        if len(data_params) != len(seeds):
            raise ValueError("one data set per seed")
        self.data = SyntheticData(data_params)
        self.runs = len(seeds)
        self.names = list(GENERATORS)
        init_rngs = [tf.random.Generator.from_seed([int(s), 0]) for s in seeds]
        self.gans = {name: GAN(name, config, init_rngs) for name in self.names}
        self.rng = tf.random.Generator.from_seed([int(seeds[0]), 1])
        self.eval_rng = tf.random.Generator.from_seed([int(seeds[0]), 2])
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.batch_size = int(config.batch_size)
        self.noise_dim = len(VARIABLES) * int(config.gen_z_dim)
        self.train_step = tf.function(self._train_step, jit_compile=jit_compile)
        self.sample = tf.function(self._sample)

    def _train_step(self) -> dict[str, tf.Tensor]:
        real = self.data.sample(self.batch_size, self.rng)
        losses, masks = {}, []
        for name, gan in self.gans.items():
            z = self.rng.uniform([self.runs, self.batch_size, self.noise_dim])
            out = gan.train_step(real, z)
            masks.append(out.pop("nonfinite"))
            for key, value in out.items():
                losses[f"{name}/{key}"] = value
        losses["nonfinite"] = tf.stack(masks)
        self.step.assign_add(1)
        return losses

    def _sample(self, n: int) -> tf.Tensor:
        xs = [self.data.sample(n, self.eval_rng), self.data.sample(n, self.eval_rng)]
        for gan in self.gans.values():
            xs.append(gan.gen(self.eval_rng.uniform([self.runs, n, self.noise_dim])))
        return tf.stack(xs, axis=1)

    def run_variables(self) -> dict[str, tf.Variable]:
        """Every variable by its path (weights, biases, Adam moments and counters, step)."""
        found = tf.Module._flatten(self, predicate=lambda v: isinstance(v, tf.Variable),
                                   with_path=True)
        return {"/".join(map(str, path)): var for path, var in found}

    def run_state(self, r: int) -> dict[str, np.ndarray]:
        """Run r's slice of every variable ([1, ...]; the step whole), for its checkpoint."""
        return {path: var.numpy()[r:r + 1] if var.shape.rank else var.numpy()
                for path, var in self.run_variables().items()}

    def load_run_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Set every variable of a one-run GANSet from ``run_state``'s output."""
        variables = self.run_variables()
        missing = sorted(set(variables) - set(state))
        if missing:
            raise ValueError(f"the checkpoint lacks {missing[:3]}... (other network flags?)")
        for path, var in variables.items():
            value = state[path]
            if path.endswith("iterations") and np.shape(value) == () and var.shape == (1,):
                value = np.reshape(value, [1])  # written when Adam counted for all runs
            if tuple(var.shape) != tuple(np.shape(value)):
                raise ValueError(f"{path}: checkpoint shape {np.shape(value)}, "
                                 f"model {tuple(var.shape)}")
            var.assign(value)


# ----------------------------------------------------------------------------- TVD
def grid_histogram(x: np.ndarray, bins: int = TVD_BINS) -> np.ndarray:
    """Probabilities of the bins x bins x bins cells of [0, 1]^3 (flattened, C order).

    Values equal to 1 fall in the last cell, as in numpy.histogramdd; values outside
    [0, 1] are clipped to the border cells (neither data nor generators make any)."""
    x = np.asarray(x, dtype=np.float64)
    cells = np.clip(np.floor(x * bins).astype(np.int64), 0, bins - 1)
    codes = (cells[:, 0] * bins + cells[:, 1]) * bins + cells[:, 2]
    return np.bincount(codes, minlength=bins ** 3) / len(x)


def tvd_and_max_diff(p: np.ndarray, q: np.ndarray) -> tuple[float, float]:
    """Total variation distance 1/2 sum |p - q| and the largest cell difference max |p - q|."""
    diff = np.abs(np.asarray(p) - np.asarray(q))
    return float(0.5 * diff.sum()), float(diff.max())
