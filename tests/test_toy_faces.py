"""The toy faces: the causal model's exact probabilities, rendering, files, CLI."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import toy_faces
from toy_faces import NODES, ToyFacesSCM, default_scm


@pytest.fixture(scope="module")
def scm():
    return default_scm()


@pytest.fixture(scope="module")
def samples(scm):
    return scm.sample(200_000, seed=123)


# -- the causal model -----------------------------------------------------------------


def test_graph_is_big_causal_graph(scm):
    assert [node for node, _ in scm.graph] == list(NODES)
    assert dict(scm.graph)["Narrow_Eyes"] == ["Male", "Young", "Smiling"]
    assert dict(scm.graph)["Mouth_Slightly_Open"] == ["Young", "Smiling"]


def test_joint_is_a_distribution(scm):
    states, probs = scm.joint()
    assert states.shape == (512, 9) and probs.shape == (512,)
    assert len({tuple(s) for s in states}) == 512
    assert probs.sum() == pytest.approx(1.0)
    _, probs_do = scm.joint(do={"Bald": 1})
    assert probs_do.sum() == pytest.approx(1.0)


def test_tables_are_the_specified_ones(scm):
    assert scm.prob({"Young": 1}) == pytest.approx(0.780)
    assert scm.prob({"Bald": 1}, given={"Male": 1, "Young": 0}) == pytest.approx(0.116)
    assert scm.prob({"Narrow_Eyes": 1}, given={"Male": 1, "Young": 0, "Smiling": 1}) == (
        pytest.approx(0.190)
    )
    assert scm.prob({"Mouth_Slightly_Open": 1}, given={"Young": 0, "Smiling": 1}) == (
        pytest.approx(0.743)
    )


def test_conditioning_and_intervening_differ(scm):
    assert scm.prob({"Male": 1}, given={"Bald": 1}) == pytest.approx(0.94, abs=0.01)
    assert scm.prob({"Male": 1}, do={"Bald": 1}) == pytest.approx(0.422)
    # an intervention changes its descendants only through the intervened node
    assert scm.prob({"Mouth_Slightly_Open": 1}, do={"Smiling": 1}) != pytest.approx(
        scm.prob({"Mouth_Slightly_Open": 1}, do={"Smiling": 0})
    )


def test_every_marginal_matches_samples(scm, samples):
    for node in NODES:
        assert samples[node].mean() == pytest.approx(scm.prob({node: 1}), abs=0.005), node


def test_every_pairwise_marginal_matches_samples(scm, samples):
    for a, b in itertools.combinations(NODES, 2):
        for va, vb in itertools.product((0, 1), repeat=2):
            freq = ((samples[a] == va) & (samples[b] == vb)).mean()
            assert freq == pytest.approx(scm.prob({a: va, b: vb}), abs=0.005), (a, b, va, vb)


def test_conditional_and_interventional_match_samples(scm, samples):
    bald = samples[samples["Bald"] == 1]
    assert bald["Male"].mean() == pytest.approx(scm.prob({"Male": 1}, {"Bald": 1}), abs=0.005)
    done = scm.sample(200_000, do={"Bald": 1}, seed=5)
    assert (done["Bald"] == 1).all()
    assert done["Male"].mean() == pytest.approx(scm.prob({"Male": 1}, do={"Bald": 1}), abs=0.005)


def test_do_keeps_the_individuals(scm):
    a = scm.sample(1000, seed=7)
    b = scm.sample(1000, do={"Smiling": 1}, seed=7)
    # non-descendants of Smiling are unchanged, Smiling is fixed
    for node in ("Young", "Male", "Eyeglasses", "Bald", "Mustache", "Wearing_Lipstick"):
        assert (a[node] == b[node]).all(), node
    assert (b["Smiling"] == 1).all()
    assert not (a["Mouth_Slightly_Open"] == b["Mouth_Slightly_Open"]).all()


def test_sample_is_reproducible(scm):
    pd.testing.assert_frame_equal(scm.sample(100, seed=3), scm.sample(100, seed=3))
    assert not scm.sample(100, seed=3).equals(scm.sample(100, seed=4))


def test_bad_assignments_are_refused(scm):
    with pytest.raises(ValueError, match="unknown node"):
        scm.prob({"Beard": 1})
    with pytest.raises(ValueError, match="0 or 1"):
        scm.sample(3, do={"Bald": 2})
    with pytest.raises(ValueError, match="probability 0"):
        scm.prob({"Male": 1}, given={"Bald": 1}, do={"Bald": 0})


def test_invalid_graphs_are_refused():
    with pytest.raises(ValueError, match="earlier"):
        ToyFacesSCM([("A", ["B"]), ("B", [])], {"A": [0.5, 0.5], "B": [0.5]})
    with pytest.raises(ValueError, match="entries"):
        ToyFacesSCM([("A", []), ("B", ["A"])], {"A": [0.5], "B": [0.5]})


def test_json_round_trip(scm, tmp_path):
    scm.to_json(tmp_path / "scm.json")
    again = ToyFacesSCM.from_json(tmp_path / "scm.json")
    assert again.graph == scm.graph
    for node in NODES:
        np.testing.assert_allclose(again.tables[node], scm.tables[node])
    assert json.loads((tmp_path / "scm.json").read_text())["graph"][3] == [
        "Bald",
        ["Male", "Young"],
    ]


# -- drawing --------------------------------------------------------------------------


def _small(labels, seed=0):
    image = toy_faces.render_face(labels, np.random.default_rng(seed))
    box = (toy_faces.CROP_LEFT, toy_faces.CROP_TOP)
    crop = image.crop((*box, box[0] + 108, box[1] + 108))
    return np.asarray(crop.resize((32, 32), Image.Resampling.BOX), dtype=np.float32)


@pytest.mark.parametrize("node", NODES)
def test_each_attribute_changes_the_small_cropped_face(node):
    """Same individual, one attribute toggled: the 32x32 crop changes visibly."""
    for base in ({n: 0 for n in NODES}, {**{n: 0 for n in NODES}, "Male": 1, "Young": 1}):
        off = _small({**base, node: 0})
        on = _small({**base, node: 1})
        changed = np.abs(on - off).max(axis=2) > 40
        assert changed.sum() >= 8, (node, base, changed.sum())


def test_face_fills_the_crop_window():
    image = np.asarray(
        toy_faces.render_face({n: 0 for n in NODES}, np.random.default_rng(0)), dtype=int
    )
    assert image.shape == (218, 178, 3)
    background = image[2, 2]
    centre = image[55 + 40 : 55 + 70, 35 + 30 : 35 + 78]
    assert (np.abs(centre - background).sum(axis=2) > 30).mean() > 0.9


# -- dataset files --------------------------------------------------------------------


def test_render_dataset_writes_celeba_format(tmp_path):
    import data_loader

    out = toy_faces.render_dataset(tmp_path / "toy", n=40, seed=1, progress=False)
    table = data_loader.read_attributes(out / "list_attr_celeba.txt")
    assert list(table.columns) == list(NODES)
    assert list(table.index[:2]) == ["000001.jpg", "000002.jpg"]
    expected = default_scm().sample(40, seed=1)
    np.testing.assert_array_equal(table.to_numpy(), expected.to_numpy())
    lines = (out / "list_attr_celeba.txt").read_text().splitlines()
    assert lines[0] == "40" and lines[1].split() == list(NODES)
    assert set(lines[2].split()[1:]) <= {"1", "-1"}
    with Image.open(out / "images" / "000040.jpg") as image:
        assert image.size == (178, 218) and image.mode == "RGB" and image.format == "JPEG"
    assert ToyFacesSCM.from_json(out / "scm.json").graph == default_scm().graph
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]  # no leftovers


def test_render_is_reproducible_and_independent_of_workers(tmp_path):
    a = toy_faces.render_dataset(tmp_path / "a", n=250, seed=4, workers=1, progress=False)
    b = toy_faces.render_dataset(tmp_path / "b", n=250, seed=4, workers=2, progress=False)
    c = toy_faces.render_dataset(tmp_path / "c", n=30, seed=5, workers=1, progress=False)
    assert (a / "list_attr_celeba.txt").read_bytes() == (b / "list_attr_celeba.txt").read_bytes()
    for name in ("000001.jpg", "000123.jpg", "000250.jpg"):
        assert (a / "images" / name).read_bytes() == (b / "images" / name).read_bytes()
    assert (a / "images" / "000001.jpg").read_bytes() != (c / "images" / "000001.jpg").read_bytes()


def test_interrupted_render_leaves_nothing(tmp_path, monkeypatch):
    original = toy_faces._render_chunk
    calls = []

    def failing(job):
        calls.append(job)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return original(job)

    monkeypatch.setattr(toy_faces, "_render_chunk", failing)
    with pytest.raises(KeyboardInterrupt):
        toy_faces.render_dataset(tmp_path / "toy", n=150, seed=0, workers=1, progress=False)
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []


def test_existing_dataset_needs_overwrite(tmp_path):
    out = toy_faces.render_dataset(tmp_path / "toy", n=5, seed=0, progress=False)
    with pytest.raises(FileExistsError):
        toy_faces.render_dataset(out, n=5, seed=0, progress=False)
    toy_faces.render_dataset(out, n=6, seed=0, progress=False, overwrite=True)
    assert (out / "list_attr_celeba.txt").read_text().startswith("6\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]


def test_cli_renders_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cli"
    assert toy_faces.main(["--n", "8", "--out", str(out), "--seed", "2", "--workers", "1"]) == 0
    assert len(list((out / "images").iterdir())) == 8
    assert toy_faces.main(["--n", "8", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        toy_faces.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--n", "--out", "--seed", "--grid"):
        assert flag in text


def test_grid(tmp_path):
    path = toy_faces.make_grid(tmp_path / "grid.png")
    with Image.open(path) as image:
        assert image.size[0] > 6 * 64 and image.size[1] > 4 * 64
    assert path.stat().st_size < 200_000


# -- exogenous noise and exact counterfactuals ------------------------------------------

# sha256 (first 16 hex digits) of render_face's pixels for the first six faces of seed 0,
# measured before the hair's draws were made independent of Young: the faces are unchanged
PINNED_FACES = ["b48117e8d6160eea", "df1c07492bc8dd9b", "9ac94ebf6b0ce018",
                "a0e81cfaf9387a5e", "5b92859746958a36", "3d54015929f503d2"]


def _pixels_digest(image):
    import hashlib

    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()[:16]


def test_faces_of_existing_seeds_are_unchanged():
    labels = default_scm().sample(6, seed=0)
    assert labels["Young"].tolist() == [1, 0, 1, 0, 1, 0]  # both hair branches pinned
    digests = [_pixels_digest(toy_faces.render_face(row.to_dict(), toy_faces._image_rng(0, k)))
               for k, row in labels.iterrows()]
    assert digests == PINNED_FACES


def test_nuisance_draws_do_not_depend_on_the_labels():
    """Whatever the labels, render_face leaves the face's stream at the same place."""
    states = []
    for labels in ({n: 0 for n in NODES}, {n: 1 for n in NODES},
                   {**{n: 0 for n in NODES}, "Young": 1}, {**{n: 1 for n in NODES}, "Young": 0}):
        for index in range(50):
            rng = np.random.default_rng([3, index])
            toy_faces.render_face(labels, rng)
            states.append((index, rng.random()))
    assert states[:50] == states[50:100] == states[100:150] == states[150:]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return toy_faces.render_dataset(tmp_path_factory.mktemp("exo") / "toy", n=40, seed=3,
                                    workers=1, progress=False)


