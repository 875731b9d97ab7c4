"""Prepare the real CelebA dataset from files you downloaded by hand.

CelebA's files are served from Google Drive behind a confirmation page, and the link the
reference code used is dead, so this script never touches the network: it arranges local
files into the layout the loaders read::

    data/celebA/images/000001.jpg ...
    data/celebA/list_attr_celeba.txt

Sources (``--source``, repeatable) may be ``img_align_celeba.zip``, a folder of the
extracted JPEGs (or one containing ``img_align_celeba/``), and ``list_attr_celeba.txt``
or ``list_attr_celeba.csv``; a zip or folder that also holds the attribute file is
enough on its own. Without ``--source`` the current folder and ``--data_dir`` are
searched. The result is assembled in a hidden temporary folder and renamed into place,
so an interrupted run never leaves a dataset that looks complete.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from errors import UserError
from utils import publish_folder

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ATTRIBUTE_FILES = ("list_attr_celeba.txt", "list_attr_celeba.csv")
INSTRUCTIONS = """\
No CelebA files found{where}.

This script does not download anything (CelebA is served through Google Drive pages
that need a browser). Please download by hand, from the official page
"Large-scale CelebFaces Attributes (CelebA) Dataset"
(mmlab.ie.cuhk.edu.hk/projects/CelebA.html, links "Align&Cropped Images" and "Anno"):

    img_align_celeba.zip     (Img/img_align_celeba.zip, about 1.4 GB, 202,599 JPEGs)
    list_attr_celeba.txt     (Anno/list_attr_celeba.txt; the Kaggle mirror's
                              list_attr_celeba.csv works too)

Put both in {data_dir}/ (or the current folder) and run

    python download.py --data_dir {data_dir}

or point at them wherever they are:

    python download.py --source PATH/img_align_celeba.zip --source PATH/list_attr_celeba.txt
