"""download.py: preparing data/celebA from local archives, folders and attribute files."""

import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import data_loader
import download

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["Bald", "Male", "Young"]


def jpeg_bytes(i):
    rng = np.random.default_rng(i)
    image = Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8))
    buffer = BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def attribute_txt(n):
    lines = [str(n), " ".join(NAMES)]
    lines += [f"{i + 1:06d}.jpg " + " ".join(("1", "-1", " 1")[: len(NAMES)]) for i in range(n)]
    return "\n".join(lines) + "\n"


def make_zip(path, n, with_attributes=False):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("img_align_celeba/", "")
        for i in range(n):
            archive.writestr(f"img_align_celeba/{i + 1:06d}.jpg", jpeg_bytes(i))
        if with_attributes:
            archive.writestr("list_attr_celeba.csv", attribute_csv(n))
    return path


def attribute_csv(n):
    rows = ["image_id," + ",".join(NAMES)]
    rows += [f"{i + 1:06d}.jpg,1,0,{i % 2}" for i in range(n)]
    return "\n".join(rows) + "\n"


def test_prepares_from_zip_and_txt(tmp_path):
    archive = make_zip(tmp_path / "img_align_celeba.zip", 6)
    attributes = tmp_path / "list_attr_celeba.txt"
    attributes.write_text(attribute_txt(6))
    data = tmp_path / "data"
    argv = ["--source", str(archive), "--source", str(attributes), "--data_dir", str(data)]
    assert download.main(argv) == 0
    target = data / "celebA"
    assert sorted(p.name for p in (target / "images").iterdir())[:2] == ["000001.jpg", "000002.jpg"]
    assert (target / "images" / "000004.jpg").read_bytes() == jpeg_bytes(3)
    table = data_loader.read_attributes(target / "list_attr_celeba.txt")
    assert table.shape == (6, 3) and table.iloc[0].tolist() == [1, 0, 1]
    data_loader.check_images(target, table)
    assert sorted(p.name for p in data.iterdir()) == ["celebA"]  # no temporary leftovers
    assert download.main(argv) == 0  # already prepared: nothing to do


def test_prepares_from_folder_and_zip_holding_a_csv(tmp_path):
    folder = tmp_path / "extracted" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i in range(4):
        (folder / f"{i + 1:06d}.jpg").write_bytes(jpeg_bytes(i))
    (tmp_path / "extracted" / "list_attr_celeba.csv").write_text(attribute_csv(4))
    data = tmp_path / "data"
    assert download.main(["--source", str(tmp_path / "extracted"), "--data_dir", str(data)]) == 0
    text = (data / "celebA" / "list_attr_celeba.txt").read_text().splitlines()
    assert text[0] == "4" and text[1].split() == NAMES
    assert text[3].split() == ["000002.jpg", "1", "-1", "1"]
    # a zip holding both images and the csv is enough on its own
    archive = make_zip(tmp_path / "all.zip", 3, with_attributes=True)
    data2 = tmp_path / "data2"
    assert download.main(["--source", str(archive), "--data_dir", str(data2)]) == 0
    table = data_loader.read_attributes(data2 / "celebA" / "list_attr_celeba.txt")
    assert table["Young"].tolist() == [0, 1, 0]


def test_finds_files_in_data_dir_without_source(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    make_zip(data / "img_align_celeba.zip", 2)
    (data / "list_attr_celeba.txt").write_text(attribute_txt(2))
    monkeypatch.chdir(tmp_path)
    assert download.main(["--data_dir", "data"]) == 0
    assert len(list((data / "celebA" / "images").iterdir())) == 2


def test_images_missing_from_sources_leave_nothing(tmp_path, capsys):
    archive = make_zip(tmp_path / "img_align_celeba.zip", 3)
    attributes = tmp_path / "list_attr_celeba.txt"
    attributes.write_text(attribute_txt(5))
    data = tmp_path / "data"
    argv = ["--source", str(archive), "--source", str(attributes), "--data_dir", str(data)]
    assert download.main(argv) == 2
    assert "2 of the 5 images" in capsys.readouterr().err
    assert list(data.iterdir()) == []


def test_bad_source_is_explained(tmp_path, capsys):
    assert download.main(["--source", str(tmp_path / "nothing.zip")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_nothing_found_prints_instructions_and_fails(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "download.py"), "--data_dir", str(tmp_path / "data")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    for words in ("img_align_celeba.zip", "list_attr_celeba.txt", "CelebA", "--source"):
        assert words in result.stderr
    assert "does not download" in result.stderr
    assert not (tmp_path / "data" / "celebA").exists()


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        download.main(["--help"])
    assert exit_info.value.code == 0
    assert "--source" in capsys.readouterr().out
