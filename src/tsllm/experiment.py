"""`python -m tsllm.experiment`: the published evidence sweeps, each a config, run pinned to a commit.

A queue experiment is a file in conf/experiment/ whose ``queues`` node lists the sweeps of one piece of
evidence: ``common`` (the overrides every sweep shares) and ``run`` (named queues, each an ordered list of
sweeps: the overrides of one ``python -m tsllm.train -m``). Queues run side by side, each on its share of the
cores; a queue runs its sweeps one after another. The code that runs is HEAD's, from a worktree of its own
(``.venv/queues/<commit>``), so an edit or a checkout under a running queue reaches nothing and every record
names a clean commit; uncommitted code does not run. Finished runs are committed as they land (their record,
log and diagnostics, never their weights: scripts/commit_finished.sh). Re-running skips finished runs and
resumes unfinished ones.

    python -m tsllm.experiment list
    python -m tsllm.experiment run evidence16 --queue tier1_A --queue tier1_B [--commit-every 30] [--dry-run]
    python -m tsllm.experiment commit evidence16 [--partial]
    python -m tsllm.plan --experiment evidence16 --queue tier2 [--records]
    python -m tsllm.results --experiment evidence16 --headline
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

log = logging.getLogger("tsllm.experiment")
ROOT = Path(__file__).resolve().parents[2]  # the checkout holding src/ and conf/ (when run from one)


class ExperimentError(ValueError):
    """A queue experiment that cannot be read or run: one line."""


def conf_dir() -> Path:
    from tsllm.train import CONF_DIR

    return Path(CONF_DIR)


@dataclass(frozen=True)
class QueueExperiment:
    """conf/experiment/<name>.yaml's ``queues``: shared overrides, and named queues of sweeps."""

    name: str
    common: tuple[str, ...]
    queues: dict[str, tuple[tuple[str, ...], ...]]

    def select(self, names: Sequence[str] = ()) -> dict[str, tuple[tuple[str, ...], ...]]:
        """The named queues (all when none is named); an unknown name lists the queues there are."""
        unknown = [n for n in names if n not in self.queues]
        if unknown:
            raise ExperimentError(f"experiment {self.name} has no queue {unknown[0]!r}; its queues: "
                                  f"{', '.join(self.queues)}")
        return {n: q for n, q in self.queues.items() if not names or n in names}

    def sweeps(self, names: Sequence[str] = ()) -> list[list[str]]:
        """The override lists of every sweep of the named queues, queue by queue, in order."""
        return [[*self.common, *sweep] for queue in self.select(names).values() for sweep in queue]

    def values(self, key: str) -> list[str]:
        """Every value one override key takes across the experiment's sweeps (e.g. hydra.sweep.dir)."""
        found = [o.split("=", 1)[1] for sweep in self.sweeps() for o in sweep if o.split("=", 1)[0] == key]
        return list(dict.fromkeys(found))


def load_experiment(name: str) -> QueueExperiment:
    """The queue experiment conf/experiment/<name>.yaml declares."""
    path = conf_dir() / "experiment" / f"{name}.yaml"
    if not path.is_file():
        raise ExperimentError(f"no conf/experiment/{name}.yaml; queue experiments: {', '.join(queue_experiments())}")
    node = OmegaConf.load(path).get("queues")
    if node is None:
        raise ExperimentError(f"conf/experiment/{name}.yaml is a one-sweep experiment, not a queue experiment: run "
                              f"it with python -m tsllm.train -m experiment={name}")
    try:
        queues = {str(q): tuple(tuple(shlex.split(str(s))) for s in sweeps) for q, sweeps in node.run.items()}
        return QueueExperiment(name, tuple(shlex.split(str(node.common or ""))), queues)
    except (AttributeError, TypeError, ValueError) as e:
        raise ExperimentError(f"conf/experiment/{name}.yaml: queues must hold common (overrides) and run (named lists "
                              f"of sweeps, each a line of overrides): {e}") from None


def queue_experiments() -> list[str]:
    """The names of every queue experiment in conf/experiment/."""
    return sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml")
                  if OmegaConf.load(p).get("queues") is not None)


