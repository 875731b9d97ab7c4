"""The fidelity report's panel of readers and its distances to the true distributions.

Wilson intervals, the Fréchet distance and k-NN precision/recall on inputs with known
answers; exact conditional draws and rendering of given labels; the panel (two
architectures, one cache folder per reader, agreeing on true faces); and the whole image
part on a generator that draws TRUE faces (near the floor, every target passed), on one
that ignores Bald (the right targets fail), on noise and on a single repeated face.
"""

import io
from functools import partial
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import data_loader
import toy_faces
from figure_scripts import fidelity, frechet, proportions, readers
from figure_scripts.augment import augment
from figure_scripts.classifier import cache_folder, heldout_mask
from figure_scripts.fidelity_targets import FRECHET_FLOOR_FACTOR, evaluate_targets

# the run's labels: every reader reads them well at 16x16 after a short training; the toy
# model's other nodes are not their ancestors, so a renderer can draw them given these
LABELS = ["Young", "Male", "Bald", "Wearing_Lipstick"]
N = 400  # images per set (Fréchet distances of smaller sets are too noisy to judge)


class TrueRenderer:
    """An image model that draws TRUE faces: the toy face of the labels it is given, the
    model's other labels drawn exactly given those, JPEG-encoded as the data set's files
    are and decoded, cropped and resized by the pipeline's own steps; ``force`` overrides
    labels (a model that ignores them)."""

    z_dim, channels = 1, 3

    def __init__(self, size, force=None):
        self.size, self.force = size, dict(force or {})
        self.scm = toy_faces.default_scm()

    def generate(self, labels, z_gen):
        return tf.py_function(self._render, [labels, z_gen], tf.float32)

    def _render(self, labels, z):
        given = pd.DataFrame((labels.numpy() > 0.5).astype(np.int8), columns=LABELS)
        for name, value in self.force.items():
            given[name] = value
        rng = np.random.default_rng(int(abs(float(z.numpy()[0, 0])) * 1e9))
        rows = given.reindex(columns=self.scm.nodes, fill_value=0)
        others = [n for n in self.scm.nodes if n not in LABELS]
        for values, index in given.groupby(LABELS).groups.items():
            drawn = self.scm.sample_conditional(len(index), dict(zip(LABELS, map(int, values),
                                                                     strict=True)),
                                                seed=int(rng.integers(2**31)))
            rows.loc[index, others] = drawn[others].to_numpy()
        seed, faces = int(rng.integers(2**31)), []
        for k, row in enumerate(rows.itertuples(index=False)):
            face = toy_faces.render_face(dict(zip(self.scm.nodes, row, strict=True)),
                                         np.random.default_rng([seed, k]))
            jpeg = io.BytesIO()
            face.save(jpeg, format="JPEG", quality=toy_faces.JPEG_QUALITY)
            image = data_loader._decode(tf.constant(jpeg.getvalue()), is_crop=True)
            faces.append(tf.image.resize(image, [self.size, self.size], method="area"))
        # the pipeline's float16 copies (classifier.load_images), as the true images are
        return tf.cast(tf.cast(tf.clip_by_value(tf.stack(faces), 0.0, 255.0), tf.float16),
                       tf.float32)


def _trainer(toy_panel, model, controller):
    scm = toy_faces.default_scm()
    folder = toy_panel.dataset_dir
    return SimpleNamespace(
        label_names=LABELS, attr=data_loader.read_attributes(folder / "list_attr_celeba.txt"),
        dataset_dir=folder, model_dir="fake", cc=controller(scm, LABELS), model=model,
        graph=scm.graph, config=SimpleNamespace(input_scale_size=toy_panel.size))


@pytest.fixture(scope="module")
def perfect(toy_panel, exact_controller, run_once):
    # the controller draws systematic samples of the exact model: a perfect controller's
    # sets, without the sampling noise of how many rare bald faces each holds
    controller = partial(exact_controller, systematic=True)
    trainer = _trainer(toy_panel, TrueRenderer(toy_panel.size), controller)
    return run_once("perfect", lambda: fidelity.build_report(
        trainer, n=N, label_samples=2000, progress=False, panel=toy_panel.panel))


