"""Toy faces: a small synthetic CelebA-format dataset whose causal model is known exactly.

The labels come from a structural causal model (SCM) shaped like ``big_causal_graph``;
its conditional probability tables are chosen so that the dataset behaves like CelebA
where it matters for the paper's figures (bald people are almost all men, while
intervening on Bald leaves Male at its marginal). Each label vector is drawn as a
178x218 RGB cartoon face in CelebA framing: the face fills the central 108x108 window,
so the usual "crop 108, resize to 64" recipe applies unchanged.

Command line::

    python toy_faces.py --n 20000 --out data/toyfaces --seed 0
    python toy_faces.py --grid docs/toyfaces_grid.png

The dataset folder holds ``images/000001.jpg ...``, ``list_attr_celeba.txt`` (CelebA
format), ``scm.json`` (the graph and its tables) and ``exogenous.npz`` (each face's
per-node uniforms and the seed of its nuisance: ``load_exogenous``). The same seed gives byte-identical
files whatever the number of worker processes. Processes rendering the same folder at
once take turns on a lock file beside it (``.<folder>.lock``, there only while one
renders): the first renders, the others wait and then find the folder complete.

``render_labels(out, labels)`` draws a given table of label vectors the same way (e.g.
rows of ``ToyFacesSCM.sample_conditional``, exact draws from P(labels | given) under do()).

``counterfactual(folder, k, do={"Bald": 1})`` is face k's exact counterfactual: its
noise through the intervened model (descendants recomputed, other nodes unchanged) and
the same individual drawn with those labels (every nuisance draw happens whatever the
labels, so nothing else moves). ``render_labels(..., nuisance=rows)`` draws many.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from attributes import attribute_text
from utils import publish_folder

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# The causal model
# --------------------------------------------------------------------------------------

NODES = (
    "Young",
    "Male",
    "Eyeglasses",
    "Bald",
    "Mustache",
    "Smiling",
    "Wearing_Lipstick",
    "Mouth_Slightly_Open",
    "Narrow_Eyes",
)

GRAPH = [
    ("Young", []),
    ("Male", []),
    ("Eyeglasses", ["Young"]),
    ("Bald", ["Male", "Young"]),
    ("Mustache", ["Male", "Young"]),
    ("Smiling", ["Male", "Young"]),
    ("Wearing_Lipstick", ["Male", "Young"]),
    ("Mouth_Slightly_Open", ["Young", "Smiling"]),
    ("Narrow_Eyes", ["Male", "Young", "Smiling"]),
]

# P(node = 1 | parents). Entry i belongs to the parent values whose binary number is i,
# the first listed parent being the most significant bit: for parents (Male, Young) the
# entries are (0,0), (0,1), (1,0), (1,1).
TABLES = {
    "Young": [0.780],
    "Male": [0.422],
    "Eyeglasses": [0.165, 0.036],
    "Bald": [0.002, 0.002, 0.116, 0.021],
    "Mustache": [0.002, 0.002, 0.134, 0.071],
    "Smiling": [0.658, 0.520, 0.434, 0.382],
    "Wearing_Lipstick": [0.735, 0.820, 0.002, 0.009],
    "Mouth_Slightly_Open": [0.233, 0.743, 0.221, 0.761],
    "Narrow_Eyes": [0.098, 0.135, 0.094, 0.119, 0.113, 0.190, 0.077, 0.173],
}


class ToyFacesSCM:
    """A structural causal model over binary nodes.

    ``graph`` is an ordered list of ``(node, [parents])`` in topological order;
    ``tables[node]`` lists P(node = 1 | parents) for the 2**k parent states (first
    parent = most significant bit). Each node is ``1[u_node < p(parents)]`` with its own
    exogenous ``u_node ~ U[0, 1)``, so the same seed under different interventions gives
    the same "individuals".
    """

    def __init__(self, graph: Sequence, tables: Mapping[str, Sequence[float]]):
        self.graph = [(str(node), [str(p) for p in parents]) for node, parents in graph]
        self.nodes = [node for node, _ in self.graph]
        seen: set[str] = set()
        for node, parents in self.graph:
            if node in seen:
                raise ValueError(f"node {node!r} appears twice in the graph")
            for parent in parents:
                if parent not in seen:
                    raise ValueError(
                        f"parent {parent!r} of {node!r} must come earlier in the graph"
                    )
            seen.add(node)
        self.tables: dict[str, np.ndarray] = {}
        for node, parents in self.graph:
            if node not in tables:
                raise ValueError(f"no probability table for node {node!r}")
            table = np.asarray(tables[node], dtype=np.float64)
            if table.shape != (2 ** len(parents),):
                raise ValueError(
                    f"table of {node!r} needs {2 ** len(parents)} entries "
                    f"(one per parent state), got {table.size}"
                )
            if np.any((table < 0) | (table > 1)):
                raise ValueError(f"table of {node!r} holds values outside [0, 1]")
            self.tables[node] = table
        self._col = {node: j for j, node in enumerate(self.nodes)}

    # -- helpers -------------------------------------------------------------------------
    def _check_assignment(self, values: Mapping | None, what: str) -> dict[str, int]:
        values = dict(values or {})
        for node, value in values.items():
            if node not in self._col:
                raise ValueError(f"{what}: unknown node {node!r}; nodes are {self.nodes}")
            if value not in (0, 1):
                raise ValueError(f"{what}: {node} must be 0 or 1, got {value!r}")
        return {node: int(value) for node, value in values.items()}

    def _parent_index(self, states: np.ndarray, parents: list[str]) -> np.ndarray:
        index = np.zeros(len(states), dtype=np.int64)
        for parent in parents:
            index = index * 2 + states[:, self._col[parent]]
        return index

    # -- sampling and exact probabilities -------------------------------------------------
    def sample(self, n: int, do: Mapping | None = None, seed=None) -> pd.DataFrame:
        """``n`` label vectors (0/1, one column per node); ``do`` fixes nodes."""
        return self.solve(self.draw_noise(n, seed), do)

    def draw_noise(self, n: int, seed=None) -> np.ndarray:
        """The exogenous noise ``sample(n, seed=seed)`` uses: [n, nodes] ~ U[0, 1)."""
        return np.random.default_rng(seed).random((n, len(self.nodes)))

    def solve(self, noise: np.ndarray, do: Mapping | None = None) -> pd.DataFrame:
        """The label vectors of the individuals whose exogenous noise is ``noise`` [n,
        nodes] under ``do``: each node not intervened on is ``1[u_node < p(parents)]``, so
        with the same noise only the intervened nodes and their descendants can change
        (the exact counterfactual)."""
        do = self._check_assignment(do, "do")
        noise = np.asarray(noise, dtype=np.float64)
        if noise.ndim != 2 or noise.shape[1] != len(self.nodes):
            raise ValueError(f"noise must have shape [n, {len(self.nodes)}], got {noise.shape}")
        states = np.zeros(noise.shape, dtype=np.int64)
        for j, (node, parents) in enumerate(self.graph):
            if node in do:
                states[:, j] = do[node]
            else:
                p = self.tables[node][self._parent_index(states, parents)]
                states[:, j] = noise[:, j] < p
        return pd.DataFrame(states.astype(np.int8), columns=self.nodes)

    def sample_conditional(
        self, n: int, given: Mapping, do: Mapping | None = None, seed=None
    ) -> pd.DataFrame:
        """``n`` label vectors drawn exactly from P(labels | given) under ``do`` (by
        enumerating the joint, so a rare condition costs no more than a common one);
        ValueError when the condition has probability 0."""
        given = self._check_assignment(given, "given")
        states, probs = self.joint(do)
        keep = np.ones(len(states), dtype=bool)
        for node, value in given.items():
            keep &= states[:, self._col[node]] == value
        total = probs[keep].sum()
        if total <= 0:
            raise ValueError(f"the condition {given} has probability 0")
        rng = np.random.default_rng(seed)
        rows = rng.choice(np.flatnonzero(keep), size=int(n), p=probs[keep] / total)
        return pd.DataFrame(states[rows].astype(np.int8), columns=self.nodes)

    def joint(self, do: Mapping | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All 2**d label vectors ``[2**d, d]`` (first node = most significant bit) and
        their probabilities under the (intervened) model."""
        do = self._check_assignment(do, "do")
        d = len(self.nodes)
        codes = np.arange(2**d)
        states = (codes[:, None] >> (d - 1 - np.arange(d))[None, :]) & 1
        probs = np.ones(2**d)
        for j, (node, parents) in enumerate(self.graph):
            value = states[:, j]
            if node in do:
                probs *= value == do[node]
            else:
                p = self.tables[node][self._parent_index(states, parents)]
                probs *= np.where(value == 1, p, 1.0 - p)
        return states, probs

    def prob(
        self, target: Mapping, given: Mapping | None = None, do: Mapping | None = None
    ) -> float:
        """Exact P(target | given) in the model under ``do``, by enumeration."""
        target = self._check_assignment(target, "target")
        given = self._check_assignment(given, "given")
        states, probs = self.joint(do)

        def mask(assignment: dict[str, int]) -> np.ndarray:
            keep = np.ones(len(states), dtype=bool)
            for node, value in assignment.items():
                keep &= states[:, self._col[node]] == value
            return keep

        given_mask = mask(given)
        denominator = probs[given_mask].sum()
        if denominator <= 0:
            raise ValueError(f"the condition {given} has probability 0")
        return float(probs[given_mask & mask(target)].sum() / denominator)

    # -- files ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "description": "Toy faces SCM: node = 1[u < p(parents)], u ~ U[0,1) per node. "
            "tables[node][i] = P(node=1 | parents) where i is the parents' values read as "
            "a binary number, first parent most significant.",
            "graph": [[node, list(parents)] for node, parents in self.graph],
            "tables": {node: [float(p) for p in self.tables[node]] for node in self.nodes},
        }

    def to_json(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path) -> ToyFacesSCM:
        data = json.loads(Path(path).read_text())
        return cls(data["graph"], data["tables"])