"""


class Sources:
    """Where the images and the attribute file come from."""

    def __init__(self) -> None:
        self.zip_path: Path | None = None
        self.zip_members: list[str] = []  # image members of the zip
        self.image_files: list[Path] = []  # images from a folder
        self.attribute_file: Path | None = None
        self.attribute_member: tuple[Path, str] | None = None  # (zip, member)

    @property
    def has_images(self) -> bool:
        return bool(self.zip_members or self.image_files)

    @property
    def has_attributes(self) -> bool:
        return self.attribute_file is not None or self.attribute_member is not None


def _images_in_folder(folder: Path) -> list[Path]:
    for candidate in (folder, folder / "img_align_celeba", folder / "Img" / "img_align_celeba"):
        if candidate.is_dir():
            with os.scandir(candidate) as entries:
                found = sorted(
                    Path(e.path)
                    for e in entries
                    if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)
                )
            if found:
                return found
    return []


def _attribute_in_folder(folder: Path) -> Path | None:
    for candidate in (folder, folder / "Anno"):
        for name in ATTRIBUTE_FILES:
            if (candidate / name).is_file():
                return candidate / name
    return None


def add_source(sources: Sources, path: Path) -> None:
    """Classify one ``--source`` path; ``UserError`` if it is not usable."""
    if not path.exists():
        raise UserError(f"--source {path} does not exist. Give the path of a file you have.")
    if path.is_dir():
        images = _images_in_folder(path)
        attributes = _attribute_in_folder(path)
        if not images and attributes is None:
            raise UserError(
                f"--source {path} is a folder without CelebA images (*.jpg) or "
                f"{' / '.join(ATTRIBUTE_FILES)}. Point at the extracted img_align_celeba "
                "folder or at the files themselves."
            )
        sources.image_files.extend(images)
        sources.attribute_file = sources.attribute_file or attributes
        return
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [m for m in archive.namelist() if not m.endswith("/")]
        members = [m for m in names if m.lower().endswith(IMAGE_SUFFIXES)]
        attributes = [m for m in names if Path(m).name in ATTRIBUTE_FILES]
        if not members and not attributes:
            raise UserError(
                f"--source {path} is a zip without images or an attribute file. Use "
                "img_align_celeba.zip from the CelebA page."
            )
        if members:
            sources.zip_path, sources.zip_members = path, members
        if attributes and not sources.has_attributes:
            sources.attribute_member = (path, attributes[0])
        return
    if path.name.endswith((".txt", ".csv")):
        sources.attribute_file = path
        return
    raise UserError(
        f"--source {path} is neither a zip, a folder of images, nor an attribute file "
        "(.txt/.csv). Give img_align_celeba.zip, its extracted folder, or "
        "list_attr_celeba.txt."
    )


def discover(search: Sequence[Path]) -> list[Path]:
    """Paths in the usual places that look like CelebA files."""
    names = ("img_align_celeba.zip", "img_align_celeba", *ATTRIBUTE_FILES)
    found = []
    for folder in search:
        for name in names:
            for candidate in (folder / name, folder / "Anno" / name, folder / "Img" / name):
                if candidate.exists() and candidate not in found:
                    found.append(candidate)
    return found


def _place(src: Path, dst: Path) -> None:
    """Hard-link when possible (same disk, no extra space), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def prepare(sources: Sources, target: Path, progress: bool = True, force: bool = False) -> Path:
    """Build ``target`` (images/ and list_attr_celeba.txt) from ``sources`` atomically.

    An existing ``target`` is deleted with ``force``, else moved aside to
    ``<target>.old-<time>``."""
    from tqdm import tqdm

    import data_loader
    from attributes import attribute_text

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        images = tmp / "images"
        images.mkdir()
        # the attribute file: validated, written in the CelebA text format
        if sources.attribute_file is not None:
            attribute_src = sources.attribute_file
        else:
            archive, member = sources.attribute_member
            with zipfile.ZipFile(archive) as z, open(tmp / Path(member).name, "wb") as out:
                shutil.copyfileobj(z.open(member), out)
            attribute_src = tmp / Path(member).name
        table = data_loader.read_attributes(attribute_src)
        attribute_out = tmp / "list_attr_celeba.txt"
        if attribute_src.suffix == ".txt":
            if attribute_src.parent != tmp:
                shutil.copyfile(attribute_src, attribute_out)
        else:
            attribute_out.write_text(attribute_text(list(table.columns), table))
            if attribute_src.parent == tmp:
                attribute_src.unlink()
        # the images
        total = len(sources.zip_members) + len(sources.image_files)
        with tqdm(
            total=total, desc="preparing CelebA images", unit="img", disable=not progress
        ) as bar:
            if sources.zip_members:
                with zipfile.ZipFile(sources.zip_path) as archive:
                    for member in sources.zip_members:
                        with (
                            archive.open(member) as src,
                            open(images / Path(member).name, "wb") as dst,
                        ):
                            shutil.copyfileobj(src, dst)
                        bar.update()
            for path in sources.image_files:
                _place(path, images / path.name)
                bar.update()
        try:
            data_loader.check_images(tmp, table)
        except UserError as err:
            raise UserError(
                f"The sources do not hold every image the attribute file lists: {err}"
            ) from None
        aside = publish_folder(tmp, target, remove_old=force)
        if aside is not None:
            print(f"Moved the incomplete {target} aside to {aside}.", file=sys.stderr)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Prepare data/celebA (images/ and list_attr_celeba.txt) from a local "
        "img_align_celeba.zip (or its extracted folder) and list_attr_celeba.txt (or "
        ".csv). Nothing is downloaded: get the files by hand from the CelebA page.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="PATH",
        help="img_align_celeba.zip, a folder of the extracted images, or the attribute "
        "file; repeat for several (default: look in the current folder and --data_dir)",
    )
    parser.add_argument("--data_dir", default="data", help="where datasets live")
    parser.add_argument("--dataset", default="celebA", help="name of the folder to create")
    parser.add_argument(
        "--force", action="store_true", help="rebuild the dataset even if it already exists"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data_dir = Path(args.data_dir)
    target = data_dir / args.dataset
    try:
        if (
            not args.force
            and (target / "list_attr_celeba.txt").is_file()
            and (target / "images").is_dir()
        ):
            print(f"{target} is already prepared; pass --force to rebuild it.")
            return 0
        paths = [Path(p) for p in args.source]
        where = ""
        if not paths:
            paths = discover([Path.cwd(), data_dir])
            where = f" in {Path.cwd()} or {data_dir}"
        sources = Sources()
        for path in paths:
            add_source(sources, path)
        if not sources.has_images or not sources.has_attributes:
            missing = []
            if not sources.has_images:
                missing.append("the images (img_align_celeba.zip or its folder)")
            if not sources.has_attributes:
                missing.append("the attribute file (list_attr_celeba.txt)")
            if paths:
                where = f"{where}; missing {' and '.join(missing)}"
            print(INSTRUCTIONS.format(where=where, data_dir=data_dir), file=sys.stderr)
            return 1
        prepare(sources, target, force=args.force)
    except UserError as err:
        print(err, file=sys.stderr)
        return 2
    print(f"Prepared {target}. Train with --data_dir {data_dir} --dataset {args.dataset}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