@pytest.fixture(scope="module")
def no_bald(toy_panel, perfect, exact_controller, run_once):
    controller = partial(exact_controller, systematic=True)
    trainer = _trainer(toy_panel, TrueRenderer(toy_panel.size, force={"Bald": 0}), controller)
    return run_once("no_bald", lambda: fidelity.build_report(
        trainer, n=N, label_samples=2000, progress=False, panel=toy_panel.panel,
        reference=perfect["reference"]))


def _status(result):
    return {t["name"]: t["status"] for t in result["targets"]}


# ----------------------------------------------------------------------------- measures
def test_wilson_intervals_match_the_closed_form():
    low, high = proportions.wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert proportions.wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert proportions.wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    assert all(np.isnan(proportions.wilson_interval(0, 0)))
    p = proportions.share([True] * 90 + [False] * 10)
    assert p["value"] == 0.9 and p["n"] == 100 and p["low"] < 0.9 < p["high"]
    assert proportions.rate(0.9, 100) == pytest.approx(p)  # a rate of n items: the same
    assert proportions.interval_text(p) == "[0.83, 0.94]"


def test_frechet_distance_and_precision_recall_on_known_gaussians():
    rng = np.random.default_rng(0)
    d, n = 4, 20_000
    a, b = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    assert frechet.frechet_distance(a, b) < 0.01
    shifted = b + np.array([3.0, 0, 0, 0])
    assert frechet.frechet_distance(a, shifted) == pytest.approx(9.0, rel=0.02)
    wide = b * 2.0  # covariance 4 I: d (2 - 1)^2
    assert frechet.frechet_distance(a, wide) == pytest.approx(d, rel=0.03)
    assert np.isnan(frechet.frechet_distance(a[:1], b))
    from scipy.linalg import sqrtm

    c_a, c_b = np.cov(a[:50].T), np.cov(wide[:50].T)
    assert frechet.trace_sqrt_product(c_a, c_b) == pytest.approx(
        np.trace(sqrtm(c_a @ c_b)).real, rel=1e-6)

    real, same = rng.normal(size=(500, d)), rng.normal(size=(500, d))
    pr = frechet.precision_recall(real, same)
    assert pr["precision"]["value"] > 0.9 and pr["recall"]["value"] > 0.9
    far = frechet.precision_recall(real, same + 10.0)  # off the manifold: not realistic
    assert far["precision"]["value"] == 0.0
    one = frechet.precision_recall(real, np.repeat(same[:1], 500, axis=0))  # collapse
    assert one["precision"]["value"] == 1.0 and one["recall"]["value"] < 0.05


def test_exact_conditional_draws_and_rendering_given_labels(tmp_path):
    scm = toy_faces.default_scm()
    drawn = scm.sample_conditional(40_000, {"Bald": 1}, seed=0)
    assert (drawn["Bald"] == 1).all()
    assert drawn["Male"].mean() == pytest.approx(scm.prob({"Male": 1}, given={"Bald": 1}),
                                                 abs=0.01)
    both = scm.sample_conditional(20_000, {"Bald": 1, "Male": 0}, seed=1)
    assert (both["Male"] == 0).all() and both["Young"].mean() == pytest.approx(
        scm.prob({"Young": 1}, given={"Bald": 1, "Male": 0}), abs=0.015)
    under_do = scm.sample_conditional(20_000, {"Young": 0}, do={"Bald": 1}, seed=2)
    assert under_do["Male"].mean() == pytest.approx(0.422, abs=0.015)
    never = toy_faces.ToyFacesSCM([("Male", []), ("Bald", ["Male"])],
                                  {"Male": [0.5], "Bald": [0.0, 0.0]})
    with pytest.raises(ValueError, match="probability 0"):
        never.sample_conditional(3, {"Bald": 1})

    labels = drawn.iloc[:5]
    folder = toy_faces.render_labels(tmp_path / "faces", labels, seed=3)
    attr = data_loader.read_attributes(folder / "list_attr_celeba.txt")
    assert (attr.to_numpy() > 0).astype(int).tolist() == labels.to_numpy().tolist()
    assert len(list((folder / "images").glob("*.jpg"))) == 5
    assert not (folder / "scm.json").exists()
    with pytest.raises(FileExistsError):
        toy_faces.render_labels(folder, labels)


