"""The `quarry` command line: a thin layer over the DAG specs.

    quarry list
    quarry run DAG --input PATH_OR_GLOB --output DIR [--source NAME] [--config FILE.yaml]
               [--set key=value ...] [--overwrite | --resume] [-- BEAM_OPTIONS...]
    quarry inspect DIR [--sql QUERY]
    quarry decontam --bench BENCH --input PATH_OR_GLOB --output DIR [--action drop|flag] [--set ...] [-- BEAM...]
    quarry demo --output DIR
    quarry selfcheck DIR [--work DIR] [--limit N]
    quarry compact DIR [--target-mb MB] [--row-group-mb MB]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

from quarry.schemas.config import ConfigError, annotated_yaml

EPILOG = """\
examples:
  quarry demo --output /tmp/quarry-demo
  quarry run caption --input 'shards/*.tar' --output out/caption --source laion \\
      --set clip.pretrained=/models/vit-b-32.safetensors --set balance.t=20000
  quarry run caption --input data.parquet --output out/c --workers 2
  quarry inspect out/caption --sql "SELECT tier, count(*) FROM shards GROUP BY tier"
  quarry decontam --bench 'benchmarks/*.parquet' --input out/caption --output out/clean
  quarry run grade --input s.jsonl --output out/g --set rollouts=r.jsonl --set decontam.bench=bench/
  quarry run grade --input out/gui --output out/gui-graded --set rollouts=rollouts.jsonl
  quarry selfcheck out/gui
  quarry compact out/caption --target-mb 500

