"""The causal controller: a generator over the labels shaped like the causal graph.

Every node of the graph owns a small network that maps its own exogenous noise
``z ~ U[-1, 1]^cc_n_hidden`` and its parents' labels to one logit; its label is the
sigmoid of that logit. Nodes run in topological order, so an intervention on a node
(replacing its label or its logit) changes only its descendants, and with fixed noise the
same "individuals" can be shown under different interventions. Conditioning is rejection
sampling on the rounded labels (``sample_label``).

Public surface::

    cc = CausalController(graph, cc_config, seed=None)
    labels, logits = cc.sample(batch_size, noise=None, do_labels=None, do_logits=None)
    noise = cc.draw_noise(batch_size, seed=None)          # [B, n_nodes, cc_n_hidden]
    cc.sample_label(cond_dict=None, do_dict=None, N=None, seed=None)  # {name: (N, 1)}
    cc.Smiling, cc.node_dict["Smiling"], cc.node_names, cc.label_names, len(cc), cc.step
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from errors import UserError
from nets import glorot_uniform, lrelu

log = logging.getLogger(__name__)


class _ExpectedTracing(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning about the rejection
    samplers: each set of conditioned nodes is its own compiled function by design
    (``_accepted_fn``), traced once, which TensorFlow counts as retracing one function."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("_accepted_fn" in message and "retracing" in message)


tf.get_logger().addFilter(_ExpectedTracing())

MAX_REJECTION_ROUNDS = 4000  # the reference gives up conditioning after this many rounds
_MAX_ROUND = 1 << 18  # most samples drawn in one rejection round
_LOGIT_CLIP = 1e-6  # labels set by an intervention report logit(clip(v, eps, 1 - eps))


def dense_stack(h: tf.Tensor, weights, biases) -> tf.Tensor:
    """Fully connected layers with lrelu between them and a linear last layer."""
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = tf.matmul(h, w) + b
        if i < last:
            h = lrelu(h)
    return h


def topological_order(graph: Sequence[tuple[str, Sequence[str]]]) -> list[int]:
    """Indices of ``graph`` in a topological order (stable: a valid order is kept).

    Raises UserError on a cycle, a parent that is not a node, or a repeated node.
    """
    names = [node for node, _ in graph]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise UserError(f"The causal graph lists node {name!r} twice; list each node once.")
        seen.add(name)
    for node, parents in graph:
        unknown = [p for p in parents if p not in seen]
        if unknown:
            raise UserError(
                f"Node {node!r} of the causal graph has parents {unknown} that are not nodes "
                "of the graph; add them as nodes or remove the edges."
            )
    order: list[int] = []
    placed: set[str] = set()
    remaining = list(range(len(graph)))
    while remaining:
        ready = [i for i in remaining if all(p in placed for p in graph[i][1])]
        if not ready:
            cyclic = [graph[i][0] for i in remaining]
            raise UserError(
                f"The causal graph has a cycle among the nodes {cyclic}; a causal graph must "
                "be acyclic: remove or reverse one of the edges."
            )
        i = ready[0]  # the first ready node in the given order keeps valid orders unchanged
        order.append(i)
        placed.add(graph[i][0])
        remaining.remove(i)
    return order


class CausalNode(tf.Module):
    """One node: concat(noise, parents' labels) -> (cc_n_layers - 1) x [dense, lrelu] -> logit.

    Weights are Glorot-uniform and biases zero, as in the reference (slim defaults).
    """

    def __init__(self, name: str, parents: Sequence[str], n_hidden: int, n_layers: int,
                 rng: tf.random.Generator):
        super().__init__(name=name)
        self.node_name = name          # the label's name (tf.Module.name is the same string)
        self.parents = list(parents)   # parent node names, in the order their labels enter
        self.n_hidden = n_hidden       # width of the hidden layers and size of the noise
        n_in = n_hidden + len(self.parents)
        widths = [n_in] + [n_hidden] * (n_layers - 1) + [1]
        self.weights = [
            tf.Variable(glorot_uniform([a, b], a, b, rng), name=f"w{i}")
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
        ]
        self.biases = [
            tf.Variable(tf.zeros([b]), name=f"b{i}") for i, b in enumerate(widths[1:])
        ]

    def logit(self, z: tf.Tensor, parent_labels: Sequence[tf.Tensor]) -> tf.Tensor:
        """[B, n_hidden] noise and a list of [B, 1] parent labels -> [B, 1] logit."""
        h = tf.concat([z, *parent_labels], axis=1) if parent_labels else z
        return dense_stack(h, self.weights, self.biases)


class CausalController(tf.Module):
    """The label generator shaped like the causal graph (see the module docstring).

    ``graph`` is a list of ``(node, [parents])``; ``cc_config`` carries the flags of
    causal_controller/config.py (cc_n_layers, cc_n_hidden, batch_size are used here).
    Labels and logits always come in ``label_names`` order (a topological order; the
    given order when it already is one).
    """

    def __init__(self, graph, cc_config, seed: int | None = None, name: str = "causal_controller"):
        super().__init__(name=name)
        graph = [(str(node), [str(p) for p in parents]) for node, parents in graph]
        if not graph:
            raise UserError("The causal graph has no nodes; give at least one label.")
        order = topological_order(graph)
        self.graph = [graph[i] for i in order]
        self.config = cc_config
        self.n_hidden = int(cc_config.cc_n_hidden)
        self.n_layers = int(cc_config.cc_n_layers)
        if self.n_hidden < 1 or self.n_layers < 1:
            raise UserError("--cc_n_hidden and --cc_n_layers must be at least 1.")
        self.node_names = [node for node, _ in self.graph]
        self.label_names = list(self.node_names)
        self._index = {n: i for i, n in enumerate(self.node_names)}
        self._parent_index = [[self._index[p] for p in parents] for _, parents in self.graph]

        init_rng = (tf.random.Generator.from_seed(seed) if seed is not None
                    else tf.random.Generator.from_non_deterministic_state())
        self.nodes = [
            CausalNode(node, parents, self.n_hidden, self.n_layers, init_rng)
            for node, parents in self.graph
        ]
        self.node_dict = dict(zip(self.node_names, self.nodes, strict=True))
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        # source of seeds for unseeded sampling; not part of checkpoints' meaning
        self._noise_rng = (tf.random.Generator.from_seed(seed + 1) if seed is not None
                           else tf.random.Generator.from_non_deterministic_state())

        n = len(self.nodes)
        mask_spec = tf.TensorSpec([n], tf.float32)
        value_spec = tf.TensorSpec([None, n], tf.float32)
        self._sample_noise_fn = tf.function(
            self._sample_noise,
            input_signature=[tf.TensorSpec([None, n, self.n_hidden], tf.float32),
                             mask_spec, value_spec, mask_spec, value_spec],
            reduce_retracing=True)
        self._sample_seeded_fn = tf.function(
            self._sample_seeded,
            input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int64),
                             mask_spec, value_spec, mask_spec, value_spec],
            reduce_retracing=True)
        # samplers for conditioning, one per set of conditioned nodes (not checkpointed)
        object.__setattr__(self, "_accepted_cache", {})

    # ------------------------------------------------------------------ access
    def __getattr__(self, attr: str):
        """``cc.Smiling`` is ``cc.node_dict['Smiling']`` (only when no real attribute exists)."""
        nodes = self.__dict__.get("node_dict")
        if nodes is not None and attr in nodes:
            return nodes[attr]
        raise AttributeError(f"{type(self).__name__!s} has no attribute or node {attr!r}")

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def graph_spec(self) -> str:
        """A canonical text of the graph and shapes, stored with checkpoints to check loads."""
        parts = [f"{node}<-{','.join(parents)}" for node, parents in self.graph]
        return f"layers={self.n_layers};hidden={self.n_hidden};" + ";".join(parts)

    # ------------------------------------------------------------------ forward
    def _node_noise(self, batch_size, seed, i: int) -> tf.Tensor:
        """Node i's noise [B, n_hidden] for a stateless seed pair (the same as draw_noise)."""
        node_seed = tf.stack([seed[0], seed[1] + i])
        return tf.random.stateless_uniform([batch_size, self.n_hidden], node_seed,
                                           minval=-1.0, maxval=1.0)

    def forward(self, noise: Sequence[tf.Tensor], label_mask=None, label_value=None,
                logit_mask=None, logit_value=None, stop_parent_gradients: bool = False):
        """The graph in topological order; differentiable; masks are optional.

        noise: one [B, n_hidden] tensor per node. label_mask / logit_mask: [n] 0/1 floats
        marking intervened nodes, with values [B or 1, n]. stop_parent_gradients: parents'
        labels enter their children as constants (factorized pretraining, where each node
        is trained by its own critic only). Returns (labels, logits) [B, n].
        """
        labels: dict[int, tf.Tensor] = {}
        logits: dict[int, tf.Tensor] = {}
        self._run_nodes(range(len(self.nodes)), lambda i: noise[i], labels, logits,
                        label_mask, label_value, logit_mask, logit_value, stop_parent_gradients)
        order = range(len(self.nodes))
        return (tf.concat([labels[i] for i in order], axis=1),
                tf.concat([logits[i] for i in order], axis=1))

    def _run_nodes(self, indices, noise_of, labels: dict, logits: dict, label_mask=None,
                   label_value=None, logit_mask=None, logit_value=None,
                   stop_parent_gradients: bool = False) -> None:
        """Compute the nodes ``indices`` (topological order) into labels/logits by index;
        their parents must be in ``labels`` already or among ``indices`` earlier."""
        for i in indices:
            parents = [labels[j] for j in self._parent_index[i]]
            if stop_parent_gradients:
                parents = [tf.stop_gradient(p) for p in parents]
            logit = self.nodes[i].logit(noise_of(i), parents)
            if logit_mask is not None:
                logit = tf.where(logit_mask[i] > 0.5, logit_value[:, i:i + 1], logit)
            label = tf.sigmoid(logit)
            if label_mask is not None:
                given = label_mask[i] > 0.5
                value = label_value[:, i:i + 1]
                label = tf.where(given, value, label)
                clipped = tf.clip_by_value(value, _LOGIT_CLIP, 1.0 - _LOGIT_CLIP)
                logit = tf.where(given, tf.math.log(clipped) - tf.math.log1p(-clipped), logit)
            labels[i] = label
            logits[i] = logit

    def _sample_noise(self, noise, label_mask, label_value, logit_mask, logit_value):
        per_node = tf.unstack(noise, axis=1)
        return self.forward(per_node, label_mask, label_value, logit_mask, logit_value)

    def _sample_seeded(self, batch_size, seed, label_mask, label_value, logit_mask, logit_value):
        noise = [self._node_noise(batch_size, seed, i) for i in range(len(self.nodes))]
        return self.forward(noise, label_mask, label_value, logit_mask, logit_value)

    def _accepted_fn(self, cond_nodes: tuple[int, ...]):
        """A compiled sampler returning only rows whose rounded labels meet the conditions.

        The conditioned nodes and their ancestors are computed for every draw; the other
        nodes only for the accepted rows (with their own fresh noise, so the result has the
        same distribution as computing everything and then rejecting). One trace per set of
        conditioned nodes; the values and interventions are tensors.
        """
        fn = self._accepted_cache.get(cond_nodes)
        if fn is not None:
            return fn
        needed = set(cond_nodes)
        for i in reversed(range(len(self.nodes))):
            if i in needed:
                needed.update(self._parent_index[i])
        first = [i for i in range(len(self.nodes)) if i in needed]
        rest = [i for i in range(len(self.nodes)) if i not in needed]
        n = len(self.nodes)

        def accepted(batch_size, seed, label_mask, label_value, logit_mask, logit_value,
                     cond_value):
            masks = (label_mask, label_value, logit_mask, logit_value)
            labels: dict[int, tf.Tensor] = {}
            self._run_nodes(first, lambda i: self._node_noise(batch_size, seed, i), labels, {},
                            *masks)
            keep = tf.ones([batch_size], tf.bool)
            for i in cond_nodes:
                keep &= tf.equal(tf.round(labels[i][:, 0]), cond_value[i])
            labels = {i: tf.boolean_mask(labels[i], keep) for i in first}
            n_kept = tf.shape(labels[first[0]])[0]
            seed_rest = tf.stack([seed[0] + 7919, seed[1]])
            self._run_nodes(rest, lambda i: self._node_noise(n_kept, seed_rest, i), labels, {},
                            *masks)
            return tf.concat([labels[i] for i in range(n)], axis=1)

        mask_spec = tf.TensorSpec([n], tf.float32)
        value_spec = tf.TensorSpec([None, n], tf.float32)
        fn = tf.function(accepted, input_signature=[
            tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int64),
            mask_spec, value_spec, mask_spec, value_spec, mask_spec])
        self._accepted_cache[cond_nodes] = fn
        return fn

    # ------------------------------------------------------------------ sampling API
    def _seed_pair(self, seed) -> tf.Tensor:
        if seed is None:
            return self._noise_rng.make_seeds(1)[:, 0]
        return tf.constant([int(seed), 0x5EED], tf.int64)

    def draw_noise(self, batch_size: int, seed: int | None = None) -> tf.Tensor:
        """Noise [B, n_nodes, cc_n_hidden] ~ U[-1, 1] to pass as ``sample(noise=...)``.

        With a seed, ``sample(noise=draw_noise(B, s))`` equals what the controller draws
        itself for that seed.
        """
        seed_pair = self._seed_pair(seed)
        return tf.stack([self._node_noise(int(batch_size), seed_pair, i)
                         for i in range(len(self.nodes))], axis=1)

    def _noise_tensor(self, noise) -> tf.Tensor:
        if isinstance(noise, Mapping):
            missing = [n for n in self.node_names if n not in noise]
            unknown = [k for k in noise if k not in self._index]
            if missing or unknown:
                raise UserError(
                    f"The noise dictionary must hold exactly the nodes {self.node_names}; "
                    f"missing {missing}, unknown {unknown}.")
            noise = tf.stack([tf.convert_to_tensor(noise[n], tf.float32) for n in self.node_names],
                             axis=1)
        noise = tf.convert_to_tensor(noise, tf.float32)
        expected = (len(self.nodes), self.n_hidden)
        if noise.shape.rank != 3 or tuple(noise.shape[1:]) != expected:
            raise UserError(
                f"Fixed noise must have shape [batch, {expected[0]}, {expected[1]}] (batch, "
                f"nodes, cc_n_hidden); got {noise.shape}. Make it with draw_noise().")
        return noise

    def _do_tensors(self, do: Mapping | None, batch_size: int, what: str):
        """A do-dict -> (mask [n], values [1 or B, n]) so that one trace serves all."""
        n = len(self.nodes)
        mask = np.zeros([n], np.float32)
        if not do:
            return tf.constant(mask), tf.zeros([1, n], tf.float32)
        unknown = [k for k in do if k not in self._index]
        if unknown:
            raise UserError(f"Cannot intervene on {unknown} ({what}): not nodes of the causal "
                            f"graph. Known nodes: {self.node_names}.")
        per_row = any(np.size(v) > 1 for v in do.values())
        rows = batch_size if per_row else 1
        values = np.zeros([rows, n], np.float32)
        for key, v in do.items():
            arr = np.asarray(v, np.float32).reshape(-1)
            if arr.size not in (1, rows):
                raise UserError(f"do-value for {key!r} ({what}) has {arr.size} entries; give "
                                f"a scalar or one value per row ({rows}).")
            values[:, self._index[key]] = arr
            mask[self._index[key]] = 1.0
        return tf.constant(mask), tf.constant(values)

    def sample(self, batch_size: int | None = None, noise=None, do_labels: Mapping | None = None,
               do_logits: Mapping | None = None, seed: int | None = None):
        """Forward sampling: (labels [B, n], logits [B, n]) float32 tensors in node order.

        noise: fixed noise [B, n_nodes, cc_n_hidden] (or a dict node -> [B, cc_n_hidden]);
        without it fresh noise is drawn (deterministic given ``seed``).
        do_labels / do_logits: node -> scalar or per-row values; the node's label (or logit,
        label = sigmoid(logit)) is replaced and only its descendants are recomputed.
        A node intervened on by label reports logit(clip(value, 1e-6, 1 - 1e-6)).
        """
        if noise is not None:
            noise = self._noise_tensor(noise)
            batch_size = int(noise.shape[0])
        elif batch_size is None:
            batch_size = int(self.config.batch_size)
        both = set(do_labels or {}) & set(do_logits or {})
        if both:
            raise UserError(f"Nodes {sorted(both)} are given both a label and a logit "
                            "intervention; give one of them.")
        lm, lv = self._do_tensors(do_labels, batch_size, "labels")
        gm, gv = self._do_tensors(do_logits, batch_size, "logits")
        if noise is not None:
            return self._sample_noise_fn(noise, lm, lv, gm, gv)
        return self._sample_seeded_fn(tf.constant(batch_size, tf.int32), self._seed_pair(seed),
                                      lm, lv, gm, gv)

    def _check_binary(self, d: Mapping | None, what: str) -> dict:
        d = dict(d or {})
        unknown = [k for k in d if k not in self._index]
        if unknown:
            raise UserError(f"{what} names {unknown}, which are not nodes of the causal graph. "
                            f"Known nodes: {self.node_names}.")
        bad = {k: v for k, v in d.items() if not (np.ndim(v) == 0 and v in (0, 1))}
        if bad:
            raise UserError(f"{what} values must be 0 or 1; got {bad}. For other values use "
                            "CausalController.sample(do_labels=..., do_logits=...).")
        return {k: float(v) for k, v in d.items()}

    def sample_label(self, cond_dict: Mapping | None = None, do_dict: Mapping | None = None,
                     N: int | None = None, seed: int | None = None) -> dict[str, np.ndarray]:
        """Labels under interventions and/or conditions: {name: np.ndarray (N, 1)}.

        do_dict sets nodes' labels to 0 or 1 (descendants recomputed). cond_dict keeps only
        samples whose rounded labels equal the given 0/1 values (rejection sampling, after
        the interventions). Rounds draw large batches sized from the acceptance rate seen;
        after MAX_REJECTION_ROUNDS rounds, or as many draws as the reference's 4000 rounds of
        N, a warning says how many of the N were found, and those are returned.
        """
        cond = self._check_binary(cond_dict, "cond_dict")
        do = self._check_binary(do_dict, "do_dict")
        N = int(self.config.batch_size if N is None else N)
        if N < 1:
            raise UserError(f"N must be at least 1; got {N}.")
        lm, lv = self._do_tensors(do, N, "labels")
        n = len(self.nodes)
        gm, gv = tf.zeros([n]), tf.zeros([1, n])
        rng = (tf.random.Generator.from_seed(seed) if seed is not None else self._noise_rng)
        if not cond:
            labels, _ = self._sample_seeded_fn(tf.constant(N, tf.int32), rng.make_seeds(1)[:, 0],
                                               lm, lv, gm, gv)
            return self._to_dict(labels.numpy())

        cond_value = np.zeros([n], np.float32)
        for key, v in cond.items():
            cond_value[self._index[key]] = v
        sampler = self._accepted_fn(tuple(sorted(self._index[k] for k in cond)))
        cond_value = tf.constant(cond_value)
        found: list[np.ndarray] = []
        n_found = n_drawn = rounds = 0
        budget = MAX_REJECTION_ROUNDS * N  # the reference's most draws: 4000 rounds of N
        while n_found < N and rounds < MAX_REJECTION_ROUNDS and n_drawn < budget:
            rounds += 1
            remaining = N - n_found
            # size the round from the acceptance seen so far; powers of two keep few shapes
            rate = max(n_found / n_drawn, 1e-3) if n_found else (1.0 if not n_drawn else 1e-3)
            size = int(np.clip(1.2 * remaining / rate, 256, _MAX_ROUND))
            size = min(1 << int(np.ceil(np.log2(size))), _MAX_ROUND, max(budget - n_drawn, 1))
            kept = sampler(tf.constant(size, tf.int32), rng.make_seeds(1)[:, 0], lm, lv, gm, gv,
                           cond_value).numpy()
            n_drawn += size
            if len(kept):
                kept = kept[:remaining]
                found.append(kept)
                n_found += len(kept)
        labels = np.concatenate(found) if found else np.zeros([0, n], np.float32)
        if n_found < N:
            message = (f"Conditioning on {dict(cond)} (do {dict(do)}): found only {n_found} of "
                       f"the {N} samples asked for in {rounds} rounds ({n_drawn} draws); "
                       "returning those.")
            log.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        return self._to_dict(labels)

    def _to_dict(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        return {name: labels[:, i:i + 1] for i, name in enumerate(self.node_names)}