def test_the_label_file_matches_the_stored_noise(rendered, scm):
    import data_loader

    exogenous = toy_faces.Exogenous.load(rendered / toy_faces.EXOGENOUS_FILE)
    assert exogenous.nodes == list(NODES) and exogenous.seed == 3
    np.testing.assert_array_equal(exogenous.index, np.arange(40))
    np.testing.assert_array_equal(exogenous.u, scm.draw_noise(40, 3))
    table = data_loader.read_attributes(rendered / "list_attr_celeba.txt")
    np.testing.assert_array_equal(scm.solve(exogenous.u).to_numpy(), table.to_numpy())


def test_the_null_intervention_renders_the_identical_image(rendered):
    import io

    import data_loader

    table = data_loader.read_attributes(rendered / "list_attr_celeba.txt")
    for face in (0, 17, 39):
        cf = toy_faces.counterfactual(rendered, face, {})
        assert cf.labels == {n: int(table.iloc[face][n]) for n in NODES}
        encoded = io.BytesIO()
        cf.image.save(encoded, format="JPEG", quality=toy_faces.JPEG_QUALITY)
        assert encoded.getvalue() == (rendered / "images" / toy_faces.image_name(face)).read_bytes()


@pytest.mark.parametrize("node", NODES)
def test_do_changes_only_the_node_and_its_descendants(rendered, scm, node):
    from types import SimpleNamespace

    from figure_scripts.sample import descendants

    below = set(descendants(SimpleNamespace(graph=scm.graph, label_names=scm.nodes), node))
    changed_below = 0
    for face in range(40):
        before = toy_faces.counterfactual(rendered, face, {})
        for value in (0, 1):
            after = toy_faces.counterfactual(rendered, face, {node: value})
            assert after.labels[node] == value
            for other in NODES:
                if other != node and other not in below:
                    assert after.labels[other] == before.labels[other], (face, node, other)
            changed_below += sum(after.labels[n] != before.labels[n] for n in below)
            a, b = np.asarray(before.image, int), np.asarray(after.image, int)
            # the same individual: background and clothes (outside the head) do not move
            assert (a[:40] == b[:40]).all() and (a[-20:] == b[-20:]).all()
    if node == "Male":
        assert changed_below > 0  # descendants are recomputed, not copied


