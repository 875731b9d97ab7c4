"""CelebA-format attribute files read into a 0/1 table (``read_attributes``) and written
from one (``attribute_text``).

A ``list_attr_celeba.txt`` has the image count on line 1, the attribute names on line 2,
then ``file v1 ... vk`` with values +1/-1; a ``list_attr_celeba.csv`` an ``image_id``
column, then one column per attribute, values +1/-1 or 0/1. A malformed file is a
``UserError`` that names its line. The core module below ``data_loader`` (which
re-exports ``read_attributes``), ``toy_faces`` (which writes its data sets' files and
reads them back) and ``download`` (which writes a .csv as a .txt).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from errors import UserError

log = logging.getLogger(__name__)


def read_attributes(path) -> pd.DataFrame:
    """Read a CelebA attribute file (.txt or .csv) into a 0/1 int8 table.

    Rows are indexed by image file name (index name ``image_id``), one column per
    attribute in file order. Raises ``UserError`` naming the line of a malformed row
    (wrong number of fields, a value other than +1/-1 (0/1 also allowed in CSV), a file
    name seen twice); a count line that disagrees with the rows present only warns.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"Attribute file {path} does not exist. Give the path of list_attr_celeba.txt "
            "(or .csv), or prepare the dataset first (see download.py --help)."
        )
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    return _read_txt(path)


def attribute_text(names: Sequence[str], labels: pd.DataFrame) -> str:
    """The CelebA-format attribute file (.txt) of the columns ``names`` of ``labels``
    (0/1) indexed by file name: the count, the names, then +1/-1 as two characters."""
    signs = np.where(labels[list(names)].to_numpy() > 0, " 1", "-1")
    lines = [f"{len(labels)}", " ".join(names)]
    lines += [f"{name} " + " ".join(row) for name, row in zip(labels.index, signs, strict=True)]
    return "\n".join(lines) + "\n"


def _read_txt(path: Path) -> pd.DataFrame:
    with open(path) as f:
        first = f.readline().split()
        second = f.readline().split()
        third = f.readline().split()
    count = None
    if len(first) == 1 and first[0].lstrip("+-").isdigit():
        count, names, skip = int(first[0]), second, 2
        first_data = third
    else:  # no count line: the names come first
        names, skip, first_data = first, 1, second
    if first_data and len(first_data) == len(names) and len(names) > 1:
        names = names[1:]  # the header names the file column too (e.g. "image_id")
    header_line = skip
    if not names:
        raise UserError(
            f"{path}: line {header_line} should list the attribute names but is empty. "
            "Fix the file: line 1 the image count, line 2 the names."
        )
    _check_names(path, names, header_line)
    try:
        raw = _read_table(
            path,
            sep=r"\s+",
            header=None,
            skiprows=skip,
            names=["image_id", *names],
            index_col=False,
            dtype={"image_id": str},
            engine="c",
        )
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError):
        raise UserError(_diagnose(path, names, skip, None, {-1, 1})) from None
    table = _validate(path, raw, names, skip, None, allow_zero=False)
    if count is not None and count != len(table):
        log.warning(
            "%s: line 1 says %d images but %d rows follow; using the %d rows present.",
            path,
            count,
            len(table),
            len(table),
        )
    return table


def _read_csv(path: Path) -> pd.DataFrame:
    with open(path) as f:
        header = [h.strip() for h in f.readline().rstrip("\r\n").split(",")]
    if len(header) < 2:
        raise UserError(
            f"{path}: line 1 should be 'image_id,<attribute names...>' but has "
            f"{len(header)} column(s). Fix the header line."
        )
    names = header[1:]
    _check_names(path, names, 1)
    try:
        raw = _read_table(
            path,
            header=None,
            skiprows=1,
            names=["image_id", *names],
            index_col=False,
            dtype={"image_id": str},
            skipinitialspace=True,
            engine="c",
        )
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError):
        raise UserError(_diagnose(path, names, 1, ",", {-1, 0, 1})) from None
    return _validate(path, raw, names, 1, ",", allow_zero=True)


def _read_table(path: Path, **kwargs) -> pd.DataFrame:
    """pandas.read_csv, with its warning about a row longer than the header (it would
    drop the extra values silently) raised as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        return pd.read_csv(path, **kwargs)


def _check_names(path: Path, names: list[str], line: int) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise UserError(
                f"{path}: line {line} names the attribute {name!r} twice. "
                "Each attribute must have one column; fix the header line."
            )
        seen.add(name)


def _validate(
    path: Path, raw: pd.DataFrame, names: list[str], skip: int, sep, allow_zero: bool
) -> pd.DataFrame:
    """Vectorised checks; on any problem the slow line-by-line diagnosis names it."""
    allowed = {-1, 0, 1} if allow_zero else {-1, 1}
    if len(raw) == 0:
        raise UserError(f"{path} has no data rows. Give a complete attribute file.")
    values_df = raw[names]
    ok = all(pd.api.types.is_integer_dtype(t) for t in values_df.dtypes)
    ok = ok and raw["image_id"].notna().all()
    if ok:
        values = values_df.to_numpy()
        if allow_zero:
            ok = bool(np.isin(values, (-1, 0, 1)).all())
            ok = ok and not ((values == -1).any() and (values == 0).any())
        else:
            ok = bool(((values == 1) | (values == -1)).all())
    ok = ok and not raw["image_id"].duplicated().any()
    if not ok:
        raise UserError(_diagnose(path, names, skip, sep, allowed))
    index = pd.Index(raw["image_id"].to_numpy(), name="image_id")
    return pd.DataFrame((values > 0).astype(np.int8), index=index, columns=list(names))


def _diagnose(path: Path, names: list[str], skip: int, sep, allowed: set[int]) -> str:
    """Find the first malformed line of an attribute file and describe it."""
    expected = len(names) + 1
    seen: dict[str, int] = {}
    first_minus = first_zero = None
    if allowed == {-1, 1}:
        allowed_text = "+1 or -1"
    else:
        allowed_text = "+1/-1 or 1/0"
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            if lineno <= skip or not line.strip():
                continue
            fields = [t.strip() for t in line.split(sep)] if sep else line.split()
            if len(fields) != expected:
                return (
                    f"{path}, line {lineno}: {len(fields)} fields, expected {expected} "
                    f"(a file name and {len(names)} attribute values). Fix or delete that "
                    "line."
                )
            for name, text in zip(names, fields[1:], strict=True):
                try:
                    value = int(text)
                except ValueError:
                    value = None
                if value not in allowed:
                    return (
                        f"{path}, line {lineno}: attribute {name} has the value {text!r}; "
                        f"values must be {allowed_text}. Fix that line."
                    )
                if value == -1 and first_minus is None:
                    first_minus = lineno
                if value == 0 and first_zero is None:
                    first_zero = lineno
            if first_minus is not None and first_zero is not None:
                return (
                    f"{path} mixes the +1/-1 and 1/0 conventions (line {first_minus} has "
                    f"-1, line {first_zero} has 0). Use one convention throughout."
                )
            if fields[0] in seen:
                return (
                    f"{path}, line {lineno}: the file name {fields[0]} appears again (first "
                    f"on line {seen[fields[0]]}). Each image must have one row; delete the "
                    "duplicate."
                )
            seen[fields[0]] = lineno
    return f"{path} could not be read as a CelebA attribute file. Check its format."
