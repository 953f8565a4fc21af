"""``python -m tsllm.results.report [--check] [FILE ...]``: keep the tables of README.md and results/REPORT.md
what the committed records print.

A generated table is a line that starts with ``python -m tsllm.results`` and prints one table (``--headline``,
``--controls``, ``--diagnostics``, ``--pair`` or ``--ranks``), then, below it and before the next such line or heading, the
``_protocol ..._`` note and the ``|`` table that command prints. Refreshing re-runs each command (in this process) from the
repository's root (the folder above the file that holds pyproject.toml) and rewrites its note and table;
``--check`` rewrites nothing and fails naming each stale table, so neither file keeps numbers its records no
longer give. The test suite runs the check.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PREFIX = "python -m tsllm.results "
ONE_TABLE = ("--headline", "--controls", "--diagnostics", "--pair", "--ranks")


@dataclass(frozen=True)
class Generated:
    """One generated table of a Markdown file: its command, and where its note and table lines are."""

    line: int  # 1-based line of the command
    argv: list[str]  # the arguments after ``python -m tsllm.results``
    note: int | None  # 0-based index of the ``_protocol`` line, if there is one
    table: range  # 0-based indices of the ``|`` lines

    @property
    def command(self) -> str:
        return PREFIX + shlex.join(self.argv)


def generated_tables(lines: Sequence[str], where: str = "README.md") -> list[Generated]:
    """Every generated table of `lines`; a one-table command without a table below it is a ValueError."""
    found = []
    for i, line in enumerate(lines):
        if not line.startswith(PREFIX):
            continue
        argv = shlex.split(line.split(" #", 1)[0])[3:]
        if not any(flag in argv for flag in ONE_TABLE):
            continue  # a command that writes a report, shown as usage
        note, start = None, None
        for j in range(i + 1, len(lines)):
            if lines[j].startswith(PREFIX) or lines[j].startswith("#"):
                break
            if lines[j].startswith("_protocol") and note is None and start is None:
                note = j
            if lines[j].startswith("|"):
                start = j
                break
        if start is None:
            raise ValueError(f"{where}:{i + 1}: `{line.strip()}` prints a table, but no `|` table follows it "
                             "before the next command or heading")
        end = start
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        found.append(Generated(i + 1, argv, note, range(start, end)))
    return found


DEFAULT_FILES = ("README.md", "results/REPORT.md")


def root_of(path: Path) -> Path:
    """The repository root above ``path`` (the folder holding pyproject.toml), else the file's own folder."""
    here = path.resolve().parent
    return next((p for p in (here, *here.parents) if (p / "pyproject.toml").is_file()), here)


def render(argv: Sequence[str], cwd: Path, where: str) -> tuple[str | None, list[str]]:
    """Run one command from `cwd` (the repository root): its ``_protocol`` note, if printed, and its table.

    The command runs in this process (``tsllm.results.cli.main`` with the same arguments, as ``python -m``
    would run it), so the imports are paid once for every table of a file, not once per table.
    """
    from tsllm.results import cli

    # Before stderr is redirected: the command's own logging.basicConfig is then a no-op, and no handler is
    # left writing into this call's buffer.
    logging.basicConfig(level=logging.WARNING, format=cli.LOG_FORMAT, stream=sys.stderr)
    out, err = io.StringIO(), io.StringIO()
    errors = logging.StreamHandler(err)  # what the command logs (e.g. "no usable finished runs")
    errors.setLevel(logging.ERROR)
    errors.setFormatter(logging.Formatter(cli.LOG_FORMAT))
    logging.getLogger("tsllm").addHandler(errors)
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(argv))
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else 2
    finally:
        logging.getLogger("tsllm").removeHandler(errors)
    if code != 0:
        messages = [m for m in err.getvalue().splitlines() if m.startswith(("error", "ERROR"))]
        raise RuntimeError(f"{where}: `{PREFIX}{shlex.join(argv)}` failed (exit {code}): "
                           f"{'; '.join(messages) or err.getvalue().strip()[-500:]}")
    printed = out.getvalue().splitlines()
    note = next((line for line in printed if line.startswith("_protocol")), None)
    return note, [line for line in printed if line.startswith("|")]


def refresh(path: Path, check: bool = False) -> list[str]:
    """Regenerate `path`'s tables (or, with `check`, only compare): one line per stale table, empty if none."""
    lines = path.read_text().split("\n")
    stale, new = [], list(lines)
    for g in reversed(generated_tables(lines, str(path))):  # from the end, so earlier indices hold
        note, table = render(g.argv, root_of(path), f"{path}:{g.line}")
        old_note = lines[g.note] if g.note is not None else None
        if table != lines[g.table.start:g.table.stop] or (note is not None and old_note not in (None, note)):
            stale.append(f"{path}:{g.line}: the table below `{g.command}` is not what it prints now")
        new[g.table.start:g.table.stop] = table
        if g.note is not None and note is not None:
            new[g.note] = note
    if stale and not check:
        path.write_text("\n".join(new))
    return stale[::-1]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: refresh (default) or check every generated table of the Markdown files (README and the report)."""
    p = argparse.ArgumentParser(prog="python -m tsllm.results.report", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", type=Path, default=[Path(f) for f in DEFAULT_FILES])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 naming each stale table")
    args = p.parse_args(argv)
    any_stale = False
    for path in args.files:
        try:
            stale = refresh(path, check=args.check)
        except (OSError, ValueError, RuntimeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for line in stale:
            print(line, file=sys.stderr)
        verb = "stale" if args.check else "refreshed"
        print(f"{path}: {len(stale)} table(s) {verb}" if stale else f"{path}: every generated table is current")
        any_stale |= bool(stale)
    return 1 if any_stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