def test_augmentation_keeps_the_range_and_changes_most_images():
    images = tf.random.uniform([64, 16, 16, 3], 0, 255, seed=1)
    out = augment(images, seed=0)
    assert out.shape == images.shape
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0
    changed = tf.reduce_mean(tf.abs(out - images), axis=[1, 2, 3]).numpy() > 1.0
    assert 0.8 < changed.mean() < 1.0  # 1/64 of the images are left as they are


# ----------------------------------------------------------------------------- the panel
def test_the_panel_has_two_architectures_cached_one_folder_each(toy_panel):
    panel = toy_panel.panel
    assert len(panel) >= 3 and panel.names == [s.name for s in readers.PANEL]
    assert len({r.architecture for r in panel.readers}) >= 2
    assert len({s.seed for s in panel.specs}) == len(panel)
    for spec, reader in zip(panel.specs, panel.readers, strict=True):
        folder = cache_folder(toy_panel.dataset_dir, toy_panel.size, reader=spec)
        assert (folder / "classifier.json").is_file() and (folder / "weights.weights.h5").is_file()
        assert reader.architecture == spec.architecture == reader.info["architecture"]
        balanced = reader.info["scores"]["balanced"]
        assert all(balanced[name]["balanced_accuracy"] > 0.85 for name in LABELS), spec.name
        bald_women = [g for g in reader.info["subgroups"]["balanced"] if g["subgroup"] ==
                      "Bald=1" and g["cell"] == "Male=0" and g["attribute"] == "Male"][0]
        assert bald_women["n"] > 20 and bald_women["accuracy"] > 0.8
        assert any(g["too_small"] for g in reader.info["subgroups"]["data"])
    again = readers.get_panel(toy_panel.dataset_dir, toy_panel.size, train_if_missing=False)
    images = np.random.default_rng(0).uniform(0, 255, (4, toy_panel.size, toy_panel.size, 3))
    np.testing.assert_allclose(again.read(images).probs, panel.read(images).probs, atol=1e-5)
    # feature spaces of two architectures differ in size; none is cached at 8x8
    assert len({f.shape[1] for f in panel.read(images).features}) == 2
    assert readers.get_panel(toy_panel.dataset_dir, 8, train_if_missing=False) is None


def test_the_readers_agree_on_true_faces(perfect):
    agreement = perfect["agreement"].set_index("label")
    assert (agreement["reference_n"] >= 10 * N).all()  # every reference set, the floor too
    assert (agreement["reference"] >= 0.9).all(), agreement["reference"]
    assert agreement["reference"].mean() >= 0.95
    assert (agreement["reference_low"] <= agreement["reference"]).all()


