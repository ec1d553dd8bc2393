"""Print a markdown table of pytest-benchmark results with ratios to a baseline per group.

Usage: python bench/report.py RESULTS.json [RESULTS2.json ...]
Within each group, every row shows its median time and its speed relative to
the other methods of the group (baseline / this: > 1 means faster).
"""
import json
import sys
from collections import defaultdict


def main(paths):
    groups = defaultdict(dict)
    machine = None
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        machine = machine or data.get("machine_info", {})
        for b in data["benchmarks"]:
            params = b.get("params") or {}
            method = params.get("method") or b["name"].split("[")[-1].rstrip("]")
            groups[b["group"]][method] = b["stats"]["median"]
    if machine:
        cpu = machine.get("cpu", {}).get("brand_raw", "?")
        print(f"machine: {cpu}, {machine.get('cpu', {}).get('count', '?')} logical CPUs, "
              f"python {machine.get('python_version', '?')}\n")
    for group, rows in groups.items():
        print(f"### {group}\n")
        names = sorted(rows, key=rows.get)
        print("| method | median | " + " | ".join(f"speed-up vs {n}" for n in names) + " |")
        print("|---|---|" + "---|" * len(names))
        for n in names:
            cells = " | ".join(f"{rows[m] / rows[n]:.2f}x" for m in names)
            print(f"| {n} | {rows[n] * 1e3:.2f} ms | {cells} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
