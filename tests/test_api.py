"""api.py: every example of docs/API.md, the fixed individuals, the truth, bad requests."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_runs import tiny_run

import api
from errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DOC_RUN = "logs/toyfaces_1203_101500"  # the run folder the examples name


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory, "dcgan")


@pytest.fixture(scope="module")
def run(run_dir):
    return api.open_run(run_dir)


def doc_examples() -> list[str]:
    text = (ROOT / "docs" / "API.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_every_example_of_the_api_doc_runs(run_dir, tmp_path, monkeypatch, capsys):
    import shutil

    run_dir = shutil.copytree(run_dir, tmp_path / "run")  # the counterfactual caches its encoder
    examples = doc_examples()
    assert len(examples) >= 8
    monkeypatch.chdir(tmp_path)  # the examples' files land here
    namespace = {}
    for i, code in enumerate(examples):
        code = code.replace(DOC_RUN, str(run_dir))
        exec(compile(code, f"docs/API.md example {i + 1}", "exec"), namespace)  # noqa: S102
    for name in ("do_bald.png", "bald_1_0_none.png", "had_they_been_women.png"):
        assert (tmp_path / name).stat().st_size > 200
    out = capsys.readouterr().out
    assert "Nose is not a node" in out and "almost never meets" in out


def test_the_same_seed_gives_the_same_individuals(run):
    a = run.sample(do={"Bald": 1}, n=6, seed=3)
    b = run.sample(do={"Bald": 1}, n=6, seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    c = run.sample(do={"Bald": 0}, n=4, seed=3)  # fewer rows: the first ones, other do
    np.testing.assert_array_equal(a.z_gen[:4], c.z_gen)
    np.testing.assert_array_equal(a.values[:4, :3], c.values[:, :3])  # Young, Male, Eyeglasses
    assert (a.labels.Bald[:4] == 1).all() and (c.labels.Bald == 0).all()
    other = run.sample(do={"Bald": 1}, n=6, seed=4)
    assert not np.array_equal(a.z_gen, other.z_gen)


def test_sample_same_is_sample_with_one_seed(run):
    same = run.sample_same([{"Mustache": 1}, None], n=5, seed=1)
    assert same.interventions == [{"Mustache": 1.0}, {}]
    np.testing.assert_array_equal(same.samples[1].images, run.sample(n=5, seed=1).images)
    assert same.grid().shape == (2 * 18 + 2, 5 * 18 + 2, 3)  # 16 px cells, 2 px padding
    assert list(same.labels.columns[:2]) == ["intervention", "row"] and len(same.labels) == 10
    with pytest.raises(UserError, match="list of do-dictionaries"):
        run.sample_same({"Bald": 1})


def test_probabilities_match_the_controller_and_the_exact_model(run):
    p = run.probabilities(do={"Bald": 1}, draws=20_000, seed=5)
    labels, _ = run.saved.cc.sample(20_000, do_labels={"Bald": 1.0}, seed=5)
    np.testing.assert_allclose(p["model"], (labels.numpy() > 0.5).mean(axis=0))
    scm = run.saved.scm
    assert p.loc["Smiling", "truth"] == pytest.approx(scm.prob({"Smiling": 1}, do={"Bald": 1}))
    assert p.loc["Bald", "model"] == 1.0 and np.isnan(p["data"]).all()  # no data under do
    q = run.probabilities(cond={"Young": 1})
    attr = run.saved.attr
    assert q.loc["Male", "data"] == pytest.approx(attr.loc[attr.Young == 1, "Male"].mean())
    assert q.loc["Young", "model"] == 1.0


def test_without_an_exact_model_the_truth_is_nan(run_dir, monkeypatch):
    other = api.open_run(run_dir)
    monkeypatch.setattr(type(other.saved), "scm", None)  # as on CelebA
    assert np.isnan(other.probabilities()["truth"]).all()
    assert not other.has_truth


def test_a_controller_only_run_has_labels_and_probabilities(tmp_path_factory):
    run = api.open_run(tiny_run(tmp_path_factory, "controller"))
    s = run.sample(do={"Male": 0}, n=3)
    assert s.images is None and (s.labels["Male"] == 0).all()
    assert run.probabilities(do={"Male": 0}).loc["Male", "model"] == 0.0
    with pytest.raises(UserError, match="controller only"):
        s.grid()


@pytest.mark.parametrize("kwargs,message", [
    (dict(do={"Nose": 1}), "Nose is not a node of this run's causal graph"),
    (dict(cond={"Bald": 2}), r"cond\['Bald'\] = 2: give 0 or 1"),
    (dict(do={"Bald": -1}), r"do\['Bald'\] = -1"),
    (dict(do=[("Bald", 1)]), "must be a dictionary"),
    (dict(n=0), "at least 1"),
    (dict(do={"Male": 1}, cond={"Male": 0}), "almost never meets the condition Male=0 under do"),
])
def test_bad_requests_are_user_errors(run, kwargs, message):
    with pytest.raises(UserError, match=message):
        run.sample(**kwargs)


def test_a_rare_condition_of_the_probabilities_is_refused(run):
    with pytest.raises(UserError, match="almost never meets"):
        run.probabilities(do={"Bald": 1}, cond={"Bald": 0})


# ----------------------------------------------------------------------------- counterfactuals
@pytest.fixture(scope="module")
def faces(run):
    """The first 16 faces of the tiny run's data set at its image size (uint8), and their
    labels (indexed by file name)."""
    from PIL import Image

    size = run.saved.image_shape[0]
    attr = run.saved.attr.head(16)
    images = np.stack([np.asarray(Image.open(run.saved.dataset_dir / "images" / name)
                                  .convert("RGB").resize((size, size), Image.BILINEAR))
                       for name in attr.index])
    return images, attr


@pytest.fixture(scope="module")
def writable_run(run_dir, tmp_path_factory):
    """A copy of the tiny run (the shared one is read-only by agreement) whose encoder is
    trained (5 steps) by the first counterfactual and cached for the others."""
    import shutil

    copy = tmp_path_factory.mktemp("cf_run") / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("counterfactual"))
    return api.open_run(copy)


FAST = dict(encoder_steps=5, refine_steps=3, progress=False)


def below(run, node: str) -> tuple[list[str], list[str]]:
    """(the descendants of node, the nodes neither node nor below it)."""
    import causal_graph

    down = causal_graph.descendants(run.graph, node)
    return down, [n for n in run.label_names if n != node and n not in down]


def test_counterfactuals_set_the_do_and_keep_the_non_descendants(writable_run, faces):
    images, attr = faces
    cf = writable_run.counterfactuals(images[:4], {"Male": 0}, labels=attr.head(4), **FAST)
    names = writable_run.label_names
    for x in (cf.faces, cf.reconstructions, cf.images):
        assert x.shape == (4, 16, 16, 3) and x.dtype == np.uint8
    assert cf.z_gen.shape == (4, 4) and np.abs(cf.z_gen).max() <= 1 and len(cf) == 4
    np.testing.assert_array_equal(cf.faces, images[:4])
    assert list(cf.labels.columns) == names and list(cf.labels.index) == list(attr.index[:4])
    np.testing.assert_array_equal(cf.factual_labels.to_numpy(), attr[names].head(4).to_numpy())
    assert (cf.labels["Male"] == 0).all()
    _, kept = below(writable_run, "Male")
    assert kept == ["Young", "Eyeglasses"]
    np.testing.assert_array_equal(cf.labels[kept], attr[kept].head(4))
    assert cf.grid().shape == (3 * 18 + 2, 4 * 18 + 2, 3)
    # the encoder is cached in the run folder (where the command looks) and kept on the Run
    info = writable_run.saved.model_dir / "counterfactual" / "encoder" / "encoder.json"
    assert json.loads(info.read_text())["steps"] == 5
    assert writable_run._encoder(5, False) is writable_run._encoder_cache


def test_only_the_descendants_follow_the_controller_noise(writable_run, faces, monkeypatch):
    """With noise that does not reproduce the faces' labels, the descendants of Male change
    and its non-descendants still keep the faces' labels."""
    import abduction

    images, attr = faces
    cc = writable_run.saved.cc
    noise = np.random.default_rng(5).uniform(-1, 1, [16, len(cc.label_names), cc.n_hidden])
    noise = noise.astype(np.float32)
    monkeypatch.setattr(abduction, "controller_noise", lambda *args, **kwargs: noise)
    down, kept = below(writable_run, "Male")
    redrawn = pd.DataFrame(np.round(cc.sample(noise=noise)[0].numpy()),
                           columns=writable_run.label_names, index=attr.index)
    assert (redrawn[kept] != attr[kept]).any().any()  # recomputing them would change them
    cf = writable_run.counterfactuals(images, {"Male": 0}, labels=attr, **FAST)
    np.testing.assert_array_equal(cf.labels[kept], attr[kept])
    assert (cf.labels["Male"] == 0).all()
    assert (cf.labels[down] != attr[down]).any().any()  # recomputed from the noise


