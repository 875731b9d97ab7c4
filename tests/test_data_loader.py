"""Attribute files, dataset folders and the two tf.data pipelines."""

import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import data_loader as dl
from errors import UserError

NAMES = ["Bald", "Male", "Young"]


def write_txt(path, rows, names=NAMES, count=None):
    lines = [str(len(rows) if count is None else count), " ".join(names)]
    lines += [" ".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def table(n, names=NAMES, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2, (n, len(names))).astype(np.int8)
    index = pd.Index([f"{i + 1:06d}.jpg" for i in range(n)], name="image_id")
    return pd.DataFrame(values, index=index, columns=names)


def write_images(folder, names, make):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        options = {"quality": 100, "subsampling": 0} if name.endswith(".jpg") else {}
        make(i).save(folder / name, **options)


def noise_image(i):
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8))


# -- attribute files --------------------------------------------------------------------


def test_read_txt(tmp_path):
    path = write_txt(tmp_path / "a.txt", [["x.jpg", 1, -1, 1], ["y.jpg", -1, -1, 1]])
    df = dl.read_attributes(path)
    assert list(df.columns) == NAMES
    assert list(df.index) == ["x.jpg", "y.jpg"]
    assert df.loc["x.jpg"].tolist() == [1, 0, 1]
    assert df.loc["y.jpg"].tolist() == [0, 0, 1]
    assert np.issubdtype(df.dtypes.iloc[0], np.integer)