def default_scm() -> ToyFacesSCM:
    """The model behind the bundled ``toyfaces`` dataset."""
    return ToyFacesSCM(GRAPH, TABLES)


# --------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------

WIDTH, HEIGHT = 178, 218  # CelebA aligned frame
CROP = 108  # the centred window the loaders crop
CROP_LEFT, CROP_TOP = (WIDTH - CROP) // 2, (HEIGHT - CROP) // 2  # 35, 55
JPEG_QUALITY = 90

_YOUNG_HAIR = [
    (28, 22, 18),
    (60, 40, 25),
    (95, 60, 30),
    (130, 85, 40),
    (205, 165, 85),
    (225, 190, 110),
]
_LIPSTICK = np.array([210, 20, 45])
_DARK = (25, 20, 18)


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def _hair_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(young hair, grey hair): both read from the same draws of ``rng``, which then
    continues where the young colour's draws end, whatever the face's age.

    The faces rendered before this function existed drew only the colour of their age;
    both colours' draws take the same two 64-bit words of the stream (numpy's bounded
    integers for these small ranges reject a word with probability below 1e-7), so those
    faces are unchanged, and changing Young no longer shifts the draws after the hair."""
    start = rng.bit_generator.state
    young = np.array(_YOUNG_HAIR[rng.integers(len(_YOUNG_HAIR))]) + rng.integers(-10, 11, 3)
    after = rng.bit_generator.state
    rng.bit_generator.state = start
    grey = np.full(3, rng.integers(165, 215)) + rng.integers(-6, 7, 3)
    rng.bit_generator.state = after
    return young, grey


def _col(c) -> tuple[int, int, int]:
    """An RGB colour from floats: rounded and clipped to 0..255."""
    return tuple(int(v) for v in np.clip(np.round(c), 0, 255))


class _Pen:
    """Drawing in the crop window's coordinates (0..108), shifted and scaled per face."""

    def __init__(self, draw: ImageDraw.ImageDraw, scale: float, dx: float, dy: float):
        self.draw, self.scale, self.dx, self.dy = draw, scale, dx, dy

    def pt(self, x: float, y: float) -> tuple[float, float]:
        """A point of the window in the frame."""
        return (CROP_LEFT + self.dx + 54 + (x - 54) * self.scale,
                CROP_TOP + self.dy + 54 + (y - 54) * self.scale)

    def box(self, x0, y0, x1, y1) -> list[float]:
        """A bounding box of the window in the frame."""
        return [*self.pt(x0, y0), *self.pt(x1, y1)]

    def w(self, n: float) -> int:
        """A line width or radius, scaled (at least 1)."""
        return max(1, round(n * self.scale))