def test_a_counterfactual_that_changes_nothing_is_the_redraw(writable_run, faces):
    images, attr = faces
    cf = writable_run.counterfactuals(images[:4], {}, labels=attr.head(4), **FAST)
    np.testing.assert_array_equal(cf.labels, cf.factual_labels)
    diff = np.abs(cf.images.astype(int) - cf.reconstructions.astype(int))
    assert diff.max() <= 1  # the same labels and noise: the same image (rounding aside)
    assert cf.mse < 0.5 and np.abs(cf.faces.astype(int) - cf.reconstructions).max() > 1
    # do(Male=0) of women is nothing either; do(Male=1) of them changes the images
    women = attr[attr["Male"] == 0].head(4)
    pictures = images[[attr.index.get_loc(name) for name in women.index]]
    same = writable_run.counterfactuals(pictures, {"Male": 0}, labels=women, **FAST)
    np.testing.assert_array_equal(same.labels, women[writable_run.label_names])
    assert np.abs(same.images.astype(int) - same.reconstructions.astype(int)).max() <= 1
    moved = writable_run.counterfactuals(pictures, {"Male": 1}, labels=women, **FAST)
    assert (moved.labels["Male"] == 1).all()
    assert np.abs(moved.reconstructions.astype(int) - same.reconstructions).max() <= 1
    assert np.abs(moved.images.astype(int) - moved.reconstructions.astype(int)).mean() > 1