def test_read_txt_with_celeba_spacing(tmp_path):
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text("2\nBald Male Young \n000001.jpg -1  1  1\n000002.jpg  1 -1 -1\n")
    df = dl.read_attributes(path)
    assert df.to_numpy().tolist() == [[0, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize("zero", ["-1", "0"])
def test_read_csv(tmp_path, zero):
    path = tmp_path / "list_attr_celeba.csv"
    path.write_text(f"image_id,Bald,Male,Young\nx.jpg,1,{zero},1\ny.jpg,{zero},{zero},1\n")
    df = dl.read_attributes(path)
    assert list(df.columns) == NAMES
    assert df.loc["x.jpg"].tolist() == [1, 0, 1]
    assert df.loc["y.jpg"].tolist() == [0, 0, 1]


@pytest.mark.parametrize(
    "bad_row", [["c.jpg", 1, -1], ["c.jpg", 1, -1, 1, 1]], ids=["too_few", "too_many"]
)
def test_wrong_column_count_names_the_line(tmp_path, bad_row):
    rows = [["a.jpg", 1, 1, 1], ["b.jpg", -1, 1, 1], bad_row, ["d.jpg", 1, 1, 1]]
    path = write_txt(tmp_path / "a.txt", rows)
    with pytest.raises(UserError, match=r"line 5: \d fields, expected 4"):
        dl.read_attributes(path)


def test_bad_value_names_line_and_attribute(tmp_path):
    rows = [["a.jpg", 1, 1, 1], ["b.jpg", -1, 1, 1], ["c.jpg", 1, 1, 1], ["d.jpg", 1, 0, 1]]
    with pytest.raises(UserError, match=r"line 6: attribute Male has the value '0'"):
        dl.read_attributes(write_txt(tmp_path / "a.txt", rows))
    rows[0][3] = "yes"
    with pytest.raises(UserError, match=r"line 3: attribute Young has the value 'yes'"):
        dl.read_attributes(write_txt(tmp_path / "a.txt", rows))


def test_bad_csv_value_and_mixed_conventions(tmp_path):
    path = tmp_path / "list_attr_celeba.csv"
    path.write_text("image_id,Bald,Male,Young\nx.jpg,1,2,1\n")
    with pytest.raises(UserError, match="line 2: attribute Male has the value '2'"):
        dl.read_attributes(path)
    path.write_text("image_id,Bald,Male,Young\nx.jpg,1,-1,1\ny.jpg,1,0,1\n")
    with pytest.raises(UserError, match="line 2 has -1, line 3 has 0"):
        dl.read_attributes(path)


def test_duplicate_file_name(tmp_path):
    rows = [["a.jpg", 1, 1, 1], ["b.jpg", -1, 1, 1], ["a.jpg", 1, -1, 1]]
    with pytest.raises(
        UserError, match=r"line 5: the file name a.jpg appears again \(first on line 3\)"
    ):
        dl.read_attributes(write_txt(tmp_path / "a.txt", rows))


def test_count_mismatch_warns_and_uses_rows(tmp_path, caplog):
    rows = [["a.jpg", 1, 1, 1], ["b.jpg", -1, 1, 1]]
    with caplog.at_level(logging.WARNING):
        df = dl.read_attributes(write_txt(tmp_path / "a.txt", rows, count=5))
    assert len(df) == 2
    assert "says 5 images but 2 rows" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        dl.read_attributes(write_txt(tmp_path / "b.txt", rows))
    assert caplog.text == ""


def test_missing_attribute_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        dl.read_attributes(tmp_path / "nope.txt")


def test_find_attribute_file(tmp_path):
    with pytest.raises(UserError, match="list_attr_celeba.txt or list_attr_celeba.csv"):
        dl.find_attribute_file(tmp_path)
    (tmp_path / "Anno").mkdir()
    (tmp_path / "Anno" / "list_attr_celeba.csv").write_text("image_id,A\n")
    assert dl.find_attribute_file(tmp_path) == tmp_path / "Anno" / "list_attr_celeba.csv"
    (tmp_path / "list_attr_celeba.txt").write_text("0\nA\n")
    assert dl.find_attribute_file(tmp_path) == tmp_path / "list_attr_celeba.txt"


def test_check_labels_lists_missing_and_available():
    dl.check_labels(table(3), ["Male", "Bald"])
    with pytest.raises(UserError) as err:
        dl.check_labels(table(3), ["Male", "male_beard", "Smiling"])
    text = str(err.value)
    assert "male_beard, Smiling" in text
    assert "Available: Bald, Male, Young" in text


# -- dataset folders ---------------------------------------------------------------------


def test_resolve_missing_celeba_explains_preparation(tmp_path):
    with pytest.raises(UserError) as err:
        dl.resolve_dataset_dir(tmp_path, "celebA")
    assert "python download.py --source" in str(err.value)
    assert "img_align_celeba.zip" in str(err.value)
    with pytest.raises(UserError, match="does not exist"):
        dl.resolve_dataset_dir(tmp_path, "myfaces")
    (tmp_path / "celebA").mkdir()
    with pytest.raises(UserError, match="No attribute file"):
        dl.resolve_dataset_dir(tmp_path, "celebA")


def test_resolve_renders_toyfaces_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(dl, "TOYFACES_DEFAULT_N", 12)
    with caplog.at_level(logging.INFO):
        folder = dl.resolve_dataset_dir(tmp_path, "toyfaces")
    assert folder == tmp_path / "toyfaces"
    assert "rendering the toy faces" in caplog.text
    df = dl.read_attributes(dl.find_attribute_file(folder))
    assert len(df) == 12
    dl.check_images(folder, df)
    stamp = (folder / "list_attr_celeba.txt").stat().st_mtime_ns
    dl.resolve_dataset_dir(tmp_path, "toyfaces")
    assert (folder / "list_attr_celeba.txt").stat().st_mtime_ns == stamp


def test_check_images_reports_missing_files(tmp_path):
    df = table(5)
    with pytest.raises(UserError, match="does not exist"):
        dl.check_images(tmp_path, df)
    write_images(tmp_path / "images", df.index[[0, 1, 3]], noise_image)
    with pytest.raises(UserError, match=r"2 of the 5 images .* \(for example 000003.jpg\)"):
        dl.check_images(tmp_path, df)
    write_images(tmp_path / "images", df.index[[2, 4]], noise_image)
    dl.check_images(tmp_path, df)


# -- labels pipeline ---------------------------------------------------------------------


def test_label_dataset_needs_no_images_and_keeps_column_order():
    df = table(40)
    df["Bald"], df["Young"] = 1, 0
    ds = dl.label_dataset(df, ["Young", "Bald"], batch_size=8, seed=0)
    for batch in ds.take(12):  # more than one epoch
        assert batch.shape == (8, 2) and batch.dtype.name == "float32"
        assert (batch.numpy()[:, 0] == 0).all() and (batch.numpy()[:, 1] == 1).all()


def test_label_dataset_shuffles_each_epoch_deterministically():
    # 16 distinct rows: each epoch of 4 batches of 4 holds every row once
    codes = np.arange(16)
    bits = ((codes[:, None] >> np.arange(4)) & 1).astype(np.int8)
    df = pd.DataFrame(bits, columns=list("ABCD"))

    def epochs(seed, shuffle=True):
        batches = list(dl.label_dataset(df, list("ABCD"), 4, seed=seed, shuffle=shuffle).take(8))
        rows = np.concatenate([b.numpy() for b in batches]).astype(int) @ (1 << np.arange(4))
        return rows[:16], rows[16:]

    first, second = epochs(3)
    assert sorted(first) == sorted(second) == list(range(16))
    assert list(first) != list(range(16)) and list(first) != list(second)
    again = epochs(3)
    assert list(again[0]) == list(first) and list(again[1]) == list(second)
    assert list(epochs(4)[0]) != list(first)
    assert list(epochs(3, shuffle=False)[0]) == list(range(16))


def test_label_dataset_with_fewer_rows_than_a_batch():
    batch = next(iter(dl.label_dataset(table(3), NAMES, batch_size=10, seed=1)))
    assert batch.shape == (10, 3)


def test_label_dataset_rejects_missing_label():
    with pytest.raises(UserError, match="Smiling"):
        dl.label_dataset(table(4), ["Smiling"], 2)


# -- image pipeline ----------------------------------------------------------------------


def framed_image(i, outer=(255, 0, 0), inner=(0, 0, 255)):
    """178x218 image: the centred 108x108 crop window in ``inner``, the rest ``outer``."""
    arr = np.empty((218, 178, 3), dtype=np.uint8)
    arr[:] = outer
    arr[55:163, 35:143] = inner
    return Image.fromarray(arr)


def half_image(i):
    """Dark left half, bright right half (inside the crop window too)."""
    arr = np.zeros((218, 178, 3), dtype=np.uint8)
    arr[:, 89:] = 240
    return Image.fromarray(arr)


def make_dataset(tmp_path, n, make, suffix=".png"):
    df = table(n)
    df.index = pd.Index([name.replace(".jpg", suffix) for name in df.index], name="image_id")
    write_images(tmp_path / "images", df.index, make)
    return df


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_crop_removes_the_outside(tmp_path, suffix):
    df = make_dataset(tmp_path, 4, framed_image, suffix)
    tol = 1 if suffix == ".png" else 12
    images, labels = next(iter(dl.image_dataset(tmp_path, df, NAMES, 4, scale_size=32, seed=0)))
    assert images.shape == (4, 32, 32, 3) and labels.shape == (4, 3)
    images = images.numpy()
    assert np.abs(images - np.array([0, 0, 255])).max() <= tol
    full, _ = next(iter(dl.image_dataset(tmp_path, df, NAMES, 4, scale_size=32, is_crop=False)))
    assert (full.numpy()[:, 0, 0, 0] > 200).all()  # the red border survives without crop


def test_jpeg_window_decode_equals_full_decode_then_crop(tmp_path):
    import tensorflow as tf

    noise_image(3).save(tmp_path / "x.jpg", quality=90)
    data = tf.io.read_file(str(tmp_path / "x.jpg"))
    windowed = dl._decode(data, is_crop=True).numpy()
    full = tf.io.decode_jpeg(data, channels=3).numpy()
    assert windowed.shape == (108, 108, 3)
    np.testing.assert_array_equal(windowed, full[55:163, 35:143])


def test_crop_is_clipped_to_small_images(tmp_path):
    df = make_dataset(tmp_path, 2, lambda i: Image.new("RGB", (60, 80), (10, 200, 10)))
    images, _ = next(iter(dl.image_dataset(tmp_path, df, NAMES, 2, scale_size=16)))
    assert images.shape == (2, 16, 16, 3)
    assert np.abs(images.numpy() - [10, 200, 10]).max() <= 1


def test_shapes_range_labels_and_grayscale(tmp_path):
    df = make_dataset(tmp_path, 6, noise_image, ".jpg")
    ds = dl.image_dataset(tmp_path, df, ["Young", "Bald"], 3, seed=1, shuffle=False, flip=False)
    for images, labels in ds.take(4):
        assert labels.shape == (3, 2)
        assert images.shape == (3, 64, 64, 3) and images.dtype.name == "float32"
        assert images.numpy().min() >= 0 and images.numpy().max() <= 255
        assert images.numpy().max() > 100
    first = [labels.numpy() for _, labels in ds.take(2)]
    np.testing.assert_array_equal(np.concatenate(first), df[["Young", "Bald"]].to_numpy())
    gray, _ = next(iter(dl.image_dataset(tmp_path, df, NAMES, 2, grayscale=True)))
    assert gray.shape == (2, 64, 64, 1)


def test_grayscale_and_rgba_sources_decode_to_rgb(tmp_path):
    makers = [
        lambda i: Image.new("L", (178, 218), 120),
        lambda i: Image.new("RGBA", (178, 218), (30, 60, 90, 128)),
    ]
    df = table(2)
    df.index = pd.Index(["g.jpg", "a.png"], name="image_id")
    (tmp_path / "images").mkdir()
    for name, make in zip(df.index, makers, strict=True):
        make(0).save(tmp_path / "images" / name)
    images, _ = next(iter(dl.image_dataset(tmp_path, df, NAMES, 2, shuffle=False, flip=False)))
    assert images.shape == (2, 64, 64, 3)
    assert np.abs(images.numpy()[0] - 120).max() <= 2
    assert np.abs(images.numpy()[1] - [30, 60, 90]).max() <= 1


@pytest.mark.parametrize("method", ["AREA", "BILINEAR", "BICUBIC", "NEAREST_NEIGHBOR", "area"])
def test_resize_methods(tmp_path, method):
    df = make_dataset(tmp_path, 2, noise_image, ".png")
    images, _ = next(
        iter(dl.image_dataset(tmp_path, df, NAMES, 2, scale_size=24, resize_method=method))
    )
    assert images.shape == (2, 24, 24, 3)
    assert images.numpy().min() >= 0 and images.numpy().max() <= 255


def test_resize_methods_differ(tmp_path):
    df = make_dataset(tmp_path, 2, noise_image, ".png")

    def first(method):
        ds = dl.image_dataset(tmp_path, df, NAMES, 2, scale_size=24, resize_method=method, seed=0)
        return next(iter(ds))[0].numpy()

    assert not np.allclose(first("AREA"), first("NEAREST_NEIGHBOR"))
    # area averaging of uniform noise is much smoother than picking single pixels
    assert first("AREA").std() < first("NEAREST_NEIGHBOR").std() / 2


def test_unknown_resize_method(tmp_path):
    with pytest.raises(UserError, match="LANCZOS.*AREA, BILINEAR, BICUBIC, NEAREST_NEIGHBOR"):
        dl.image_dataset(tmp_path, table(2), NAMES, 2, resize_method="LANCZOS")


def test_flip_mirrors_some_images_reproducibly(tmp_path):
    df = make_dataset(tmp_path, 16, half_image)

    def left_dark(flip, seed=5):
        ds = dl.image_dataset(tmp_path, df, NAMES, 16, scale_size=16, seed=seed, flip=flip)
        images = next(iter(ds))[0].numpy()
        return images[:, :, :8].mean(axis=(1, 2, 3)) < images[:, :, 8:].mean(axis=(1, 2, 3))

    assert left_dark(False).all()
    flipped = left_dark(True)
    assert 0 < (~flipped).sum() < 16
    np.testing.assert_array_equal(left_dark(True), flipped)


def test_order_is_fixed_by_the_seed(tmp_path):
    df = make_dataset(tmp_path, 12, noise_image, ".jpg")

    def batches(seed):
        ds = dl.image_dataset(tmp_path, df, NAMES, 4, scale_size=16, seed=seed)
        return [(x.numpy(), y.numpy()) for x, y in ds.take(5)]  # crosses an epoch

    a, b, c = batches(7), batches(7), batches(8)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))