Everything after `--` goes to Beam unchanged (--runner=DataflowRunner, --project, ...); with
--runner=DataflowRunner every --input and --output must be remote (gs://...), checked before submission.
Config keys: `quarry run DAG --show-config` prints every key with its default.
"""


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("quarry")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "(not installed)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quarry",
        description="Apache Beam DAGs that build multimodal training data: Parquet shards tagged by "
                    "source and difficulty tier, a rejects table and a manifest that accounts for every input.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"quarry {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("list", help="the DAGs, their stages and the reject reasons each stage can give")

    run = sub.add_parser("run", help="run one DAG", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("dag", help="DAG name (see `quarry list`)")
    run.add_argument("--input", "-i", action="append", default=[], metavar="PATH_OR_GLOB",
                     help="input file, directory or glob (local, gs://, s3://); repeatable")
    run.add_argument("--output", "-o", metavar="DIR", help="run directory to write")
    run.add_argument("--source", help="source tag for the whole input (a record's own `source` field wins)")
    run.add_argument("--config", "-c", metavar="FILE.yaml", help="YAML config (keys as in --show-config)")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="override one config value, e.g. --set clip.threshold=0.28; repeatable")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in --output")
    run.add_argument("--resume", action="store_true",
                     help="finish a killed or interrupted run in --output (same DAG, config and inputs): inputs it "
                          "committed are kept, only the rest is written; a finished run is left as it is. "
                          "DAGs that resume: caption, documents")
    _workers_option(run)
    run.add_argument("--plan-only", metavar="GRAPH.pb",
                     help="build the job graph, save it (Beam runner-API proto) and exit: nothing runs, nothing is "
                          "written to --output (the offline counterpart of Dataflow's --dry_run)")
    run.add_argument("--show-config", action="store_true", help="print the resolved config as YAML and exit")

    ins = sub.add_parser("inspect", help="summarise a run's shards and rejects with DuckDB")
    ins.add_argument("dir", help="run directory")
    ins.add_argument("--sql", help="a query over the views `shards`, `rejects` (and `images`)")
    ins.add_argument("--limit", type=int, default=100, help="rows to print for --sql (default 100)")

    dc = sub.add_parser("decontam", help="check rows (a run's shards, Parquet or JSONL) against benchmark sets; "
                                         "the same as `quarry run decontam --set decontam.bench=...`")
    dc.add_argument("--bench", "-b", action="append", default=[], required=True, metavar="PATH_OR_GLOB",
                    help="benchmark Parquet/JSONL files, folders or globs; repeatable")
    dc.add_argument("--input", "-i", action="append", default=[], metavar="PATH_OR_GLOB",
                    help="a quarry run directory (its data/ shards), Parquet or JSONL; repeatable")
    dc.add_argument("--output", "-o", required=True, metavar="DIR")
    dc.add_argument("--action", choices=("drop", "flag"), help="drop (default): contaminated rows become rejects; "
                                                                "flag: kept with contamination columns")
    dc.add_argument("--source", help="source tag for rows without a `source` column")
    dc.add_argument("--config", "-c", metavar="FILE.yaml")
    dc.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="e.g. --set decontam.max_hamming=6 --set decontam.columns.mmmu.question=prompt")
    dc.add_argument("--overwrite", action="store_true")
    _workers_option(dc)

    sc = sub.add_parser("selfcheck", help="grade a run's RL rows with their own answers (all must score 1) and "
                                           "with perturbed answers (none may score 1), per task")
    sc.add_argument("dir", help="run directory of an RL-producing DAG (gui, ocr_search, imagemining, svg)")
    sc.add_argument("--work", metavar="DIR", help="where rollouts, the graded run and selfcheck.json go "
                                                  "(default: a new temporary folder)")
    sc.add_argument("--limit", type=int, metavar="N", help="check the first N RL rows only")

    cp = sub.add_parser(
        "compact", help="rewrite a finished run's many small shards (caption: one per input file) as few large "
                        "ones, in place and atomically; rows, schema, codecs and row order unchanged",
        description=COMPACT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    cp.add_argument("dir", help="a finished run directory (manifest.json, no _INCOMPLETE, no run holding its lock)")
    cp.add_argument("--target-mb", type=float, default=500, metavar="MB",
                    help="shard size to aim for, per source/tier folder (default 500; the last shard of a folder "
                         "holds what is left)")
    cp.add_argument("--row-group-mb", type=float, default=100, metavar="MB",
                    help="row group size to aim for (default 100), at most the run's shards.row_group_size rows")

    demo = sub.add_parser("demo", help="run the DAGs on the sample data shipped with quarry (offline)")
    demo.add_argument("--output", "-o", required=True, metavar="DIR")
    demo.add_argument("--overwrite", action="store_true")
    return p


COMPACT_HELP = """\
Rewrite the shards of a finished run so that each source=<s>/tier=<t> folder of data/ (and rejects/,
images/ where the run has them) holds shards of about --target-mb, with row groups of about
--row-group-mb (by the writer's byte estimate, at most shards.row_group_size rows).

Kept as they were: every row, the schema (with its `datasets` features), each column's codec (encoded
images stay uncompressed), and the row order: a folder's old shards are read in shard order, so a
reader sees the same sequence (caption: input file, then input order). Names follow the writer's
contract, <dag>-<nnnnn>-of-<NNNNN>.parquet, numbered anew per folder. The same run compacted twice,
or two equal runs compacted, give the same bytes.

Safe to kill: new shards are written to DIR/.quarry/compact/, their rows counted and their ids read
back against the old files, then each table's folder is swapped in one atomic step and the manifest
(same counts, plus a note and extra.compaction) replaced. Killed before the swap, the old layout is
untouched; killed during it, each table is wholly old or wholly new, and the next `quarry compact DIR`
finishes the swap first. The per-input resume markers (DIR/.quarry/done/) name the old files and are
removed: the run is finished, so `quarry run ... --resume` on it says "already complete".
Needs free disk for one more copy of the tables until the swap; contamination/ is left as it is.

Refused (one line, nothing changed): a directory without manifest.json, one marked _INCOMPLETE
(finish it with --resume first), one a running run holds (its .quarry.lock), one whose files do not
hold the rows its manifest counts, and remote (gs://, s3://) directories.

example:
  quarry compact out/caption                  # 2,000 per-input shards -> a few of ~500 MB per folder
"""


def _workers_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", "-w", type=int, metavar="N",
                   help="DirectRunner worker processes (N > 1 is shorthand for the Beam options "
                        "--direct_num_workers=N --direct_running_mode=multi_processing)")


def with_workers(workers: Optional[int], beam_args: list[str]) -> list[str]:
    """`--workers N` as the DirectRunner's multi-process options; refused beside another runner or worker count."""
    if workers is None:
        return beam_args
    if workers < 1:
        raise ValueError(f"--workers {workers}: give 1 or more")
    if any(a.startswith("--direct_num_workers") for a in beam_args):
        raise ValueError("--workers and the Beam option --direct_num_workers both set the worker count: pass one")
    runner = next((a.split("=", 1)[1] for a in beam_args if a.startswith("--runner=")), "DirectRunner")
    if runner.lower() not in ("directrunner", "direct"):
        raise ValueError(f"--workers sets DirectRunner processes; with --runner={runner} size the workers "
                         "with that runner's own options")
    if workers == 1:
        return beam_args
    return [*beam_args, f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]


def _split_beam_args(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def _fail(msg: str) -> int:
    print(f"quarry: error: {msg}", file=sys.stderr)
    return 2


def cmd_list() -> int:
    from quarry.dags.registry import DAGS

    for spec in DAGS.values():
        print(f"{spec.name:<12} {spec.summary}")
        for stage in spec.stages:
            print(f"    {stage.name:<11} {stage.what}")
            if stage.where:
                print(f"    {'':<11} in: {stage.where}")
            if stage.reasons:
                as_stage = f" (as stage {stage.rejects_as})" if stage.rejects_as else ""
                print(f"    {'':<11} rejects{as_stage}: {', '.join(stage.reasons)}")
    return 0


def cmd_run(args: argparse.Namespace, beam_args: list[str]) -> int:
    import difflib

    from quarry.dags.registry import DAG_NAMES, config_model
    from quarry.schemas.config import resolve

    # name and config first, from schemas alone: a typo is answered before Beam and the DAG modules load
    if args.dag not in DAG_NAMES:
        close = difflib.get_close_matches(args.dag, DAG_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return _fail(f"unknown DAG {args.dag!r}{hint}; known: {', '.join(DAG_NAMES)}")
    try:
        cfg = resolve(config_model(args.dag), args.config, args.sets, args.source)
    except ConfigError as e:
        return _fail(str(e))
    if args.show_config:
        print(annotated_yaml(cfg))
        return 0
    if not args.output:
        return _fail("--output DIR is required")
    try:
        beam_args = with_workers(args.workers, beam_args)
    except ValueError as e:
        return _fail(str(e))

    from quarry.dags.registry import DAGS
    from quarry.dags.runner import DataLossError, UsageError, run_dag
    from quarry.pipelines.read import InputError

    spec = DAGS[args.dag]
    if args.plan_only:
        from quarry.dags.runner import plan_only

        try:
            n, hinted = plan_only(spec, args.input, args.output, cfg, args.plan_only, beam_args)
        except (ConfigError, InputError, UsageError) as e:
            return _fail(str(e))
        print(f"{spec.name}: job graph of {n} transforms ({hinted} with resource hints) -> {args.plan_only}; "
              f"nothing ran, nothing was written to {args.output}")
        return 0
    try:
        t0 = time.monotonic()
        manifest = run_dag(spec, args.input, args.output, cfg, overwrite=args.overwrite, beam_args=beam_args,
                           resume=args.resume, interruptible=True)
    except (ConfigError, InputError, UsageError) as e:
        return _fail(str(e))
    except DataLossError as e:
        _fail(str(e))
        return 1
    print(f"{spec.name}: inputs={manifest.inputs} kept={manifest.kept} rejected={manifest.rejected_total} "
          f"in {time.monotonic() - t0:.1f}s -> {args.output}")
    for note in manifest.notes:
        print(f"NOTE: {note}")
    if manifest.balanced is False:
        print("quarry: error: the manifest does not add up (inputs != kept + rejected)", file=sys.stderr)
        return 1
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import duckdb

    from quarry.dags.inspect import run_sql, summary

    try:
        print(run_sql(args.dir, args.sql, args.limit) if args.sql else summary(args.dir))
    except FileNotFoundError as e:
        return _fail(str(e))
    except duckdb.Error as e:  # bad SQL: one line, as every other mistake
        return _fail(str(e).splitlines()[0])
    return 0


def cmd_decontam(args: argparse.Namespace, beam_args: list[str]) -> int:
    try:
        beam_args = with_workers(args.workers, beam_args)
    except ValueError as e:
        return _fail(str(e))
    from quarry.dags import decontam
    from quarry.dags.runner import DataLossError, UsageError, resolve_config, run_dag
    from quarry.pipelines.read import InputError

    sets = [f"decontam.bench={','.join(args.bench)}"] + (
        [f"decontam.action={args.action}"] if args.action else []) + args.sets
    try:
        cfg = resolve_config(decontam.SPEC, args.config, sets, args.source)
        t0 = time.monotonic()
        manifest = run_dag(decontam.SPEC, args.input, args.output, cfg, overwrite=args.overwrite, beam_args=beam_args,
                           interruptible=True)
    except (ConfigError, InputError, UsageError) as e:
        return _fail(str(e))
    except DataLossError as e:
        _fail(str(e))
        return 1
    found = manifest.extra.get("contamination", {})
    print(f"decontam: inputs={manifest.inputs} kept={manifest.kept} rejected={manifest.rejected_total} "
          f"contaminated rows={found.get('rows_contaminated', 0)} in {time.monotonic() - t0:.1f}s -> {args.output}")
    for bench, n in found.get("by_benchmark", {}).items():
        print(f"    {bench}: {n} match(es)")
    for note in manifest.notes:
        print(f"NOTE: {note}")
    return 1 if manifest.balanced is False else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from quarry.dags.demo import run_demo
    from quarry.dags.runner import UsageError

    try:
        return run_demo(args.output, overwrite=args.overwrite)
    except (ConfigError, UsageError) as e:
        return _fail(str(e))


def cmd_selfcheck(args: argparse.Namespace, beam_args: list[str]) -> int:
    from quarry.dags.runner import DataLossError, UsageError
    from quarry.dags.selfcheck import selfcheck
    from quarry.pipelines.read import InputError

    try:
        report = selfcheck(args.dir, args.work, args.limit, beam_args)
    except (FileNotFoundError, ConfigError, InputError, UsageError, DataLossError) as e:
        return _fail(str(e))
    print(report.table())
    return 0 if report.ok else 1


def cmd_compact(args: argparse.Namespace) -> int:
    from quarry.dags.compact import compact
    from quarry.dags.runner import DataLossError, UsageError

    try:
        report = compact(args.dir, args.target_mb, args.row_group_mb)
    except UsageError as e:
        return _fail(str(e))
    except DataLossError as e:
        _fail(str(e))
        return 1
    except OSError as e:  # a full disk, a folder without write permission: one line, the journal says the rest
        return _fail(f"compact: {args.dir}: {e}")
    if report.recovered:
        print(f"NOTE: {report.recovered}")
    print(report.line())
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, beam_args = _split_beam_args(argv)
    args = _parser().parse_args(own)
    if args.command == "list":
        return cmd_list()
    if args.command == "run":
        return cmd_run(args, beam_args)
    if args.command == "inspect":
        return cmd_inspect(args)
    if args.command == "demo":
        return cmd_demo(args)
    if args.command == "decontam":
        return cmd_decontam(args, beam_args)
    if args.command == "selfcheck":
        return cmd_selfcheck(args, beam_args)
    if args.command == "compact":
        return cmd_compact(args)
    _parser().print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