def test_float_pixels_and_dict_labels_are_read_like_uint8_and_a_frame(writable_run, faces,
                                                                       caplog):
    images, attr = faces
    a = writable_run.counterfactuals(images[:4], {"Bald": 1}, labels=attr.head(4), **FAST)
    b = writable_run.counterfactuals(images[:4].astype(np.float64), {"Bald": 1},
                                     labels={k: v.to_numpy() for k, v in attr.head(4).items()},
                                     **FAST)
    np.testing.assert_array_equal(a.labels.to_numpy(), b.labels.to_numpy())
    assert np.abs(a.images.astype(int) - b.images.astype(int)).max() <= 1
    assert list(b.labels.index) == [0, 1, 2, 3]
    assert "[0, 1]" not in caplog.text
    writable_run.counterfactuals(images[:2] / 255.0, {"Bald": 1}, labels=attr.head(2), **FAST)
    assert "every pixel is in [0, 1]" in caplog.text


def test_counterfactuals_without_labels_read_them_with_the_encoder(writable_run, faces):
    images = faces[0][:4]
    cf = writable_run.counterfactuals(images, {"Bald": 1}, **FAST)
    read = (writable_run._encoder(5, False)(images)[1] > 0).astype(np.int8)
    np.testing.assert_array_equal(cf.factual_labels.to_numpy(), read)
    assert (cf.labels["Bald"] == 1).all()


def test_a_read_only_run_keeps_the_encoder_in_memory(run_dir, tmp_path, faces, caplog,
                                                    monkeypatch):
    import os
    import shutil

    import abduction

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("counterfactual"))
    real = os.access
    monkeypatch.setattr(abduction.os, "access",  # as if the run folder were read-only
                        lambda path, mode: not str(path).startswith(str(copy)) and real(path, mode))
    run = api.open_run(copy)
    for _ in range(2):
        cf = run.counterfactuals(faces[0][:2], {"Bald": 1}, encoder_steps=3, refine_steps=1,
                                 progress=False)
    assert len(cf) == 2 and not (copy / "counterfactual").exists()
    assert caplog.text.count("cannot be written") == 1  # said once; trained once


def test_a_cache_that_cannot_be_written_or_is_too_short_is_trained_again(
        run_dir, tmp_path, faces, caplog, monkeypatch):
    import shutil

    import abduction

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("counterfactual"))
    api.open_run(copy).counterfactuals(faces[0][:2], {}, encoder_steps=2, refine_steps=0,
                                       progress=False)
    info = copy / "counterfactual" / "encoder" / abduction.INFO_FILE
    assert json.loads(info.read_text())["steps"] == 2

    def refuse(self, folder):
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(abduction.Encoder, "save", refuse)
    run = api.open_run(copy)
    run.counterfactuals(faces[0][:2], {}, encoder_steps=3, refine_steps=0, progress=False)
    assert run._encoder_cache.info["steps"] == 3 and "Permission denied" in caplog.text
    assert json.loads(info.read_text())["steps"] == 2


@pytest.mark.parametrize("args, kwargs, message", [
    ((np.zeros([2, 8, 8, 3]), {"Bald": 1}), {}, r"give an array \[k, 16, 16, 3\]"),
    ((np.zeros([16, 16, 3]), {"Bald": 1}), {}, r"got shape \(16, 16, 3\)"),
    ((np.full([1, 16, 16, 3], 300.0), {"Bald": 1}), {}, r"in \[0, 255\]"),
    ((np.zeros([1, 16, 16, 3]), {"Nose": 1}), {}, "Nose is not a node"),
    ((np.zeros([1, 16, 16, 3]), {"Bald": 0.5}), {}, "sets labels to 0 or 1"),
    ((np.zeros([1, 16, 16, 3]), {"Bald": 1}, np.zeros([1, 3])), {}, r"give 0/1 labels \[1 faces"),
    ((np.zeros([1, 16, 16, 3]), {"Bald": 1}, np.full([1, 9], 2)), {}, r"got values \[2.0\]"),
    ((np.zeros([1, 16, 16, 3]), {"Bald": 1}, {"Male": [1]}), {}, "Young, Eyeglasses, Bald"),
    ((np.zeros([1, 16, 16, 3]), {"Bald": 1}), dict(refine_steps=-1), "refine_steps must be"),
])
def test_bad_counterfactual_requests_are_user_errors(run, args, kwargs, message):
    with pytest.raises(UserError, match=message):
        run.counterfactuals(*args, progress=False, **kwargs)