def test_corrupt_image_is_skipped_with_one_warning(tmp_path, caplog):
    df = make_dataset(tmp_path, 8, noise_image, ".jpg")
    bad = tmp_path / "images" / df.index[3]
    bad.write_bytes(bad.read_bytes()[:300])  # truncated JPEG
    with caplog.at_level(logging.WARNING):
        ds = dl.image_dataset(tmp_path, df, NAMES, 7, scale_size=16, seed=0, repeat=False)
        batches = list(ds)
    assert len(batches) == 1 and batches[0][0].shape == (7, 16, 16, 3)
    assert caplog.text.count("Skipped image") == 1
    assert df.index[3] in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ds = dl.image_dataset(tmp_path, df, NAMES, 4, scale_size=16, seed=0)
        batches = list(ds.take(6))  # three epochs: the file is met three times
    assert len(batches) == 6
    assert caplog.text.count("Skipped image") == 1 and df.index[3] in caplog.text


def test_missing_image_during_training_is_skipped_and_named(tmp_path, caplog):
    df = make_dataset(tmp_path, 5, noise_image, ".png")
    (tmp_path / "images" / df.index[4]).unlink()
    with caplog.at_level(logging.WARNING):
        batches = list(
            dl.image_dataset(tmp_path, df, NAMES, 2, scale_size=8, shuffle=False, repeat=False)
        )
    assert len(batches) == 2
    assert df.index[4] in caplog.text  # the last file: reported through the sentinel


