"""``lineargan`` command: query results from Parquet alone, and check stores.

lineargan table1 [--profile quick] [--results-root DIR]   print Table 1 and the file paths
lineargan table NAME [--results-root DIR]                  print any result table
lineargan verify STORE_URL [--repair]                      check every chunk's CRC32C
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from lineargan.errors import LinearGanError
from lineargan.paths import default_results_root
from lineargan.render import per_class_markdown, table1_markdown


def load_table(name: str, results_root: str | None = None) -> pd.DataFrame:
    """Any result table as a DataFrame (all runs); see ``storage.tables`` for the schemas."""
    from storage.tables import read_table

    return read_table(results_root or default_results_root(), name)


def latest_table1(
    results_root: str | None = None, profile: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The newest run's Table 1 rows and its per-class IoU rows."""
    summary = load_table("table1", results_root)
    if profile:
        summary = summary[summary["profile"] == profile]
        if summary.empty:
            raise LinearGanError(
                f"no Table 1 rows for profile {profile!r}", "run the reproduce flow for it first"
            )
    latest = summary.sort_values("created_at").iloc[-1]["run_id"]
    summary = summary[summary["run_id"] == latest]
    iou = load_table("iou_per_class", results_root)
    iou = iou[iou["fit_key"].isin(summary["fit_key"])].drop_duplicates(["fit_key", "class_index"])
    return summary, iou


def _cmd_table1(args: argparse.Namespace) -> None:
    root = args.results_root or default_results_root()
    summary, iou = latest_table1(root, args.profile)
    print(
        f"\nTable 1 — mIoU (%), profile {summary['profile'].iloc[0]}, run {summary['run_id'].iloc[0]}\n"
    )
    print(table1_markdown(summary))
    print("\nPer-class IoU (%)\n")
    print(per_class_markdown(iou))
    print(
        f"\nfiles:\n  tables   {root}/tables/  (pd.read_parquet('{root}/tables/table1'))\n"
        f"  figures  {root}/figures/\n  reports  {root}/reports/\n  fits     {root}/fits/"
    )


def _cmd_table(args: argparse.Namespace) -> None:
    with pd.option_context("display.max_rows", 200, "display.width", 200):
        print(load_table(args.name, args.results_root))


def _cmd_verify(args: argparse.Namespace) -> None:
    from storage.feature_store import FeatureStore
    from storage.target import Target

    store = FeatureStore.open(Target(args.store))
    bad = store.verify(repair=args.repair)
    if not bad:
        print(
            f"{args.store}: all {int(store.done_mask().sum())} finished chunks pass their checksums"
        )
        return
    action = (
        "marked for recomputation (rerun the cache flow)" if args.repair else "rerun with --repair"
    )
    print(f"{args.store}: corrupt chunks {bad}; {action}")
    if not args.repair:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="lineargan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("table1", help="print the newest Table 1 from Parquet")
    p.add_argument("--profile", default=None)
    p.add_argument("--results-root", default=None)
    p.set_defaults(fn=_cmd_table1)
    p = sub.add_parser("table", help="print a result table")
    p.add_argument("name")
    p.add_argument("--results-root", default=None)
    p.set_defaults(fn=_cmd_table)
    p = sub.add_parser("verify", help="check a store's chunk checksums")
    p.add_argument("store")
    p.add_argument("--repair", action="store_true")
    p.set_defaults(fn=_cmd_verify)
    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except (LinearGanError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