def test_many_counterfactuals_are_rendered_as_a_set(rendered, tmp_path):
    """render_labels with the faces' nuisance redraws those individuals exactly."""
    exogenous = toy_faces.load_exogenous(rendered)
    rows = [5, 2, 30]
    labels = default_scm().solve(exogenous.u[rows], {"Eyeglasses": 1})
    out = toy_faces.render_labels(tmp_path / "cf", labels, seed=exogenous.seed, nuisance=rows)
    for k, face in enumerate(rows):
        expected = toy_faces.counterfactual(rendered, face, {"Eyeglasses": 1})
        with Image.open(out / "images" / toy_faces.image_name(k)) as image:
            drawn = np.asarray(image, int)
        jpeg = np.asarray(_jpeg(expected.image), int)
        np.testing.assert_array_equal(drawn, jpeg)
    stored = toy_faces.load_exogenous(out)
    assert stored.u is None and stored.index.tolist() == rows
    with pytest.raises(ValueError, match="given, not drawn"):
        toy_faces.counterfactual(stored, 0, {})


def _jpeg(image):
    import io

    encoded = io.BytesIO()
    image.save(encoded, format="JPEG", quality=toy_faces.JPEG_QUALITY)
    return Image.open(io.BytesIO(encoded.getvalue()))


def test_a_set_rendered_before_the_noise_was_stored_recovers_it(tmp_path, scm):
    seed0 = toy_faces.render_dataset(tmp_path / "a", n=12, seed=0, workers=1, progress=False)
    (seed0 / toy_faces.EXOGENOUS_FILE).unlink()
    exogenous = toy_faces.load_exogenous(seed0)
    np.testing.assert_array_equal(exogenous.u, scm.draw_noise(12, 0))
    seed1 = toy_faces.render_dataset(tmp_path / "b", n=12, seed=1, workers=1, progress=False)
    (seed1 / toy_faces.EXOGENOUS_FILE).unlink()
    with pytest.raises(ValueError, match="render it again"):
        toy_faces.load_exogenous(seed1)
    with pytest.raises(ValueError, match="not a row"):
        toy_faces.counterfactual(seed0, 12, {})