def _nuisance(rng: np.random.Generator, young: int):
    """The face's nuisance: (background, clothes, skin, hair, scale, dx, dy).

    Drawn in a fixed order so the image depends on the rng stream only, and every draw
    happens whatever the labels (the same individual under other labels)."""
    background = _hsv_to_rgb(rng.random(), rng.uniform(0.25, 0.55), rng.uniform(0.55, 0.9))
    clothes = _hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.7), rng.uniform(0.3, 0.8))
    tone = rng.uniform(0.0, 0.85)
    skin = np.array([235, 200, 170]) * (1 - tone) + np.array([120, 80, 55]) * tone
    hair = _hair_colours(rng)[0 if young else 1]
    scale = rng.uniform(0.94, 1.06)
    dx, dy = rng.uniform(-3, 3), rng.uniform(-3, 3)
    return background, clothes, skin, hair, scale, dx, dy


def _draw_head(pen: _Pen, clothes, skin_c, shade, hair_c, male: int, bald: int) -> None:
    """Shoulders, neck, the face's shape and the hair."""
    draw, pt, box, w = pen.draw, pen.pt, pen.box, pen.w
    # shoulders and neck
    draw.ellipse(box(-20, 100, 128, 190), fill=clothes)
    draw.rectangle(box(42, 88, 66, 112), fill=shade)

    # long hair behind the head (women): falls to the chin on both sides
    if not male:
        top = 30 if bald else -2
        draw.rounded_rectangle(box(4, top, 104, 110), radius=w(22), fill=hair_c)

    # face: women an oval with a narrow chin, men a broad square jaw
    if male:
        draw.ellipse(box(11, 38, 19, 60), fill=shade)  # ears
        draw.ellipse(box(89, 38, 97, 60), fill=shade)
        draw.ellipse(box(15, 8, 93, 80), fill=skin_c)
        draw.rounded_rectangle(box(16, 40, 92, 104), radius=w(18), fill=skin_c)
    else:
        draw.ellipse(box(19, 8, 89, 106), fill=skin_c)

    # hair on top
    if not bald:
        if male:
            draw.chord(box(12, -8, 96, 52), 180, 360, fill=hair_c)
            draw.rectangle(box(14, 20, 21, 40), fill=hair_c)  # sideburns
            draw.rectangle(box(87, 20, 94, 40), fill=hair_c)
        else:
            draw.chord(box(14, -8, 94, 52), 180, 360, fill=hair_c)
            draw.polygon([pt(14, 22), pt(34, 22), pt(22, 44), pt(16, 60)], fill=hair_c)
            draw.polygon([pt(94, 22), pt(74, 22), pt(86, 44), pt(92, 60)], fill=hair_c)
    elif male:  # bald men keep a fringe at the sides
        draw.rounded_rectangle(box(11, 26, 22, 58), radius=w(4), fill=hair_c)
        draw.rounded_rectangle(box(86, 26, 97, 58), radius=w(4), fill=hair_c)


