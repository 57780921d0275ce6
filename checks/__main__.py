"""``python -m checks``: verify the statements on grids of random instances."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path


def _markdown(rows) -> str:
    lines = ["| statement | kind | configurations | violations | worst margin | vacuous | reported | claim |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        violations = "report" if r["violations"] is None else r["violations"]
        lines.append(f"| {r['statement']} | {r['kind']} | {r['configurations']} | {violations} | "
                     f"{r['worst_margin']:.3g} | {r['vacuous']} | {r['reported']} | {r['claim']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from pruning.fileio import atomic_write_text
    from checks import REGISTRY, run_all, summarise

    parser = argparse.ArgumentParser(
        prog="python -m checks",
        description="Verify the statements S1-S13 on grids of random instances: one row per statement with the "
                    "configurations tried, violations, worst margin and what is reported beside pass/fail. Exits "
                    "non-zero when a statement is violated.")
    tier = parser.add_mutually_exclusive_group()
    tier.add_argument("--quick", action="store_const", const="quick", dest="tier", help="small grids (default)")
    tier.add_argument("--full", action="store_const", const="full", dest="tier", help="large grids")
    parser.add_argument("--only", nargs="+", choices=sorted(REGISTRY), help="run only these statements")
    parser.add_argument("--json", type=Path, help="write every result as JSON")
    parser.add_argument("--markdown", type=Path, help="write the summary table as Markdown")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    args = parser.parse_args(argv)
    tier_name = args.tier or "quick"

    t0 = time.perf_counter()
    results = run_all(tier_name, args.only, progress=not args.no_progress)
    rows = summarise(results)
    table = _markdown(rows)
    print(f"checks ({tier_name} tier, {time.perf_counter() - t0:.1f} s)\n")
    print(table)
    if args.markdown:
        atomic_write_text(args.markdown, table + "\n")
    if args.json:
        payload = {cid: [dict(dataclasses.asdict(r), config_key=r.config.key()) for r in res]
                   for cid, res in results.items()}
        atomic_write_text(args.json, json.dumps(dict(tier=tier_name, summary=rows, results=payload), indent=1,
                                                default=float))
    failed = [r["statement"] for r in rows if r["violations"]]
    if failed:
        print(f"\nVIOLATED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