# ----------------------------------------------------------------------------- the image part
def test_a_generator_of_true_faces_scores_near_the_floor_and_passes_every_target(perfect):
    fr = perfect["frechet"]
    sets = {row["set"]: row for row in fr["sets"]}
    assert set(sets) == {"observational", "do(Male=1)", "Male=1", "do(Bald=1)", "Bald=1",
                         "do(Wearing_Lipstick=1)", "Wearing_Lipstick=1", "Bald=1, Male=0",
                         "Wearing_Lipstick=1, Male=1"}
    assert all(ratio < 2.0 for ratio in sets["observational"]["ratio"].values()), fr
    assert all(row["n_generated"] == N and row["n_reference"] == N for row in sets.values())
    status = _status(perfect)
    assert status and [t for t in perfect["targets"] if t["status"] != "PASS"] == []
    assert all(not t["failed_readers"] for t in perfect["targets"])
    # a PASS is every reader's: the per-reader values are there and each meets the goal
    bald = [t for t in perfect["targets"] if t["name"] == "do(Bald=1): images read as bald"][0]
    assert set(bald["per_reader"]) == set(readers.PANEL[i].name for i in range(len(readers.PANEL)))
    assert min(bald["per_reader"].values()) == bald["min"] >= 0.85
    pairs = {(p["target"], p["node"]): p for p in perfect["pairs"]}
    male = pairs["Male", "Bald"]
    assert male["do_images_low"] < male["do_images"] < male["do_images_high"]
    assert male["do_images"] == pytest.approx(0.422, abs=0.08)
    assert "separate in the right direction" in male["verdict"]
    precision_recall = perfect["precision_recall"]
    assert all(v["generated"]["precision"]["value"] > 0.7 and
               v["generated"]["recall"]["value"] > 0.7 for v in precision_recall.values())


def test_a_generator_that_ignores_bald_fails_the_right_targets(no_bald, perfect):
    reused = no_bald["reference"].readings["observational"].probs  # the same true images
    assert np.array_equal(reused, perfect["reference"].readings["observational"].probs)
    status = _status(no_bald)
    must_fail = {"label consistency, mean over labels", "label consistency, lowest label (Bald)",
                 "do(Bald=1): images read as bald",
                 "Fréchet distance, do(Bald=1) / observational",
                 "Fréchet distance, Bald=1 / observational"}
    assert {name for name in must_fail if status.get(name) != "FAIL"} == set()
    # what Bald does not change passes; the Male sets lose their 4% bald men: either
    assert {name for name, s in status.items() if s != "PASS" and name not in must_fail
            and "Male=1" not in name} == set(), no_bald["targets"]
    for target in no_bald["targets"]:
        if target["name"] in must_fail:  # every reader sees it
            assert len(target["failed_readers"]) == len(readers.PANEL), target
    sets = {row["set"]: row for row in no_bald["frechet"]["sets"]}
    assert min(sets["Bald=1, Male=0"]["ratio"].values()) > 3.0  # no target, but reported
    bald = no_bald["consistency"].set_index("label").loc["Bald"]
    assert bald["balanced_accuracy"] < 0.6 and bald["tpr_high"] < 0.1


def test_noise_and_a_single_repeated_face_fail_the_frechet_target(perfect, toy_panel):
    """The old diversity ratio passed noisy images; the Fréchet distance does not."""
    panel, reference = toy_panel.panel, perfect["reference"]
    scm = toy_faces.default_scm()
    faces = frechet.render_true_images(scm.sample(N, seed=99), toy_panel.size, 3, seed=98)
    noisy = np.clip(faces + np.random.default_rng(0).normal(0, 40, faces.shape), 0, 255)
    single = np.repeat(faces[:1], N, axis=0)
    sets = frechet.distribution_sets(["Young"])  # the observational set only
    for images, far in ((faces, False), (noisy, True), (single, True)):
        generated = {"observational": panel.read(images.astype(np.float32))}
        distances = frechet.distances(panel, sets, generated, reference)
        (target,) = [t for t in evaluate_targets(None, [], distances, pd.DataFrame(
            columns=["node", "value", "label"])) if t["name"].startswith("Fréchet")]
        ratios = distances["sets"][0]["ratio"]
        if far:  # failed, and by the maxpool readers by far (group norm blunts the other)
            assert target["status"] == "FAIL" and len(target["failed_readers"]) >= 2, ratios
            assert sorted(ratios.values())[-2] > 2 * FRECHET_FLOOR_FACTOR, ratios
        else:
            assert target["status"] == "PASS" and max(ratios.values()) < 2.0, ratios
        pr = frechet.observational_precision_recall(panel, generated["observational"],
                                                    reference)
        precision = sorted(v["generated"]["precision"]["value"] for v in pr.values())
        recall = sorted(v["generated"]["recall"]["value"] for v in pr.values())
        if images is faces:  # real faces are realistic and cover the reference
            assert precision[0] > 0.7 and recall[0] > 0.7, pr
        elif images is noisy:  # noise is not realistic: most readers place it off the faces
            assert precision[-2] < 0.3, pr
        else:  # one repeated face covers nothing
            assert recall[-1] < 0.1, pr


