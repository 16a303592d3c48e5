"""`custseg`: one subcommand per stage of the registry, plus `run` (the stages in order), `score` (assign
segments with a saved model), `export` (segment members as files for campaigns) and `generate` (sample data).

Arguments and configuration are parsed and validated before Spark starts; any problem ends the command
with a one-line reason and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from custseg.runner import RunSummary

from custseg import __version__, pipeline
from custseg.core import config, redact
from custseg.core.errors import ConfigError, CustsegError, InputError
from custseg.core.keys import EXPORT_FORMATS
from custseg.io.sources import check_local_input
from custseg.stages.export import step as export_step

log = logging.getLogger("custseg")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
custseg turns a customer transaction log into customer segments, as Spark jobs writing Delta tables
under <output.root>. The stages, in order:
""" + "\n".join(f"  {s.name:<10} {s.help}" for s in pipeline.ORDER) + """

Every subcommand takes --conf FILE (TOML), any number of --set key=value overrides, and --as-of
YYYY-MM-DD (the features' cut-off date; default: the latest transaction date). The configuration keys
are listed in README.md."""

EXTRA_COMMANDS = {
    "generate": "write a synthetic transaction log with planted customer groups (and its truth file)",
    "score": "assign every customer as of a date to a segment with a saved model, without refitting -> segments",
    "run": f"{', '.join(pipeline.STAGES)} in order (skip or pick stages with --skip / --only)",
    "export": "write the customers of chosen segments, with each segment's name and recommended action, as CSV or "
              "Parquet files for a campaign tool",
}

EXPORT_EPILOG = """\
--segment takes a segment id or a name from segment_descriptions (ignoring case and surrounding space);
repeat it or separate values with commas. The files hold customer_id (as text), segment_id, segment_name,
action, action_channel, action_offer, action_message, as_of_date and distance_to_centre, at most
export.max_records_per_file rows each (CSV with a header row). They are written next to --to and renamed
to it only when complete: a failed export leaves --to as it was, and --overwrite replaces an existing
folder only once the new files are written. Needs `custseg explain` for the date.

example:
  custseg export --as-of 2024-06-30 --segment "At risk" --segment 0,3 --to exports/winback-2024-06
  custseg export --segment 2 --format parquet --to s3a://bucket/campaigns/june --overwrite"""


def _common(as_of_help: str = "features cut-off date, inclusive (default: latest transaction date)",
            ) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--conf", metavar="FILE", default="conf/local.toml",
                        help="TOML configuration file (default: %(default)s)")
    common.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override one configuration key, e.g. --set input.path=my.csv (repeatable)")
    common.add_argument("--as-of", metavar="YYYY-MM-DD", dest="as_of", help=as_of_help)
    common.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and every JVM warning (spark.quiet_logs=false)")
    return common


def _parser() -> argparse.ArgumentParser:
    common = _common()

    p = argparse.ArgumentParser(prog="custseg", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"custseg {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("generate", parents=[common], help=EXTRA_COMMANDS["generate"],
                   description=EXTRA_COMMANDS["generate"])
    for stage in pipeline.ORDER:
        sub.add_parser(stage.name, parents=[common], help=stage.help, description=stage.help)
    sp = sub.add_parser("score", parents=[common], help=EXTRA_COMMANDS["score"], description=EXTRA_COMMANDS["score"])
    sp.add_argument("--model", metavar="RUN_ID", default="latest",
                    help="the segment run whose saved model scores, or latest: the newest model fitted on or before "
                         "the as-of date (default: %(default)s)")
    sp = sub.add_parser("run", parents=[common], help=EXTRA_COMMANDS["run"], description=EXTRA_COMMANDS["run"])
    sp.add_argument("--skip", action="append", default=[], choices=pipeline.STAGES, metavar="STAGE",
                    help=f"skip a stage (repeatable; one of {', '.join(pipeline.STAGES)})")
    sp.add_argument("--only", action="append", default=[], choices=pipeline.STAGES, metavar="STAGE",
                    help="run only these stages (repeatable)")
    sp.add_argument("--generate-if-missing", action="store_true",
                    help="first write the synthetic sample log if input.path does not exist")
    sp = sub.add_parser("export", parents=[_common("the segments' date (default: the latest date in segments)")],
                        help=EXTRA_COMMANDS["export"], description=EXTRA_COMMANDS["export"], epilog=EXPORT_EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    # checked by export.request, not by argparse: a problem is one line and exit code 2, like a configuration error
    sp.add_argument("--segment", metavar="ID|NAME", action="append", dest="segments",
                    help="a segment to export: its id or its name (repeatable, or comma-separated); required")
    sp.add_argument("--format", metavar=f"{{{','.join(EXPORT_FORMATS)}}}", default="csv",
                    dest="export_format",
                    help="file format (default: %(default)s)")
    sp.add_argument("--to", metavar="PATH",
                    help="folder or URI to write the files to (it must not exist, unless --overwrite); required")
    sp.add_argument("--overwrite", action="store_true",
                    help="replace PATH if it exists, once the new files are written")
    return p


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)
    redact.install_log_filter()  # URI credentials and control characters never reach the log