def test_image_dataset_rejects_missing_label(tmp_path):
    with pytest.raises(UserError, match="Smiling"):
        dl.image_dataset(tmp_path, table(2), ["Smiling"], 2)


@pytest.mark.parametrize("repeat", [True, False])
def test_all_images_unreadable_stops_the_pipeline_with_a_clear_error(tmp_path, repeat, caplog):
    import tensorflow as tf

    df = make_dataset(tmp_path, 30, noise_image, ".jpg")
    for name in df.index:
        path = tmp_path / "images" / name
        path.write_bytes(path.read_bytes()[:200])  # truncated JPEGs
    ds = dl.image_dataset(tmp_path, df, NAMES, 4, scale_size=8, seed=0, repeat=repeat)
    with caplog.at_level(logging.WARNING), pytest.raises(tf.errors.InvalidArgumentError) as info:
        next(iter(ds))
    error = dl.unreadable_data_error(info.value)
    assert error is not None and "None of the 30 images" in str(error)
    assert str(tmp_path / "images") in str(error)
    assert caplog.text.count("Skipped image") == dl.MAX_NAMED_SKIPS  # not one per file
    assert dl.unreadable_data_error(ValueError("something else")) is None


def test_a_few_readable_images_are_enough(tmp_path):
    df = make_dataset(tmp_path, 12, noise_image, ".png")
    for name in df.index[1:]:
        (tmp_path / "images" / name).write_bytes(b"not an image")
    ds = dl.image_dataset(tmp_path, df, NAMES, 3, scale_size=8, seed=0)
    images, _ = next(iter(ds))  # the one good image, met in three epochs
    assert images.shape == (3, 8, 8, 3)