def _draw_eyes(pen: _Pen, skin, shade, young: int, narrow: int, glasses: int) -> None:
    """The forehead lines of age, the eyes and the eyeglasses."""
    draw, pt, box, w = pen.draw, pen.pt, pen.box, pen.w
    # forehead lines of age
    if not young:
        line = _col(skin * 0.55)
        for y in (26, 31):
            draw.arc(box(34, y, 74, y + 8), 200, 340, fill=line, width=w(2))

    # eyes: round (white with a dark iris) or narrow slits
    for cx in (37, 71):
        if narrow:
            draw.line([pt(cx - 8, 46), pt(cx + 8, 46)], fill=_DARK, width=w(3))
        else:
            draw.ellipse(box(cx - 8, 39, cx + 8, 53), fill=(250, 250, 250), outline=shade)
            draw.ellipse(box(cx - 4, 42, cx + 4, 50), fill=(35, 30, 40))

    # eyeglasses: dark frames, a bridge and the arms
    if glasses:
        frame = (15, 15, 20)
        draw.rounded_rectangle(box(24, 35, 50, 57), radius=w(5), outline=frame, width=w(4))
        draw.rounded_rectangle(box(58, 35, 84, 57), radius=w(5), outline=frame, width=w(4))
        draw.line([pt(50, 44), pt(58, 44)], fill=frame, width=w(4))
        draw.line([pt(24, 43), pt(14, 41)], fill=frame, width=w(3))
        draw.line([pt(84, 43), pt(94, 41)], fill=frame, width=w(3))


def _draw_mouth(pen: _Pen, skin, shade, mustache: int, smiling: int, lipstick: int,
                mouth_open: int) -> None:
    """The nose, the mustache and the mouth."""
    draw, pt, box, w = pen.draw, pen.pt, pen.box, pen.w
    # nose
    draw.line([pt(54, 52), pt(50, 64), pt(57, 65)], fill=shade, width=w(2))

    # mustache: a dark band above the mouth
    if mustache:
        draw.polygon([pt(35, 66), pt(73, 66), pt(77, 74), pt(31, 74)], fill=_DARK)

    # mouth: lipstick red or pale lips; smiling upturned or straight; open with a dark gap
    lips = _col(_LIPSTICK) if lipstick else _col(skin * 0.6 + np.array([55, 5, 15]))
    gap = (45, 8, 15)
    crease = _col(skin * 0.3)
    if mouth_open and smiling:
        draw.chord(box(31, 56, 77, 96), 0, 180, fill=lips)
        draw.chord(box(37, 62, 71, 90), 0, 180, fill=gap)
    elif mouth_open:
        draw.ellipse(box(35, 76, 73, 95), fill=lips)
        draw.ellipse(box(41, 81, 67, 90), fill=gap)
    elif smiling:
        draw.arc(box(32, 52, 76, 94), 12, 168, fill=lips, width=w(8))
        draw.arc(box(35, 55, 73, 91), 18, 162, fill=crease, width=w(3))
    else:
        draw.rounded_rectangle(box(33, 81, 75, 89), radius=w(3), fill=lips)
        draw.line([pt(34, 85), pt(74, 85)], fill=crease, width=w(3))


