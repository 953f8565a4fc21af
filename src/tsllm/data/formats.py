"""Readers for the UCR/UEA archive layouts.

Three on-disk layouts are understood, each as ``root/Name/Name_{TRAIN,TEST}<suffix>``:

* ``ucr2018-tsv``: ``.tsv``, tab-separated, label first; unequal-length series are
  NaN-padded or simply shorter rows.
* ``ucr2015``: no extension (or ``.txt``), comma-separated, label first, all rows the
  same length.
* ``ts``: the sktime/UEA ``.ts`` format, parsed by sktime; univariate or multivariate,
  possibly unequal length.

Everything here returns *raw* data: float64 values with NaN where a value is missing
or a series is shorter than the longest one, and canonicalised label strings.
Label mapping, missing-value filling, splitting and normalisation live in
:mod:`tsllm.data.splits`.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Preference order when a dataset directory holds several layouts.
LAYOUTS: dict[str, tuple[str, ...]] = {
    "ucr2018-tsv": (".tsv",),
    "ucr2015": ("", ".txt"),
    "ts": (".ts",),
}
SPLIT_NAMES = ("TRAIN", "TEST")


class DataError(ValueError):
    """Bad or missing input data; the message names the file/line and what was expected."""


@dataclass
class RawSplit:
    """One split as read from disk, before any label mapping or cleaning."""

    x: np.ndarray  # float64 [N, C, T]; NaN = missing value or unequal-length padding
    labels: np.ndarray  # str [N], canonicalised (see canonical_label)
    path: str
    lines: np.ndarray | None = None  # int [N], 1-based line of each row in `path`, if known

    def where(self, row: int) -> str:
        """Human-readable location of ``row`` (0-based) for error messages."""
        if self.lines is not None:
            return f"{self.path} line {int(self.lines[row])}"
        return f"{self.path} row {row + 1}"


def sktime_data_dir() -> Path:
    """Directory holding the datasets shipped with sktime."""
    import sktime.datasets

    return Path(os.path.dirname(sktime.datasets.__file__)) / "data"


def canonical_label(token: str) -> str:
    """Canonical string of a class label so that e.g. ``"1"``, ``"1.0"`` and ``" 1"`` coincide.

    Numeric labels become ``str(int)`` when integral, else ``repr(float)``; anything
    else is kept verbatim (stripped).
    """
    token = token.strip()
    try:
        value = float(token)
    except ValueError:
        return token
    if not math.isfinite(value):
        return token
    return str(int(value)) if value.is_integer() else repr(value)


# --------------------------------------------------------------------------- discovery


def _resolve_root(root: str | os.PathLike | None) -> tuple[Path, tuple[str, ...], str]:
    """Root directory, layouts to consider there, and the ``source`` recorded in meta."""
    if root is None:
        # sktime's data dir also holds .tsv fragments (ArrowHead_TRAIN.tsv without a TEST)
        # and non-UCR files; only its .ts copies are complete datasets.
        return sktime_data_dir(), ("ts",), "sktime"
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"data root {str(path)!r} does not exist")
    if not path.is_dir():
        raise DataError(f"data root {str(path)!r} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataError(f"data root {str(path)!r} is not readable")
    return path, tuple(LAYOUTS), str(path.resolve())


def _layout_paths(directory: Path, name: str, layout: str) -> tuple[Path, Path] | None:
    """TRAIN/TEST paths of ``layout`` in ``directory`` if both files exist."""
    for suffix in LAYOUTS[layout]:
        train, test = (directory / f"{name}_{split}{suffix}" for split in SPLIT_NAMES)
        if train.is_file() and test.is_file():
            return train, test
    return None


def _ts_header(path: Path) -> dict[str, str]:
    """Lower-cased ``@tag -> value`` pairs of a .ts header (stops at ``@data``)."""
    tags: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not line.startswith("@"):
                break
            tag, _, value = line.partition(" ")
            tag = tag.lower()
            if tag == "@data":
                break
            tags[tag] = value.strip()
    return tags


def _is_classification_ts(path: Path) -> bool:
    """True unless the .ts header declares a regression target or no class labels."""
    tags = _ts_header(path)
    if tags.get("@targetlabel", "").lower().startswith("true"):
        return False
    return tags.get("@classlabel", "true").lower().startswith("true")


def _find_layout(directory: Path, name: str, layouts: Sequence[str]) -> tuple[str, Path, Path] | None:
    """Preferred layout with a complete TRAIN+TEST pair in ``directory``, with its paths."""
    for layout in layouts:
        paths = _layout_paths(directory, name, layout)
        if paths is not None:
            return (layout, *paths)
    return None


def list_datasets(root: str | os.PathLike | None = None) -> dict[str, str]:
    """Datasets found under ``root`` as ``folder name -> layout``, sorted by folder name.

    Keys are folder names as on disk (``Gun_Point`` in a UCR 2015 root); map them with
    :func:`tsllm.data.sets.canonical_name` for the 2018 spelling.

    ``root=None`` lists the classification datasets shipped with sktime (``.ts``).
    A dataset is a sub-directory ``Name`` holding both ``Name_TRAIN`` and ``Name_TEST``
    files of one layout; the preferred layout is reported when several exist.
    """
    base, layouts, _ = _resolve_root(root)
    try:
        entries = sorted(p for p in base.iterdir() if p.is_dir())
    except OSError as exc:
        raise DataError(f"cannot list data root {str(base)!r}: {exc.strerror or exc}") from exc
    found: dict[str, str] = {}
    for directory in entries:
        hit = _find_layout(directory, directory.name, layouts)
        # Regression .ts sets (e.g. sktime's Tecator) share the layout but are not loadable here.
        if hit is not None and (hit[0] != "ts" or _is_classification_ts(hit[1])):
            found[directory.name] = hit[0]
    return found


# --------------------------------------------------------------------------- parsing


def _read_text(path: Path, digest: hashlib._Hash) -> str:
    """File contents as text; the raw bytes also feed ``digest``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    digest.update(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte offset {exc.start})") from exc
    if not text.strip():
        raise DataError(f"{path}: file is empty; expected one labelled series per line")
    return text