def test_two_processes_render_the_toy_faces_once(tmp_path):
    """Two runs needing the toy faces at once: one renders, the other waits and reuses."""
    import subprocess
    import sys
    import time

    import toy_faces

    out = tmp_path / "toyfaces"
    code = ("import logging, sys, toy_faces; logging.basicConfig(level=logging.INFO); "
            f"print(toy_faces.ensure_dataset({str(out)!r}, n=150, workers=1, progress=False))")
    logs = [tmp_path / f"log{i}.txt" for i in range(2)]
    with toy_faces._dataset_lock(out):  # hold the lock until both wait for it, then race
        procs = [subprocess.Popen([sys.executable, "-c", code], cwd=dl.Path(__file__).parents[1],
                                  stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
                 for log in logs]
        deadline = time.monotonic() + 120
        while not all("waiting for another process" in log.read_text() for log in logs):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.1)
    results = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert sorted(results) == ["False", "True"]
    for log in logs:
        log.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toyfaces"]  # no lock file left
    assert len(list((out / "images").iterdir())) == 150
    assert not toy_faces.ensure_dataset(out, n=150)  # complete: nothing to do


# -- --rare_label_rate ------------------------------------------------------------------


def test_rare_label_weights_by_hand():
    # Bald: 1 in 20 rows (rarer value 1); Male: 3 in 4 rows (rarer value 0); Young: half
    n = 20
    t = np.zeros((n, 3))
    t[0, 0] = 1
    t[:15, 1] = 1
    t[::2, 2] = 1
    w = dl.rare_label_weights(t, 0.2)
    np.testing.assert_allclose(w[0], [1.0, 0.2 * 0.95 / (0.05 * 0.8)])   # 4.75
    np.testing.assert_allclose(w[1], [1.0, 1.0])  # 0.25 is not rarer than 0.2
    np.testing.assert_allclose(w[2], [1.0, 1.0])
    w = dl.rare_label_weights(t, 0.3)
    np.testing.assert_allclose(w[1], [0.3 * 0.75 / (0.25 * 0.7), 1.0])  # Male=0 is rare
    np.testing.assert_array_equal(dl.rare_label_weights(t, 0.0), np.ones((3, 2)))
    with pytest.raises(UserError, match="rare_label_rate"):
        dl.rare_label_weights(t, 0.7)
    repeats = dl.row_repeats(t, dl.rare_label_weights(t, 0.2)).numpy()
    assert repeats[0] == 5 and np.all(repeats[1:] == 1)  # round(4.75)
    # a row holding two rare values takes the larger weight, not the product
    both = dl.row_repeats([[1, 0, 0]], [[1, 3], [4, 1], [1, 1]]).numpy()
    assert both.tolist() == [4]