def render_face(labels: Mapping[str, int], rng: np.random.Generator) -> Image.Image:
    """Draw one 178x218 RGB face showing ``labels`` (node -> 0/1).

    Geometry is written in the coordinates of the 108x108 crop window (0..108); the
    per-image nuisance (shift, size, colours) comes from ``rng``.
    """
    young, male = labels["Young"], labels["Male"]
    glasses, bald, mustache = labels["Eyeglasses"], labels["Bald"], labels["Mustache"]
    smiling, lipstick = labels["Smiling"], labels["Wearing_Lipstick"]
    mouth_open, narrow = labels["Mouth_Slightly_Open"], labels["Narrow_Eyes"]

    background, clothes, skin, hair, scale, dx, dy = _nuisance(rng, young)
    skin_c, hair_c = _col(skin), _col(hair)
    shade = _col(skin * 0.8)
    img = Image.new("RGB", (WIDTH, HEIGHT), background)
    pen = _Pen(ImageDraw.Draw(img), scale, dx, dy)
    _draw_head(pen, clothes, skin_c, shade, hair_c, male, bald)
    _draw_eyes(pen, skin, shade, young, narrow, glasses)
    _draw_mouth(pen, skin, shade, mustache, smiling, lipstick, mouth_open)
    return img


def _image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def _render_chunk(job: tuple[str, int, int, np.ndarray, np.ndarray]) -> int:
    """Worker: render images ``start+1 ...`` of the given label rows into ``folder``, each
    with the nuisance of its entry of ``nuisance`` (a face index under ``seed``)."""
    folder, seed, start, rows, nuisance = job
    for offset, row in enumerate(rows):
        labels = dict(zip(NODES, (int(v) for v in row), strict=True))
        image = render_face(labels, _image_rng(seed, int(nuisance[offset])))
        image.save(os.path.join(folder, image_name(start + offset)), quality=JPEG_QUALITY)
    return len(rows)


def image_name(index: int) -> str:
    """File name of the image at 0-based ``index`` (``000001.jpg`` for 0)."""
    return f"{index + 1:06d}.jpg"


def _pool_context() -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


_CHUNK = 100  # images per rendering task
_LOCK_HELD = "TOYFACES_LOCK_HELD"  # set for a child process rendering under its parent's lock


def _lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def _dataset_lock(out: Path):
    """Hold the lock file beside ``out`` (waiting, with a message, while another process
    holds it). The lock goes with the process, so a killed renderer never blocks others;
    the holder removes the file when done, and a waiter that then finds its file gone
    from the path tries again on the current one."""
    path = _lock_path(out)
    if os.environ.get(_LOCK_HELD) == str(path.resolve()):
        yield  # our parent process holds it for us
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        handle = open(path, "a")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waited:
                    log.info("waiting for another process that is rendering %s ...", out)
                    waited = True
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                current = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
            except FileNotFoundError:
                current = False
        except BaseException:
            handle.close()
            raise
        if current:
            break
        handle.close()  # the holder before us removed this file: lock the current one
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # still ours here: waiters will see it is gone
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def is_complete(out) -> bool:
    """Whether ``out`` holds a rendered dataset (folders are published whole, so the
    attribute file is there only when everything is)."""
    return (Path(out) / "list_attr_celeba.txt").exists()


def _render_in_subprocess(
    out: Path, n: int, seed: int, workers: int, progress: bool, overwrite: bool, scm: ToyFacesSCM
) -> Path:
    """Run this file's command line in a fresh interpreter.

    Used when TensorFlow is loaded here: forking a process that runs TensorFlow's thread
    pools can deadlock, and "spawn" would re-import the caller's main script. The child
    renders under this process's lock.
    """
    import subprocess

    with tempfile.TemporaryDirectory() as scratch:
        scm_path = Path(scratch) / "scm.json"
        scm.to_json(scm_path)
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--n",
            str(n),
            "--out",
            str(out),
            "--seed",
            str(seed),
            "--workers",
            str(workers),
            "--scm",
            str(scm_path),
        ]
        command += ["--overwrite"] if overwrite else []
        command += [] if progress else ["--quiet"]
        env = {**os.environ, _LOCK_HELD: str(_lock_path(out).resolve())}
        result = subprocess.run(command, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"rendering the toy faces failed (exit code {result.returncode})")
    return out


