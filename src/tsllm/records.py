"""The run directory is the record: resolved config, environment, metrics, status.

`record.json` is written when a run starts (status running), rewritten when it ends (finished or
failed), always atomically, so a sweep that dies never leaves a half-written record behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, runs are unguarded there
    fcntl = None  # type: ignore[assignment]

RECORD = "record.json"
LOCK = "run.lock"  # ignored by git; held while a process trains in the run dir
log = logging.getLogger("tsllm.records")
FILE_MODE = 0o664  # records and checkpoints are readable by the group, whatever the umask
# Keys that do not change a run's numbers: where it logs, whether it may resume, the sweep's folder name,
# the grid/dataset-set helpers, whose effect is already in the resolved encoder and data values, and
# machine-specific paths (a cache under HOME; the data folder, since data is identified by its checksum,
# which a resumed run compares), so a sweep copied to another machine skips and resumes as before.
NON_SEMANTIC = ("logger", "sweep_name", "train.resume", "train.threads", "grid", "datasets", "llm.cache_dir",
                "data.root", "diagnostics")  # diagnostics run after selection: they never change a number of the run
# Until alignment became the LLM reader's own option, every reader's config carried this node. Runs are
# identified in that shape (canonical), so the committed records keep their hashes, cells and columns.
LEGACY_ALIGN = {"name": "none"}
PACKAGES = ("tsllm", "torch", "transformers", "accelerate", "peft", "numpy", "pandas", "sktime", "hydra-core",
            "wandb")


@dataclass
class FitResult:
    """What a run reports. `test_acc` is of the model picked by `selection`, which never looks at TEST."""

    selection: str                      # "best_val", "min_train_loss", "last_epoch[: why]" or "nothing_trains"
    best_epoch: int
    epochs_run: int
    val_acc: float | None
    val_loss: float | None
    test_acc: float
    test_loss: float
    test_acc_last_epoch: float
    train_acc_last_epoch: float
    stopped_early: bool
    stop_reason: str | None             # None, "early_stopping" or "train_acc"
    resumed_from_epoch: int
    seconds: float
    cost: dict[str, Any]
    # Seconds of fit in the sessions before this one (to each one's last checkpoint): 0.0 for a run that
    # did not resume, None where it resumed from a checkpoint that did not keep them.
    earlier_sessions_seconds: float | None = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    # Only under protocol=study_best_test: optimistic, chosen with TEST, labelled so in every table.
    study_best_test_acc: float | None = None
    study_min_train_loss_test_acc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunRecord:
    """record.json: what a run writes (train) and what every reader of records reads (results, diagnose).

    Written when the run starts (status running), again when it ends (finished or failed). The fit's
    fields (:class:`FitResult`) sit at the top level of the JSON beside the run's own.
    """

    status: str                           # running | finished | failed
    config_hash: str
    run_dir: str
    seed: int
    config: dict[str, Any]
    # What the run is (tsllm.identity.identify): arm label, mode, cell and pairing context.
    dataset: str | None = None
    encoder: str | None = None
    mode: str | None = None
    reader: str | None = None
    arm: str | None = None
    cell: str | None = None
    context: str | None = None
    llm: str | None = None                # the LLM, when one reads (None for a standalone run)
    lr: float | None = None
    num_tokens: int | None = None
    num_kernels: int | None = None
    protocol: str | None = None
    selection_rule: str | None = None
    threads: int | None = None            # CPU threads the run used (train.threads, resolved)
    processes: int | None = None          # processes that trained it together (torchrun --nproc_per_node x nodes)
    precision: str | None = None          # the trainable part's autocast, resolved (train.precision)
    llm_dtype: str | None = None          # the frozen LLM's weights, resolved (llm.dtype), when one is loaded
    data: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    fit: FitResult | None = None
    reader_stats: dict[str, Any] | None = None
    diagnostics: dict[str, Any] | None = None
    diagnostics_error: str | None = None
    error: str | None = None
    wall_seconds: float | None = None

    OPTIONAL: ClassVar[tuple[str, ...]] = ("reader_stats", "diagnostics", "diagnostics_error", "error")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: the fit's fields lifted to the top level, absent extras left out."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "fit"}
        for key in self.OPTIONAL:
            if out[key] is None:
                del out[key]
        if self.fit is not None:
            out.update(asdict(self.fit))
        return out

    @staticmethod
    def columns() -> tuple[str, ...]:
        """The scalar fields of a record, its own and its fit's: the tidy table's columns (tsllm.results)."""
        return (*_scalar_fields(RunRecord), *_scalar_fields(FitResult))


def _scalar_fields(cls: type) -> list[str]:
    """Fields of a dataclass typed str, int, float or bool (or optionally so), in declaration order."""
    hints = typing.get_type_hints(cls)
    scalar = {str, int, float, bool, type(None)}
    def is_scalar(hint: Any) -> bool:
        union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        return hint in scalar or (union and set(typing.get_args(hint)) <= scalar)

    return [f.name for f in fields(cls) if is_scalar(hints[f.name])]


class RunDirConflict(RuntimeError):
    """The run directory holds a different run, or a live process is training there; nothing is overwritten."""


@contextmanager
def run_dir_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold `run_dir` for this process while it trains there; refuse if another process holds it.

    A kernel advisory lock (flock), not a pid file: it goes with its process however that process ends
    (a kill, a preempted SLURM job), so an interrupted run resumes without a stale lock to clear by hand.
    Two processes splitting one sweep by hand can then never train, and overwrite, the same cell.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    fh = _locked_file(path)
    try:
        if fh is not None:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            fh.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # before the lock goes, so a finished run's folder is left as it was
        if fh is not None:
            fh.close()  # releases the flock


def _locked_file(path: Path) -> Any:
    """`path` opened and flock-ed by this process; None where the platform or the mount has no flock.

    Raises RunDirConflict, naming the holder, when another live process holds it.
    """
    if fcntl is None:
        return None
    while True:
        fh = open(path, "a+")  # noqa: SIM115 -- returned open: the lock lives as long as the file is open
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            fh.close()
            raise RunDirConflict(f"{path.parent} is in use: {owner} is training there (its lock is {path}); "
                                 "wait for it, or choose another hydra.run.dir") from None
        except OSError as e:  # a mount without flock support: say so and run unguarded
            fh.close()
            log.warning("%s: cannot lock (%s); nothing stops a second process training here", path.parent, e)
            return None
        if _is_current(fh, path):
            return fh
        fh.close()  # its holder unlinked it as we took it: a lock on that file guards nothing; take the new one


def _is_current(fh: Any, path: Path) -> bool:
    """Whether the open file `fh` is still the one at `path` (not unlinked or replaced since it was opened)."""
    try:
        return os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def canonical(config: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a resolved config in the shape runs are identified by (see LEGACY_ALIGN)."""
    copy = json.loads(json.dumps(config, default=str))
    if isinstance(copy.get("reader"), dict):
        copy["reader"].setdefault("align", dict(LEGACY_ALIGN))
    return copy