def _to_floats(tokens: Sequence[str], path: Path, line_no: int, first_column: int) -> np.ndarray:
    """Convert value tokens, naming the exact token on failure."""
    try:
        # numpy's bulk str->float conversion is far faster than float() per token.
        return np.asarray(tokens, dtype=np.float64)
    except ValueError:
        for offset, token in enumerate(tokens):
            try:
                float(token)
            except ValueError:
                raise DataError(
                    f"{path} line {line_no} column {first_column + offset}: expected a number, got {token!r}"
                ) from None
        raise  # pragma: no cover - numpy rejected something float() accepts


def parse_delimited(
    path: Path, delimiters: Sequence[str | None], *, ragged: bool, digest: hashlib._Hash
) -> RawSplit:
    """Parse a label-first delimited file (UCR 2015 CSV or UCR 2018 TSV) into a univariate split.

    The delimiter is the first of ``delimiters`` found on the first row (``None`` = runs
    of whitespace, and always matches). With ``ragged=False`` every row must have as
    many fields as the first one; with ``ragged=True`` shorter rows are padded with NaN
    (UCR 2018 stores unequal-length series either way).
    """
    text = _read_text(path, digest)
    delimiter: str | None = delimiters[0]
    labels: list[str] = []
    rows: list[np.ndarray] = []
    lines: list[int] = []
    expected_fields: int | None = None
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue  # blank lines (typically trailing) carry no series
        if expected_fields is None:
            delimiter = next((d for d in delimiters if d is None or d in line), delimiters[0])
        fields = line.split(delimiter)
        if expected_fields is None:
            expected_fields = len(fields)
        elif not ragged and len(fields) != expected_fields:
            raise DataError(
                f"{path} line {line_no}: expected {expected_fields} fields "
                f"(label + {expected_fields - 1} values, as on the first row), got {len(fields)}"
            )
        if len(fields) < 2:
            raise DataError(f"{path} line {line_no}: expected a label followed by values, got only {line!r}")
        labels.append(canonical_label(fields[0]))
        rows.append(_to_floats(fields[1:], path, line_no, first_column=2))
        lines.append(line_no)
    length = max(len(r) for r in rows)
    x = np.full((len(rows), 1, length), np.nan)
    for i, row in enumerate(rows):
        x[i, 0, : len(row)] = row
    return RawSplit(x=x, labels=np.asarray(labels, dtype=str), path=str(path), lines=np.asarray(lines))


def _ts_case_lines(text: str) -> tuple[list[int], list[str]]:
    """1-based line numbers and verbatim label tokens of the data lines of a .ts file.

    sktime lower-cases whole lines (so ``"Standing"`` would become ``"standing"``) and
    does not report which line a case came from; this light scan recovers both.
    """
    line_numbers: list[int] = []
    labels: list[str] = []
    in_data = False
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        line_numbers.append(line_no)
        labels.append(line.rsplit(":", 1)[-1])
    return line_numbers, labels