def test_rare_pair_weights_by_hand():
    # labels A, B: (1, 0) in 2 of 40 rows, (1, 1) in 4, (0, 1) in 14, (0, 0) in 20
    t = np.zeros((40, 2))
    t[:6, 0] = 1
    t[2:20, 1] = 1
    w = dl.rare_pair_weights(t, 0.2, 0.1)
    assert w.shape == (2, 2, 2, 2)
    np.testing.assert_allclose(w[0, 1, 0, 1], 0.2 * 0.85 / (0.15 * 0.8))  # A=1 alone: 6/40
    np.testing.assert_allclose(w[1, 0, 1, 0], 1.0)   # B=0 (20/40) is not rare
    np.testing.assert_allclose(w[0, 1, 1, 0], 0.1 * 0.95 / (0.05 * 0.9))  # the pair: 2/40
    np.testing.assert_allclose(w[1, 0, 0, 1], w[0, 1, 1, 0])  # symmetric
    np.testing.assert_allclose(w[0, 1, 1, 1], 1.0)   # 4/40 = 0.1 is not below 0.1
    np.testing.assert_allclose(w[0, 0, 1, 1], 1.0)   # 14/40
    np.testing.assert_allclose(dl.rare_pair_weights(t, 0.2, 0.0)[0, 1, 1, 0], 1.0)  # off
    with pytest.raises(UserError, match="rare_pair_rate"):
        dl.rare_pair_weights(t, 0.2, 0.6)
    # each row takes its largest weight: the rare pair's rows 2.11 -> 2, A=1's others 1.42 -> 1
    repeats = dl.row_repeats(t, w).numpy()
    assert repeats[:2].tolist() == [2, 2] and np.all(repeats[2:] == 1)
    # the [n, 2, n, 2] form holding only single weights agrees with the [n, 2] form
    single = dl.rare_label_weights(t, 0.3)
    np.testing.assert_array_equal(dl.row_repeats(t, dl.rare_pair_weights(t, 0.3, 0.0)).numpy(),
                                  dl.row_repeats(t, single).numpy())


def test_repeated_rows_fill_their_share_of_each_epoch(tmp_path):
    def solid(i):  # row i is the grey level 40 i, whatever the crop, resize or flip
        return Image.fromarray(np.full((218, 178, 3), 40 * i, np.uint8))

    df = make_dataset(tmp_path, 6, solid)
    repeats = np.array([1, 1, 5, 1, 1, 1])  # row 2 five times: 5 of the 10 places of an epoch
    ds = dl.image_dataset(tmp_path, df, NAMES, 5, scale_size=8, seed=3, repeats=repeats)
    rows = []
    for images, labels in ds.take(4):  # two epochs of 10 positions
        for image, label in zip(images.numpy(), labels.numpy(), strict=True):
            row = int(round(image.mean() / 40))
            np.testing.assert_array_equal(label, df.iloc[row].to_numpy())
            rows.append(row)
    for epoch in (rows[:10], rows[10:]):
        assert sorted(epoch) == [0, 1, 2, 2, 2, 2, 2, 3, 4, 5]
    assert rows[:10] != rows[10:]  # each epoch its own order