def test_without_an_exact_model_do_is_unavailable_and_real_images_are_the_reference(
        toy_panel, tmp_path):
    import shutil

    folder = tmp_path / "photos"  # CelebA-like: no scm.json
    shutil.copytree(toy_panel.dataset_dir / "images", folder / "images")
    attr = data_loader.read_attributes(toy_panel.dataset_dir / "list_attr_celeba.txt")
    sets = frechet.distribution_sets(LABELS)
    reference = frechet.reference_readings(
        toy_panel.panel, sets, dataset_dir=folder, attr=attr, scm=None, n=40, seed=0,
        image_size=toy_panel.size, channels=3)
    held = int(heldout_mask(attr.index).sum())  # crc32 % 10 == 0: about 12 of 120
    assert "held-out real images" in reference.source
    assert len(reference.floor) == len(reference.readings["observational"]) == held // 2
    assert reference.readings["do(Bald=1)"] is None
    assert "unavailable" in reference.notes["do(Bald=1)"]
    assert len(reference.readings["Male=1"]) <= held
    generated = {key: r for key, r in reference.readings.items() if r is not None}
    distances = frechet.distances(toy_panel.panel, sets, generated, reference)
    targets = {t["name"]: t for t in evaluate_targets(None, [], distances, pd.DataFrame(
        columns=["node", "value", "label"]))}
    assert targets["Fréchet distance, do(Bald=1) / observational"]["status"] == "N/A"
    assert targets["Fréchet distance, Bald=1 / observational"]["status"] != "N/A"


def test_frechet_scale_grows_with_the_change(toy_panel, tmp_path):
    from figure_scripts import frechet_scale

    flat = np.full([2, 8, 8, 3], 77.0, np.float32)
    np.testing.assert_allclose(frechet_scale.blurred(flat, 1.0), flat, atol=1e-4)
    result = frechet_scale.measure(toy_panel.panel, toy_faces.default_scm(), toy_panel.size,
                                   N, seed=3)
    for reader in toy_panel.panel.names:
        assert result["floor"][reader] > 0
        assert result["Gaussian blur, sigma 1.0 pixel"][reader] > \
            result["Gaussian blur, sigma 0.5 pixel"][reader], result
        assert result["Gaussian noise, std 25"][reader] > \
            result["Gaussian noise, std 10 (of 255)"][reader], result
    assert min(result["Gaussian noise, std 25"].values()) > 1.5  # far above the floor
    with pytest.raises(frechet_scale.UserError, match="No reader panel is cached"):
        frechet_scale.main(["--dataset_dir", str(tmp_path), "--size", "16"])


def test_frechet_scale_sets_are_ratios_to_the_changed_observational(toy_panel):
    from figure_scripts import frechet, frechet_scale

    change = [("noise 25", "noise", 25.0)]
    ratios = frechet_scale.measure_sets(toy_panel.panel, toy_faces.default_scm(),
                                        toy_panel.size, N, seed=3, changes=change)
    keys = [d.key for d in frechet.distribution_sets(toy_faces.default_scm().nodes)]
    assert set(ratios["noise 25"]) == set(keys) - {frechet.OBSERVATIONAL}
    for row in ratios["noise 25"].values():
        assert set(row) == set(toy_panel.panel.names)
        # the same change on every face: each set is about as far as the observational one
        assert all(0.2 < r < 5.0 for r in row.values()), ratios