def parse_ts(path: Path, *, digest: hashlib._Hash) -> RawSplit:
    """Parse a classification ``.ts`` file with sktime into a NaN-padded [N, C, T] split."""
    from sktime.datasets import load_from_tsfile_to_dataframe

    text = _read_text(path, digest)
    if not _is_classification_ts(path):
        raise DataError(f"{path}: not a classification problem (header has no '@classLabel true')")
    try:
        frame, y = load_from_tsfile_to_dataframe(str(path), return_separate_X_and_y=True)
    except (OSError, ValueError, IndexError, TypeError) as exc:
        raise DataError(f"{path}: invalid .ts file: {exc}") from exc
    n, channels = frame.shape
    cells = [[np.asarray(frame.iat[i, c], dtype=np.float64) for c in range(channels)] for i in range(n)]
    length = max((len(cell) for row in cells for cell in row), default=0)
    if n == 0 or length == 0:
        raise DataError(f"{path}: no series found after '@data'")
    x = np.full((n, channels, length), np.nan)
    for i, row in enumerate(cells):
        for c, cell in enumerate(row):
            x[i, c, : len(cell)] = cell
    line_numbers, raw_labels = _ts_case_lines(text)
    y = np.asarray(y, dtype=str)
    if len(raw_labels) == n and all(
        r.strip().lower() == s.strip() for r, s in zip(raw_labels, y, strict=True)
    ):
        labels, lines = raw_labels, np.asarray(line_numbers)
    else:
        # Unusual files (e.g. with timestamps) may defeat the scan; sktime's labels are still right.
        labels, lines = list(y), None
    return RawSplit(
        x=x, labels=np.asarray([canonical_label(s) for s in labels], dtype=str), path=str(path), lines=lines
    )


def _parse(path: Path, layout: str, digest: hashlib._Hash) -> RawSplit:
    if layout == "ts":
        return parse_ts(path, digest=digest)
    if layout == "ucr2018-tsv":
        return parse_delimited(path, ("\t",), ragged=True, digest=digest)
    # UCR 2015 files are comma-separated; some .txt re-distributions use whitespace.
    return parse_delimited(path, (",", None), ragged=False, digest=digest)


def _missing_files_message(directory: Path, name: str, layouts: Sequence[str]) -> str:
    """Explain which TRAIN/TEST file is missing, preferring layouts that are half present."""
    expected: list[str] = []
    for layout in layouts:
        for suffix in LAYOUTS[layout]:
            paths = [directory / f"{name}_{split}{suffix}" for split in SPLIT_NAMES]
            present = [p.is_file() for p in paths]
            if any(present):
                missing = paths[present.index(False)]
                return f"dataset {name!r}: {layout} file {missing} is missing (layouts tried: {', '.join(layouts)})"
            expected.append(f"{paths[0]} + {paths[1].name} ({layout})")
    return f"dataset {name!r}: no TRAIN/TEST files found; expected one of: {'; '.join(expected)}"


def _pad_time(x: np.ndarray, length: int) -> np.ndarray:
    if x.shape[2] == length:
        return x
    pad = np.full((*x.shape[:2], length - x.shape[2]), np.nan)
    return np.concatenate([x, pad], axis=2)


def read_raw(name: str, root: str | os.PathLike | None = None) -> tuple[RawSplit, RawSplit, dict]:
    """Read the TRAIN and TEST splits of dataset ``name`` without any cleaning.

    ``name`` may use the UCR 2015 or the 2018 spelling (``Gun_Point`` / ``GunPoint``): the
    folder named exactly ``name`` is read when it holds a complete TRAIN/TEST pair, else the
    folder of the other spelling (see :mod:`tsllm.data.sets`).

    Both splits are NaN-padded to a common length. The returned dict holds ``name`` (the
    canonical 2018 spelling), ``folder`` (the folder read), ``source``, ``layout``,
    ``files`` (train/test paths) and ``sha256`` of the raw TRAIN then TEST bytes.
    """
    from tsllm.data.sets import canonical_name, folder_candidates  # sets imports this module

    base, layouts, source = _resolve_root(root)
    candidates = folder_candidates(name)
    directories = [(folder, base / folder) for folder in candidates if (base / folder).is_dir()]
    # The exact folder first, then the other archive's spelling; the first complete pair wins.
    for folder, directory in directories:
        hit = _find_layout(directory, folder, layouts)
        if hit is not None:
            break
    else:
        if not directories:
            available = sorted(list_datasets(root))
            tried = f" (also tried {', '.join(map(repr, candidates[1:]))})" if len(candidates) > 1 else ""
            raise DataError(
                f"unknown dataset {name!r}{tried} in {source}; available: {', '.join(available) or '(none)'}"
            )
        folder, directory = directories[0]
        raise DataError(_missing_files_message(directory, folder, layouts))
    layout, train_path, test_path = hit
    digest = hashlib.sha256()
    train = _parse(train_path, layout, digest)
    test = _parse(test_path, layout, digest)
    if train.x.shape[1] != test.x.shape[1]:
        raise DataError(
            f"dataset {name!r}: TRAIN has {train.x.shape[1]} channels but TEST has {test.x.shape[1]} "
            f"({train_path}, {test_path})"
        )
    length = max(train.x.shape[2], test.x.shape[2])
    train.x, test.x = _pad_time(train.x, length), _pad_time(test.x, length)
    meta = {
        "name": canonical_name(name),
        "folder": folder,
        "source": source,
        "layout": layout,
        "files": {"train": str(train_path), "test": str(test_path)},
        "sha256": digest.hexdigest(),
    }
    return train, test, meta