def render_dataset(
    out,
    n: int = 20000,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    scm: ToyFacesSCM | None = None,
) -> Path:
    """Render ``n`` toy faces into ``out`` (images/, list_attr_celeba.txt, scm.json).

    Everything is written into a hidden sibling folder that is renamed to ``out`` only
    when complete. An existing complete dataset is replaced only with ``overwrite``; an
    incomplete existing folder is moved aside to ``<out>.old-<time>``, never deleted.
    Holds the lock file beside ``out`` while it works.
    """
    out = Path(out)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    with _dataset_lock(out):
        if is_complete(out) and not overwrite:
            raise FileExistsError(
                f"{out} already holds a dataset; pass overwrite=True to replace it")
        return _render(out, n, seed, workers, progress, overwrite, scm)


def ensure_dataset(out, n: int = 20000, seed: int = 0, workers: int | None = None,
                   progress: bool = True, before=None) -> bool:
    """Render the dataset into ``out`` unless it is there; True if this call rendered it.

    Several processes may call this at once: one renders, the others wait for it and
    return False. ``before()`` is called just before rendering starts.
    """
    out = Path(out)
    if is_complete(out):
        return False
    with _dataset_lock(out):
        if is_complete(out):
            return False
        if before is not None:
            before()
        _render(out, n, seed, workers, progress, False, None)
    return True


def render_labels(out, labels: pd.DataFrame, seed: int = 0, progress: bool = False,
                  nuisance: Sequence[int] | None = None) -> Path:
    """Render one face per row of ``labels`` (0/1 columns, at least every node of NODES)
    into ``out``: images/, list_attr_celeba.txt and exogenous.npz (nuisance only) in the
    dataset's format, no scm.json (the labels come from the caller, e.g.
    ``ToyFacesSCM.sample_conditional``). Face k's nuisance is drawn from (``seed``, k) as
    in ``render_dataset``, or from (``seed``, ``nuisance[k]``): the individual of face
    ``nuisance[k]`` of a data set rendered with ``seed``, drawn with other labels.
    Renders in this process, one face after another (rendering's rate:
    benchmarks/bench_data.py, docs/SPEED.md); ``out`` must not hold a dataset yet."""
    out = Path(out)
    missing = [node for node in NODES if node not in labels.columns]
    if missing:
        raise ValueError(f"the labels have no columns {missing}")
    with _dataset_lock(out):
        if is_complete(out):
            raise FileExistsError(f"{out} already holds a dataset")
        if nuisance is not None and len(nuisance) != len(labels):
            raise ValueError(f"{len(nuisance)} nuisance indices for {len(labels)} label rows")
        return _write(out, labels[list(NODES)].reset_index(drop=True), seed, 1, progress,
                      False, None, nuisance=nuisance)


def _render(out: Path, n: int, seed: int, workers: int | None, progress: bool,
            overwrite: bool, scm: ToyFacesSCM | None) -> Path:
    scm = scm or default_scm()
    workers = workers or os.cpu_count() or 1
    use_pool = workers > 1 and n > 2 * _CHUNK
    if use_pool and "tensorflow" in sys.modules:
        return _render_in_subprocess(out, n, seed, workers, progress, overwrite, scm)
    noise = scm.draw_noise(n, seed)
    labels = scm.solve(noise)
    return _write(out, labels, seed, workers if use_pool else 1, progress, overwrite, scm,
                  noise)


