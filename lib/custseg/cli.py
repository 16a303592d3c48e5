"""`custseg`: one subcommand per stage, plus `run` (the stages in order) and `generate` (sample data).

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
from typing import Any

from custseg import __version__, config
from custseg.config import ConfigError
from custseg.sources import InputError, check_local_input

log = logging.getLogger("custseg")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
custseg turns a customer transaction log into customer segments, as Spark jobs writing Delta tables
under <output.root>: transactions and quarantine (ingest), customer_features (features), segments,
model_selection and runs (segment), segment_profiles (profile).

Every subcommand takes --conf FILE (TOML), any number of --set key=value overrides, and --as-of
YYYY-MM-DD (the features' cut-off date; default: the latest transaction date). The configuration keys
are listed in README.md."""

STAGE_HELP = {
    "generate": "write a synthetic transaction log with planted customer groups (and its truth file)",
    "ingest": "validate the input log; clean rows -> transactions, bad rows -> quarantine (with a reason)",
    "features": "per-customer behavioural features as of a date -> customer_features",
    "segment": "choose and fit a clustering model on the features -> segments, model_selection, runs",
    "profile": "describe each segment against the whole population -> segment_profiles",
    "run": "ingest, features, segment and profile in order (skip or pick stages with --skip / --only)",
}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--conf", metavar="FILE", default="conf/local.toml",
                        help="TOML configuration file (default: %(default)s)")
    common.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override one configuration key, e.g. --set input.path=my.csv (repeatable)")
    common.add_argument("--as-of", metavar="YYYY-MM-DD", dest="as_of",
                        help="features cut-off date, inclusive (default: latest transaction date)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    p = argparse.ArgumentParser(prog="custseg", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"custseg {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in STAGE_HELP.items():
        sp = sub.add_parser(name, parents=[common], help=text, description=text)
        if name == "run":
            from custseg.pipeline import STAGES

            sp.add_argument("--skip", action="append", default=[], choices=STAGES, metavar="STAGE",
                            help=f"skip a stage (repeatable; one of {', '.join(STAGES)})")
            sp.add_argument("--only", action="append", default=[], choices=STAGES, metavar="STAGE",
                            help="run only these stages (repeatable)")
            sp.add_argument("--generate-if-missing", action="store_true",
                            help="first write the synthetic sample log if input.path does not exist")
    return p


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)


def _stages_for(args: argparse.Namespace) -> list[str]:
    from custseg.pipeline import STAGES

    if args.command != "run":
        return [args.command]
    chosen = [s for s in STAGES if (not args.only or s in args.only) and s not in args.skip]
    if not chosen:
        raise ConfigError("--skip/--only: no stage left to run")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `custseg` console script and of jobs/*.py."""
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    t0 = time.perf_counter()
    try:
        cfg = config.load(args.conf, args.overrides)
        as_of = config.parse_as_of(args.as_of)
        stages = _stages_for(args)
        if args.command != "generate" and "ingest" in stages and not _wants_sample(cfg, args, stages):
            check_local_input(cfg["input.path"])
    except (ConfigError, RuntimeError) as e:
        print(f"custseg: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    log.info("custseg %s: %s with %s", __version__, args.command, cfg.source or "(no config file)")
    log.info("configuration: %s", json.dumps(cfg.masked(), default=str))
    try:
        summary = _run(cfg, args, stages, as_of)
    except Exception as e:  # one line for the user; the traceback for --verbose
        log.debug("failure", exc_info=True)
        print(f"custseg: error: {args.command} failed: {_one_line(e)}", file=sys.stderr)
        return EXIT_FAILED
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    _print_summary(summary)
    return EXIT_OK


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    first = text[0] if text else type(e).__name__
    return first if type(e).__module__.startswith("custseg") else f"{type(e).__name__}: {first}"


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


def _run(cfg: config.Config, args: argparse.Namespace, stages: list[str], as_of: dt.date | None) -> dict[str, Any]:
    from custseg import pipeline, session

    ctx = pipeline.RunContext(cfg)
    spark = session.build_session(cfg, args.command)
    log.info("run id %s", ctx.run_id)
    if args.command == "generate":
        pipeline.run_generate(spark, ctx)
        return {"run_id": ctx.run_id, "timings": ctx.timings, "results": ctx.results}
    if _wants_sample(cfg, args, stages):
        log.info("input %s not found: generating the synthetic sample first", cfg["input.path"])
        pipeline.run_generate(spark, ctx)
    return pipeline.run_stages(spark, ctx, stages, as_of)


def _describe(stage: str, r: dict[str, Any]) -> str:
    if stage == "generate":
        return f"{r['rows']:,} lines for {r['customers']:,} customers -> {r['path']}"
    if stage == "ingest":
        if not r.get("new_files"):
            return "no new input files: nothing to add"
        reasons = ", ".join(f"{k} {v:,}" for k, v in r.get("quarantine_reasons", {}).items())
        return (f"{r['input']:,} input rows = {r['clean']:,} clean + {r['quarantined']:,} quarantined"
                f" + {r['duplicates']:,} duplicates ({r['mode']}, {r['new_files']} files)"
                + (f"; quarantine: {reasons}" if reasons else ""))
    if stage == "features":
        return f"{r['customers']:,} customers as of {r['as_of']}"
    if stage == "segment":
        sil = f"{r['silhouette']:.3f}" if r.get("silhouette") is not None else "n/a"
        return (f"{r['algorithm']} k={r['k']}, silhouette {sil}, chosen from {r['candidates']} candidates "
                f"({r['selection_rule']})")
    if stage == "profile":
        rows = [f"    segment {p['segment_id']:>2}: {p['customers']:>10,} customers ({p['customer_share']:6.1%}), "
                f"{(p['revenue_share'] or 0):6.1%} of revenue" for p in r["segments"] if p["segment_id"] >= 0]
        return "segments (0 = highest spend):\n" + "\n".join(rows)
    return ", ".join(f"{k}={v}" for k, v in r.items() if not isinstance(v, (dict, list)))


def _print_summary(summary: dict[str, Any]) -> None:
    """What the command did, for a person: each stage's time and result, then every table written."""
    log.debug("summary: %s", json.dumps(summary, default=str))
    head = f"custseg run {summary['run_id']}"
    if summary.get("as_of"):
        head += f", as of {summary['as_of']}"
    lines = [f"{head}: finished in {summary['wall_seconds']:.1f} s"]
    for stage, seconds in summary.get("timings", {}).items():
        result = summary.get("results", {}).get(stage, {})
        lines.append(f"  {stage:<10}{seconds:>8.1f} s  {_describe(stage, result)}")
    if summary.get("tables"):
        lines.append(f"tables under {summary['output_root']}:")
        for name, t in summary["tables"].items():
            lines.append(f"  {name:<20}{t['rows']:>14,} rows  (version {t['version']})")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