# --------------------------------------------------------------------------- running


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def pinned_code(root: Path = ROOT) -> tuple[str, Path]:
    """(HEAD's commit, a worktree of it under .venv/queues/); refuses uncommitted code in src/ or conf/."""
    if git(root, "status", "--porcelain", "--untracked-files=no", "--", "src", "conf").strip():
        raise ExperimentError("src/ or conf/ has uncommitted changes: commit them first (queues run a commit's code, "
                              "so that every record names the code that ran)")
    sha = git(root, "rev-parse", "HEAD").strip()
    tree = root / ".venv" / "queues" / sha[:12]
    if not tree.is_dir():
        git(root, "worktree", "add", "-q", "--detach", str(tree), sha)
    return sha, tree


def sweep_command(sweep: Sequence[str], python: str = sys.executable) -> list[str]:
    return [python, "-m", "tsllm.train", "-m", *sweep]


def run(experiment: QueueExperiment, names: Sequence[str] = (), *, commit_every: float = 30.0,
        dry_run: bool = False, poll: float = 10.0, root: Path = ROOT, python: str = sys.executable) -> int:
    """Run the named queues side by side from a worktree of HEAD, committing finished runs as they land.

    Each queue is one process at a time with ``cores // queues`` threads. Returns the number of failed sweeps.
    """
    from tsllm.loop import available_cores

    queues = {n: list(q) for n, q in experiment.select(names).items()}
    threads = max(1, available_cores() // max(1, len(queues)))
    if dry_run:
        for name, sweeps in queues.items():
            for sweep in sweeps:
                command = sweep_command([*experiment.common, *sweep], python)
                print(f"[{name}] OMP_NUM_THREADS={threads} {shlex.join(command)}")
        return 0
    sha, tree = pinned_code(root)
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep),
           "OMP_NUM_THREADS": str(threads)}
    log.info("experiment %s: queues %s, %d thread(s) each, the code of commit %s from %s", experiment.name,
             ", ".join(queues), threads, sha[:12], tree)
    running: dict[str, subprocess.Popen] = {}
    failed, last_commit = 0, time.monotonic()
    while queues or running:
        for name in [n for n in queues if n not in running]:
            if queues[name]:
                sweep = [*experiment.common, *queues[name].pop(0)]
                log.info("[%s] %s", name, shlex.join(sweep))
                running[name] = subprocess.Popen(sweep_command(sweep, python), cwd=root, env=env)
            else:
                del queues[name]
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                failed += proc.returncode != 0
                log.log(logging.WARNING if proc.returncode else logging.INFO, "[%s] sweep ended (exit %d)", name,
                        proc.returncode)
                del running[name]
        if commit_every > 0 and time.monotonic() - last_commit > 60 * commit_every:
            commit(experiment, root=root)
            last_commit = time.monotonic()
        if running:
            time.sleep(poll)
    if commit_every > 0:
        commit(experiment, root=root)
    return failed


def commit(experiment: QueueExperiment, *, partial: bool = False, root: Path = ROOT) -> None:
    """Commit the experiment's runs that finished since the last commit (scripts/commit_finished.sh's rules)."""
    args = ["bash", str(root / "scripts" / "commit_finished.sh"), *(["--partial"] if partial else []),
            f"{experiment.name}: {', '.join(experiment.values('hydra.sweep.dir')) or 'results/runs'}"]
    done = subprocess.run(args, cwd=root, capture_output=True, text=True)
    for line in (done.stdout + done.stderr).strip().splitlines():
        log.info("%s", line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsllm.experiment", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("list", help="the queue experiments and their queues")
    p_run = sub.add_parser("run", help="run queues side by side from a worktree of HEAD")
    p_run.add_argument("name")
    p_run.add_argument("--queue", action="append", default=[], help="a queue to run (repeatable; default: all)")
    p_run.add_argument("--commit-every", type=float, default=30.0, help="minutes between commits (0: never)")
    p_run.add_argument("--dry-run", action="store_true", help="print the sweeps and exit")
    p_commit = sub.add_parser("commit", help="commit finished runs now")
    p_commit.add_argument("name")
    p_commit.add_argument("--partial", action="store_true", help="also the resume state of runs in flight")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        if args.verb == "list":
            for name in queue_experiments():
                exp = load_experiment(name)
                print(f"{name}: " + "; ".join(f"{q} ({len(s)} sweep{'s' * (len(s) != 1)})" for q, s in exp.queues.items()))
            return 0
        experiment = load_experiment(args.name)
        if args.verb == "commit":
            commit(experiment, partial=args.partial)
            return 0
        return 1 if run(experiment, args.queue, commit_every=args.commit_every, dry_run=args.dry_run) else 0
    except (ExperimentError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