def _write(out: Path, labels: pd.DataFrame, seed: int, workers: int, progress: bool,
           overwrite: bool, scm: ToyFacesSCM | None, noise: np.ndarray | None = None,
           nuisance: np.ndarray | None = None) -> Path:
    """Render the rows of ``labels`` (``workers`` > 1: in a pool) into a hidden sibling
    folder, write the attribute file, exogenous.npz (and ``scm``'s scm.json), then publish
    it as ``out``. Row k's nuisance is face ``nuisance[k]`` of ``seed`` (default k)."""
    from tqdm import tqdm

    n = len(labels)
    labels = labels.copy()
    labels.index = [image_name(i) for i in range(n)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        rows = labels[list(NODES)].to_numpy()
        nuisance = np.arange(n) if nuisance is None else np.asarray(nuisance, np.int64)
        jobs = [(str(tmp / "images"), seed, s, rows[s : s + _CHUNK], nuisance[s : s + _CHUNK])
                for s in range(0, n, _CHUNK)]
        bar = tqdm(total=n, desc="rendering toy faces", unit="img", disable=not progress)
        with bar:
            if workers <= 1:
                for job in jobs:
                    bar.update(_render_chunk(job))
            else:
                with _pool_context().Pool(workers) as pool:
                    for done in pool.imap_unordered(_render_chunk, jobs):
                        bar.update(done)
        names = scm.nodes if scm is not None else list(labels.columns)
        (tmp / "list_attr_celeba.txt").write_text(attribute_text(names, labels))
        Exogenous(names, noise, seed, nuisance).save(tmp / EXOGENOUS_FILE)
        if scm is not None:
            scm.to_json(tmp / "scm.json")
        aside = publish_folder(tmp, out, remove_old=overwrite)
        if aside is not None:
            log.warning("moved the incomplete folder %s aside to %s", out, aside)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --------------------------------------------------------------------------------------
# Exogenous noise and exact counterfactuals
# --------------------------------------------------------------------------------------

EXOGENOUS_FILE = "exogenous.npz"


@dataclass
class Exogenous:
    """Everything random about the faces of a data set, one row per face.

    ``u`` [n, nodes] are the SCM's per-node uniforms (None when the labels came from the
    caller, ``render_labels``); face k's nuisance (colours, size, shift) is drawn from
    ``default_rng([seed, index[k]])``. With both, ``ToyFacesSCM.solve(u)`` gives the
    attribute file's labels and ``render_face`` its images, exactly.
    """

    nodes: list[str]
    u: np.ndarray | None
    seed: int
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def save(self, path) -> None:
        arrays = {"nodes": np.array(self.nodes), "seed": np.int64(self.seed),
                  "index": np.asarray(self.index, np.int64)}
        if self.u is not None:
            arrays["u"] = np.asarray(self.u, np.float64)
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    @classmethod
    def load(cls, path) -> Exogenous:
        with np.load(path) as data:
            return cls([str(n) for n in data["nodes"]],
                       data["u"] if "u" in data.files else None, int(data["seed"]),
                       data["index"])


def load_exogenous(folder, seed: int = 0) -> Exogenous:
    """The exogenous noise of the data set in ``folder``: its exogenous.npz, or for a set
    rendered before that file existed, the noise of ``seed`` (the default seed of
    ``render_dataset`` and ``main.py``) once it is checked to give every label of the
    attribute file. ValueError when neither is there."""
    folder = Path(folder)
    if (folder / EXOGENOUS_FILE).is_file():
        return Exogenous.load(folder / EXOGENOUS_FILE)
    from attributes import read_attributes

    if not (folder / "scm.json").is_file() or not is_complete(folder):
        raise ValueError(f"{folder} holds no toy faces data set with its noise ({EXOGENOUS_FILE} "
                         "or scm.json are missing)")
    scm = ToyFacesSCM.from_json(folder / "scm.json")
    attr = read_attributes(folder / "list_attr_celeba.txt")
    noise = scm.draw_noise(len(attr), seed)
    if not np.array_equal(scm.solve(noise).to_numpy(), attr[scm.nodes].to_numpy()):
        raise ValueError(f"{folder} has no {EXOGENOUS_FILE} and its labels are not those of "
                         f"seed {seed}: render it again (python toy_faces.py --out {folder} "
                         "--overwrite --seed <its seed>) to store its noise")
    log.info("%s: no %s; the noise of seed %d gives all %d label rows", folder,
             EXOGENOUS_FILE, seed, len(attr))
    return Exogenous(list(scm.nodes), noise, seed, np.arange(len(attr)))


@dataclass
class Counterfactual:
    """One face under an intervention: its labels (node -> 0/1) and its image."""

    labels: dict[str, int]
    image: Image.Image


def counterfactual(source, face: int, do: Mapping | None = None,
                   scm: ToyFacesSCM | None = None) -> Counterfactual:
    """The exact counterfactual of face ``face`` (0-based row) under ``do``: the same
    exogenous noise through the intervened model (the nodes in ``do`` set, their
    descendants recomputed, every other node unchanged) and the same individual drawn
    with those labels. ``source``: a data set folder (its scm.json unless ``scm`` is
    given) or an ``Exogenous`` (then ``scm`` defaults to the toy faces' model). An empty
    ``do`` gives the face itself, image byte for byte."""
    if isinstance(source, Exogenous):
        exogenous, scm = source, scm or default_scm()
    else:
        exogenous = load_exogenous(source)
        scm = scm or ToyFacesSCM.from_json(Path(source) / "scm.json")
    if exogenous.u is None:
        raise ValueError("these faces' labels were given, not drawn: there is no noise "
                         "to recompute them from")
    if not 0 <= int(face) < len(exogenous):
        raise ValueError(f"face {face} is not a row of the {len(exogenous)} faces")
    noise = exogenous.u[int(face)][[exogenous.nodes.index(n) for n in scm.nodes]]
    row = scm.solve(noise[None, :], do).iloc[0]
    labels = {node: int(row[node]) for node in scm.nodes}
    return Counterfactual(labels, render_face(labels, _image_rng(exogenous.seed,
                                                                 int(exogenous.index[face]))))


# --------------------------------------------------------------------------------------
# Documentation grid
# --------------------------------------------------------------------------------------

SHORT_NAMES = {
    "Young": "Young",
    "Male": "Male",
    "Eyeglasses": "Glasses",
    "Bald": "Bald",
    "Mustache": "Mustache",
    "Smiling": "Smile",
    "Wearing_Lipstick": "Lipstick",
    "Mouth_Slightly_Open": "Open",
    "Narrow_Eyes": "Narrow",
}


def grid_labels(rows: int = 4, cols: int = 6, seed: int = 1) -> pd.DataFrame:
    """Label vectors for the example grid: SCM samples, each tile forcing one attribute
    on (by intervention) in turn so that every attribute is shown."""
    scm = default_scm()
    out = []
    for k in range(rows * cols):
        node = NODES[k % len(NODES)]
        value = 0 if node in ("Young",) and k % 2 else 1
        out.append(scm.sample(1, do={node: value}, seed=seed * 1000 + k).iloc[0])
    return pd.DataFrame(out).reset_index(drop=True)


def make_grid(path, rows: int = 4, cols: int = 6, size: int = 64, seed: int = 1) -> Path:
    """Write a grid of cropped ``size``x``size`` faces with their labels underneath."""
    labels = grid_labels(rows, cols, seed)
    font = ImageFont.load_default()
    text_h, pad = 40, 4
    tile_w, tile_h = max(size, 84), size + text_h
    grid = Image.new("RGB", (cols * (tile_w + pad) + pad, rows * (tile_h + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for k, row in labels.iterrows():
        face = render_face(row.to_dict(), _image_rng(seed, int(k)))
        face = face.crop((CROP_LEFT, CROP_TOP, CROP_LEFT + CROP, CROP_TOP + CROP))
        face = face.resize((size, size), Image.Resampling.BOX)
        x = pad + (k % cols) * (tile_w + pad)
        y = pad + (k // cols) * (tile_h + pad)
        grid.paste(face, (x + (tile_w - size) // 2, y))
        words = [SHORT_NAMES[n] for n in NODES if row[n] and n not in ("Young", "Male")]
        first = ("Young " if row["Young"] else "Old ") + ("man" if row["Male"] else "woman")
        lines = [first] + [" ".join(words[i : i + 2]) for i in range(0, len(words), 2)]
        for i, text in enumerate(t for t in lines if t):
            draw.text((x + 1, y + size + 1 + 9 * i), text, fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, optimize=True)
    return path


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Render the toy faces dataset (synthetic CelebA-format faces whose "
        "labels follow a known causal model shaped like big_causal_graph), or an example "
        "grid of faces for the documentation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=20000, help="number of images to render")
    parser.add_argument("--out", default="data/toyfaces", help="dataset folder to create")
    parser.add_argument("--seed", type=int, default=0, help="seed of labels and drawings")
    parser.add_argument(
        "--workers", type=int, default=None, help="rendering processes (default: CPU count)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing dataset in --out"
    )
    parser.add_argument(
        "--scm",
        metavar="JSON",
        default=None,
        help="a scm.json to sample the labels from (default: the built-in toy faces model)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--grid",
        metavar="PNG",
        default=None,
        help="write a 4x6 example grid of cropped faces with their labels to this file "
        "instead of rendering a dataset",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.grid:
        log.info("wrote %s", make_grid(args.grid))
        return 0
    if args.n < 1:
        print(f"--n must be a positive number of images, got {args.n}", file=sys.stderr)
        return 2
    try:
        start = time.perf_counter()
        scm = ToyFacesSCM.from_json(args.scm) if args.scm else None
        out = render_dataset(
            args.out, args.n, args.seed, args.workers, not args.quiet, args.overwrite, scm
        )
    except FileExistsError:
        print(
            f"{args.out} already holds a dataset. Pass --overwrite to replace it, or choose "
            "another --out.",
            file=sys.stderr,
        )
        return 2
    elapsed = time.perf_counter() - start
    log.info(
        "wrote %d images to %s in %.1f s (%.0f images/s)", args.n, out, elapsed, args.n / elapsed
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
