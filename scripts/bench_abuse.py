"""Run each hostile client of issue 20 against a server on loopback while a demonstrator plays and talks; print the
table (attack, inputs sent, bystander fps / p99 / longest tick, server memory, outcome). See benchmark/abuse.py."""

from __future__ import annotations

import argparse

from benchmark.abuse import run, table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=8.0, help="how long each attack runs")
    p.add_argument("--only", nargs="*", help="run only the attacks whose name contains one of these")
    args = p.parse_args()
    rows = run(args.seconds, args.only)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
