"""Average the top-1 accuracy of several `rar-tools eval` reports (e.g. one per data set), as the
RAR paper averages over its 11 data sets.

    python examples/average_reports.py results/*/report.json

Prints a Markdown table (rows: methods, columns: shots) of the mean top-1 in %, over the reports
that have each figure, and says loudly when any report was made with test weights.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from statistics import fmean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="report.json files")
    args = parser.parse_args()
    top1: dict[tuple[str, int], list[float]] = defaultdict(list)
    for path in args.reports:
        report = json.loads(path.read_text())
        if report["weights"]["test_weights"]:
            print(f"WARNING: {path} was made with test weights; its figures mean nothing")
        for figure in report["results"]:
            top1[(figure["method"], figure["shots"])].append(figure["top1"])
    methods = list(dict.fromkeys(method for method, _ in top1))
    shots = sorted({n for _, n in top1})
    print(f"Mean top-1 (%) over {len(args.reports)} reports")
    print("| method | " + " | ".join(f"{n}-shot" if n else "zero-shot" for n in shots) + " |")
    print("|---" * (len(shots) + 1) + "|")
    for method in methods:
        cells = [f"{100 * fmean(top1[(method, n)]):.1f}" if top1[(method, n)] else "–" for n in shots]
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