def config_hash(config: dict[str, Any]) -> str:
    """A short hash identifying a run by its resolved config (non-semantic keys left out)."""
    pruned = canonical(config)
    pruned.pop("hydra", None)
    for dotted in NON_SEMANTIC:
        node, *rest = dotted.split(".")
        if not rest:
            pruned.pop(node, None)
        elif isinstance(pruned.get(node), dict):
            pruned[node].pop(rest[0], None)
    blob = json.dumps(pruned, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


CODE = ("src", "conf")  # what a run's numbers depend on in the checkout (records and results do not)


def git_revision(where: str | Path | None = None) -> dict[str, Any]:
    """The commit of the checkout holding ``where`` (default: this source) and whether its code (src/, conf/)
    had uncommitted changes, with their diff. Records and results being written do not make the code dirty;
    None outside a checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=Path(where or Path(__file__).resolve().parent), capture_output=True,
                              text=True, timeout=30, check=True).stdout

    try:
        top = git("rev-parse", "--show-toplevel").strip()
        code = [f"{top}/{d}" for d in CODE]
        out: dict[str, Any] = {"sha": git("rev-parse", "HEAD").strip(),
                               "dirty": git("status", "--porcelain", "--untracked-files=no", "--", *code) != ""}
        if out["dirty"]:
            out["diff"] = git("diff", "HEAD", "--", *code)  # what ran beside the commit, to re-create it
        return out
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def source_digest() -> dict[str, Any]:
    """A hash of the tsllm source a process runs: every module file of the package, by name.

    The whole package, not only the modules a process has imported by then: a run, its diagnostics and a
    re-run by tsllm.reproduce import different subsets, and one tree must give one hash. Read when the run
    starts, so an edit while it runs does not pass for the code that ran.
    """
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    files = sorted(package.rglob("*.py"))
    for path in files:
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return {"sha256": digest.hexdigest(), "modules": len(files)}


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")  # what sets the float kernels a CPU runs


def cpu() -> dict[str, Any]:
    """The CPU's model and the vector extensions that choose its float kernels (None where unknown).

    Float sums on two CPUs with different kernels can differ in their last bits, and training carries such
    differences on: a record names its CPU so that tsllm.reproduce can say why a re-run elsewhere differs.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or None, "isa": None}
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), None)
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return {"model": model, "isa": [f for f in ISA_FLAGS if f in flags]}


def environment() -> dict[str, Any]:
    """Library versions, interpreter, machine and accelerator."""
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpu": cpu(),
        "git": git_revision(),
        "source": source_digest(),
    }


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The record in a run directory, or None when there is none."""
    path = Path(run_dir) / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunDirConflict(f"{path}: not valid JSON (line {e.lineno}): move it away to re-run here") from None


def write_atomically(path: str | Path, text: str) -> Path:
    """Write a text file through a temporary file and a rename: a reader (or a commit of the run dir) sees the
    old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, FILE_MODE)  # mkstemp makes it 0600; the group must read records on a shared disk
    os.replace(tmp, path)
    return path


def write_record(run_dir: str | Path, record: RunRecord | dict[str, Any]) -> Path:
    """Write record.json atomically (temp file + rename)."""
    data = record.to_dict() if isinstance(record, RunRecord) else record
    return write_atomically(Path(run_dir) / RECORD, json.dumps(data, indent=2, default=str))


def _finished_marker(sweep_dir: str | Path, key: str) -> Path:
    return Path(sweep_dir) / ".finished" / key


def mark_finished(sweep_dir: str | Path, key: str, run_dir: str | Path) -> None:
    """Index a finished cell by its config hash, so later cells find a twin without reading every record."""
    marker = _finished_marker(sweep_dir, key)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(Path(run_dir).resolve()))


def find_finished(sweep_dir: str | Path, key: str, exclude: str | Path | None = None) -> dict[str, Any] | None:
    """The finished record of this config hash in a sweep, if another cell already ran it."""
    marker = _finished_marker(sweep_dir, key)
    if not marker.is_file():
        return None
    run_dir = Path(marker.read_text().strip())
    if exclude is not None and run_dir == Path(exclude).resolve():
        return None
    try:
        rec = read_record(run_dir)
    except RunDirConflict:
        return None
    if rec is not None and rec.get("config_hash") == key and rec.get("status") == "finished":
        return rec
    return None
