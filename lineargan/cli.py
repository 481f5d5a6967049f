"""``lineargan`` command: query results from Parquet alone, and check stores.

lineargan render NAME|all [--profile quick] [--results-root DIR]
    print a paper table (table1, table2, table4, table6, fig4, fig9, layerwise) of the newest
    run, rendered from its Parquet files alone
lineargan table NAME [--results-root DIR]                  print any result table
lineargan verify STORE_URL [--repair]                      check every chunk's CRC32C
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from lineargan.errors import LinearGanError
from lineargan.paths import default_results_root


def _cmd_render(args: argparse.Namespace) -> None:
    from lineargan.results import RENDERERS, render

    root = args.results_root or default_results_root()
    names = list(RENDERERS) if args.name == "all" else [args.name]
    for name in names:
        try:
            print(render(name, root, args.profile))
        except LinearGanError as exc:
            if args.name != "all":
                raise
            print(f"({name}: {exc.problem})\n")
    print(
        f"files:\n  tables   {root}/tables/  (pd.read_parquet('{root}/tables/<table>'); "
        f"index: results_index)\n  figures  {root}/figures/\n  reports  {root}/reports/\n"
        f"  fits     {root}/fits/"
    )


def _cmd_table(args: argparse.Namespace) -> None:
    from lineargan.results import load_table

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
    p = sub.add_parser("render", help="print a paper table of the newest run from Parquet")
    p.add_argument("name", help="table1, table2, table4, table6, fig4, fig9, layerwise or all")
    p.add_argument("--profile", default=None)
    p.add_argument("--results-root", default=None)
    p.set_defaults(fn=_cmd_render)
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
