"""``python -m tsllm.results``: records -> tidy table + report.md, printed too."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tsllm.results.aggregate import PROTOCOLS
from tsllm.results.loading import load_records, parse_where, tidy_files
from tsllm.results.markdown import (
    controls_markdown,
    diagnostics_markdown,
    headline_markdown,
    markdown_report,
    pairs_markdown,
    ranks_markdown,
)
from tsllm.results.paths import DEFAULT_OUT

logger = logging.getLogger("tsllm.results")

EPILOG = """examples:
  python -m tsllm.results results/runs --sweep standalone --sweep hybrid --headline
  python -m tsllm.results results/runs --sweep controls --controls   # each control against the frozen LLM
  python -m tsllm.results results/runs --sweep controls --sweep align --controls --arm "llm[align=scale]"
  python -m tsllm.results results/runs --sweep controls --sweep align --diagnostics --arm llm
  python -m tsllm.results results/runs --sweep evidence16 --pair inception/llm none/text_probe  # latent vs text
  python -m tsllm.results results/runs --sweep evidence16 --ranks    # our arms beside published methods
  python -m tsllm.results --experiment evidence16 --headline         # a queue experiment's folders and sweeps
  python -m tsllm.results.report --check                             # are README and REPORT tables current?
  python -m tsllm.results results/runs --where llm.weights=random --where data.name=GunPoint
  python -m tsllm.results results/runs --out results --reference     # rewrites the committed evidence"""


#: How the results' messages read on stderr (``tsllm.results.report`` captures them in the same form).
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = argparse.ArgumentParser(prog="python -m tsllm.results", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Run records -> one tidy table -> paired tables, report and plots.")
    p.add_argument("dirs", nargs="*", type=Path, help="folders searched recursively for record.json")
    p.add_argument("--experiment", default=None, metavar="NAME",
                   help="a queue experiment (tsllm.experiment): the records in its sweep folders")
    p.add_argument("--out", type=Path, default=None,
                   help=f"output folder (default ./{DEFAULT_OUT}; committed results/ only when named here)")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="val_selected")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="keep runs whose config key (dotted, e.g. llm.weights) or tidy column equals VALUE; repeatable")
    p.add_argument("--sweep", action="append", default=[], metavar="NAME",
                   help="keep runs of this sweep_name; repeatable (any of them)")
    p.add_argument("--reference", action="store_true", help="add published accuracies (results/reference)")
    p.add_argument("--reference-csv", type=Path, default=None, help="override the reference CSV")
    p.add_argument("--reference-arm", default=None,
                   help="the arm controls are compared against (default: the pretrained frozen-LLM arm)")
    p.add_argument("--cost", action="store_true", help="add the cost table (record['cost'] per arm)")
    p.add_argument("--headline", action="store_true",
                   help="print only the paired headline table (the README's); writes nothing")
    p.add_argument("--controls", action="store_true",
                   help="print only the controls table (each arm against --reference-arm); writes nothing")
    p.add_argument("--diagnostics", action="store_true",
                   help="print only the diagnostics table (means per arm, not paired); writes nothing")
    p.add_argument("--pair", nargs=2, action="append", default=[], metavar=("CELL", "VS"),
                   help="print only CELL against VS (variant/arm cells, e.g. inception/llm none/text_probe), "
                        "paired on dataset and seed; repeatable")
    p.add_argument("--ranks", action="store_true",
                   help="print only our arms beside the published methods: means and average ranks (Friedman)")
    p.add_argument("--arm", action="append", default=[], metavar="LABEL",
                   help="with --controls or --diagnostics: keep only this arm's row; repeatable")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Load and validate every record, then (and only then) write tidy.csv/.parquet and report.md."""
    p = parser()
    args = p.parse_args(argv)
    if sum((args.headline, args.controls, args.diagnostics, bool(args.pair), args.ranks)) > 1:
        p.error("--headline, --controls, --diagnostics, --pair and --ranks each print one table: give one")
    if args.arm and not (args.controls or args.diagnostics):
        p.error("--arm selects rows of one table: use it with --controls or --diagnostics")
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    if args.experiment is not None:
        from tsllm.experiment import ExperimentError, load_experiment

        try:
            experiment = load_experiment(args.experiment)
        except ExperimentError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        args.dirs = args.dirs or [Path(d) for d in experiment.values("hydra.sweep.dir")]
    if not args.dirs:
        p.error("give folders of records, or --experiment NAME")
    try:
        df = load_records(args.dirs, where=parse_where(args.where), sweeps=args.sweep)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if df.empty:
        logger.error("no usable finished runs under %s: nothing written", [str(d) for d in args.dirs])
        return 1
    if args.headline or args.controls or args.diagnostics or args.pair or args.ranks:
        try:
            print(headline_markdown(df, args.protocol) if args.headline
                  else controls_markdown(df, args.protocol, args.reference_arm, args.arm) if args.controls
                  else pairs_markdown(df, args.protocol, [tuple(p) for p in args.pair]) if args.pair
                  else ranks_markdown(df, args.protocol, args.reference_csv) if args.ranks
                  else diagnostics_markdown(df, args.protocol, args.arm), end="")
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    report = markdown_report(df, args.protocol, reference_csv=args.reference_csv, reference=args.reference,
                             cost=args.cost, reference_arm=args.reference_arm)
    files = {**tidy_files(df), "report.md": report.encode()}
    out = args.out or DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (out / name).write_bytes(blob)
    print(report, end="")
    logger.info("wrote %s", ", ".join(str(out / name) for name in files))
    return 0
