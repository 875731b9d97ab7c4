"""TVD (true, seen-only, exact) and the crosstab report of figure_scripts/pairwise.py."""

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from figure_scripts import pairwise


def vectors(rows_with_counts, names):
    """A {0,1} matrix holding each row tuple `count` times."""
    rows = [row for row, count in rows_with_counts for _ in range(count)]
    return np.array(rows, np.float32).reshape(-1, len(names))


def as_dict(matrix, names):
    return {n: matrix[:, i:i + 1] for i, n in enumerate(names)}


NAMES = ["A", "B"]


def test_identical_distributions_have_zero_tvd():
    data = vectors([((0, 0), 5), ((1, 1), 3), ((0, 1), 2)], NAMES)
    samples = data[::-1].copy()
    assert pairwise.calc_tvd(as_dict(samples, NAMES), pd.DataFrame(data, columns=NAMES)) == 0.0


def test_disjoint_distributions_have_tvd_one():
    data = vectors([((0, 0), 4)], NAMES)
    samples = vectors([((1, 1), 2), ((1, 0), 2)], NAMES)
    assert pairwise.calc_tvd(as_dict(samples, NAMES), pd.DataFrame(data, columns=NAMES)) == 1.0


def test_known_value_and_rounding():
    data = pd.DataFrame(vectors([((0, 0), 1), ((1, 1), 1)], NAMES), columns=NAMES)
    # model: all mass on (0, 0), given as soft labels that round to it (0.5 rounds down)
    samples = {"A": np.array([[0.2], [0.5], [0.49], [0.01]]), "B": np.array([[0.3]] * 4)}
    assert pairwise.calc_tvd(samples, data) == pytest.approx(0.5)
    samples["A"][:] = 0.7  # now all (1, 0): disjoint from the data
    assert pairwise.calc_tvd(samples, data) == pytest.approx(1.0)


def test_seen_only_variant_ignores_unseen_model_vectors():
    data = pd.DataFrame(vectors([((0, 0), 2), ((0, 1), 2)], NAMES), columns=NAMES)
    samples = as_dict(vectors([((0, 0), 2), ((0, 1), 1), ((1, 1), 1)], NAMES), NAMES)
    assert pairwise.calc_tvd(samples, data) == pytest.approx(0.25)
    # the (1,1) quarter is dropped, the rest renormalised to (2/3, 1/3)
    assert pairwise.tvd_seen_only(samples, data) == pytest.approx(1 / 6)
    # without unseen vectors both agree
    same = as_dict(vectors([((0, 0), 3), ((0, 1), 1)], NAMES), NAMES)
    assert pairwise.tvd_seen_only(same, data) == pytest.approx(pairwise.calc_tvd(same, data))


@pytest.mark.parametrize("n_labels", [3, 9, 17, 30])
def test_tvd_matches_brute_force_counting(n_labels):
    rng = np.random.default_rng(n_labels)
    names = [f"L{i}" for i in range(n_labels)]
    samples = (rng.random((3000, n_labels)) < 0.15).astype(np.float32)
    data = (rng.random((2000, n_labels)) < 0.2).astype(np.int64)
    p = Counter(map(tuple, (samples > 0.5).astype(int)))
    q = Counter(map(tuple, data))
    keys = set(p) | set(q)
    expected = 0.5 * sum(abs(p[k] / 3000 - q[k] / 2000) for k in keys)
    got = pairwise.calc_tvd(as_dict(samples, names), pd.DataFrame(data, columns=names))
    assert got == pytest.approx(expected, abs=1e-12)


def test_encode_is_bit_per_column():
    bits = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 1]], np.uint8)
    assert pairwise.encode(bits).tolist() == [1, 6, 7]


def test_tvd_against_an_exact_distribution():
    states = np.array([[0, 0], [1, 0], [1, 1]])
    probs = np.array([0.5, 0.25, 0.25])
    samples = as_dict(vectors([((0, 0), 2), ((1, 0), 1), ((1, 1), 1)], NAMES), NAMES)
    assert pairwise.tvd_exact(samples, states, probs) == pytest.approx(0.0)
    skewed = as_dict(vectors([((0, 0), 1), ((0, 1), 1)], NAMES), NAMES)
    assert pairwise.tvd_exact(skewed, states, probs) == pytest.approx(0.5)


def test_crosstab_report_contents(tmp_path):
    names = ["Male", "Young", "Bald"]
    data = pd.DataFrame(vectors([((1, 0, 1), 1), ((0, 1, 0), 3)], names), columns=names)
    samples = as_dict(vectors([((1, 0, 1), 2), ((0, 1, 0), 2)], names), names)
    path = tmp_path / "ctrl" / "70_glabel_crosstab.txt"
    report = pairwise.crosstab(samples, data, step=70, path=path)
    text = path.read_text()
    assert text == report
    assert "Step: 70" in text
    assert "TVD: 0.250000" in text
    assert "TVD seen-only (reference's calc_tvd): 0.250000" in text
    male_line = next(line for line in text.splitlines() if line.strip().startswith("Male "))
    assert male_line.split()[1:] == ["0.5000", "0.2500", "+0.2500"]
    for a, b in (("Male", "Young"), ("Male", "Bald"), ("Young", "Bald")):
        assert f"{a} (rows) x {b} (columns)" in text
    # Male x Young: model P(1,0) = 0.5, data P(1,0) = 0.25
    block = text.split("Male (rows) x Young (columns)")[1].splitlines()
    assert block[3].split() == ["0", "0.0000", "0.5000", "0.0000", "0.7500"]
    row1 = block[4].split()
    assert row1 == ["1", "0.5000", "0.0000", "0.2500", "0.0000"]
    # the same report from a histogram of the samples' codes (bit i = names[i]): as
    # (states, counts), or one count per code
    assert pairwise.crosstab_of_counts((np.array([5, 2]), np.array([2, 2])), data, names,
                                       step=70) == report
    assert pairwise.crosstab_of_counts(np.array([0, 0, 2, 0, 0, 2, 0, 0]), data, names,
                                       step=70) == report