def _stages_for(args: argparse.Namespace) -> list[str]:
    if args.command == "score":
        return ["segment"]
    if args.command != "run":
        return [args.command]
    chosen = [s for s in pipeline.STAGES if (not args.only or s in args.only) and s not in args.skip]
    if not chosen:
        raise ConfigError("--skip/--only: no stage left to run")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `custseg` console script and of jobs/*.py."""
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    t0 = time.perf_counter()
    known: config.Config | None = None  # for redacting the error line: None until the configuration loads
    try:
        if args.command == "export":  # the export's own arguments, checked first
            args.export = export_step.request(args.segments, args.to, args.export_format, args.overwrite)
        overrides = list(args.overrides)
        if args.verbose:  # everything, the JVM's routine warnings too
            overrides.append("spark.quiet_logs=false")
        if args.command == "score":  # the segment stage in score mode, with the model named on the command line
            overrides += ["segment.mode=score", f"segment.model={args.model}"]
        known = cfg = config.load(args.conf, overrides)
        redact.install_log_filter(cfg.secrets())  # now the log knows the secret values too
        as_of = config.parse_as_of(args.as_of)
        stages = _stages_for(args)
        pipeline.check(cfg, stages)
        if args.command != "generate" and "ingest" in stages and not _wants_sample(cfg, args, stages):
            check_local_input(cfg["input.path"])
    except CustsegError as e:
        print(f"custseg: error: {config.redact_text(str(e), known)}", file=sys.stderr)
        return EXIT_USAGE
    log.info("custseg %s: %s with %s", __version__, args.command, cfg.source or "(no config file)")
    log.info("configuration: %s", json.dumps(cfg.masked(), default=str))
    if args.command != "generate":
        _warn_if_future(as_of)
    try:
        summary = _run(cfg, args, stages, as_of)
    except Exception as e:  # one line for the user; the traceback for --verbose
        log.debug("failure", exc_info=True)
        print(f"custseg: error: {args.command} failed: {config.redact_text(_one_line(e), cfg)}", file=sys.stderr)
        return EXIT_FAILED
    _print_summary(summary, round(time.perf_counter() - t0, 1))
    return EXIT_OK


def _warn_if_future(as_of: dt.date | None) -> None:
    today = dt.datetime.now(dt.UTC).date()
    if as_of is not None and as_of > today:
        log.warning("--as-of %s is after today's date (%s, UTC): features will see no transactions after today",
                    as_of, today)


def _one_line(e: BaseException) -> str:
    from custseg.io import delta

    if delta.is_concurrent_change(e):
        return delta.CONCURRENT_HINT
    text = str(e).strip().splitlines()
    first = text[0] if text else type(e).__name__
    return first if isinstance(e, CustsegError) else f"{type(e).__name__}: {first}"


def _wants_sample(cfg: config.Config, args: argparse.Namespace, stages: list[str]) -> bool:
    """--generate-if-missing applies to the sample's own path only: a user's missing file is an error."""
    if not getattr(args, "generate_if_missing", False) or "ingest" not in stages:
        return False
    if cfg["input.path"].rstrip("/") != cfg["generate.path"].rstrip("/"):
        return False
    try:
        check_local_input(cfg["input.path"])
    except InputError:
        return True
    return False


def _run(cfg: config.Config, args: argparse.Namespace, stages: list[str], as_of: dt.date | None) -> RunSummary:
    from custseg import runner
    from custseg.io import session
    from custseg.sample import step as sample

    spark = session.build_session(cfg, args.command)
    if args.command in ("generate", "export"):  # commands outside the pipeline: not recorded as runs
        summary = runner.RunSummary(runner.new_run_id(), dt.datetime.now(dt.UTC), str(cfg["output.root"]))
        t0 = time.perf_counter()
        if args.command == "generate":
            summary.results["generate"] = sample.run(spark, cfg)
        else:
            result = export_step.run(spark, cfg, args.export, as_of)
            summary.results["export"], summary.as_of = result, result.as_of
        summary.timings[args.command] = round(time.perf_counter() - t0, 2)
        return summary
    generated = None
    if _wants_sample(cfg, args, stages):
        log.info("input %s not found: generating the synthetic sample first", cfg["input.path"])
        t0 = time.perf_counter()
        generated = (sample.run(spark, cfg), round(time.perf_counter() - t0, 2))
    summary = runner.run(spark, cfg, stages, as_of)
    summary.tables = runner.table_rows(spark, cfg, summary.stages)  # for the summary printed below
    if generated:
        summary.results = {"generate": generated[0], **summary.results}
        summary.timings = {"generate": generated[1], **summary.timings}
    return summary


def _print_summary(summary: RunSummary, wall_seconds: float) -> None:
    """What the command did, for a person: each stage's time and result, then every table written."""
    head = f"custseg run {summary.run_id}"
    if summary.as_of:
        head += f", as of {summary.as_of}"
    lines = [f"{head}: finished in {wall_seconds:.1f} s"]
    for stage, seconds in summary.timings.items():
        result = summary.results.get(stage)
        lines.append(f"  {stage:<10}{seconds:>8.1f} s  {result.describe() if result else ''}")
    if summary.tables:
        lines.append(f"tables under {summary.output_root}:")
        for name, t in summary.tables.items():
            lines.append(f"  {name:<20}{t['rows'] or 0:>14,} rows  (version {t['version']})")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
