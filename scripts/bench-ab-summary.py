#!/usr/bin/env python3
"""The table of a scripts/bench-ab.sh run: per bench, each build's median over its rounds of
order-to-ack p50 and p99 (ms), throughput and the floor, and B's medians as a ratio of A's.
Reads the script's output on stdin (or from the files named)."""
import json
import statistics
import sys
from collections import defaultdict

runs = defaultdict(list)  # (bench, build) -> reports
for line in (l for f in (sys.argv[1:] or ["-"]) for l in (sys.stdin if f == "-" else open(f))):
    parts = line.split(" ", 3)
    if len(parts) < 4 or parts[0] not in ("A", "B"):
        continue
    build, _round, bench, report = parts
    try:
        report = json.loads(report)
    except json.JSONDecodeError:
        continue
    runs[(bench, build)].append(report)


def ran(report):
    """A bench that printed a report (`failed` is then its count of failed orders)."""
    return report.get("failed") is not True


def median(reports, key):
    values = [key(r) for r in reports if ran(r)]
    return statistics.median(values) if values else float("nan")


print("| bench | build | runs | p50 ms | p99 ms | throughput/s | failed orders | floor p50 / p99 ms |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
benches = sorted({bench for bench, _ in runs}, key=["closed1", "open2k", "open10k", "open200k"].index)
for bench in benches:
    row = {}
    for build in ("A", "B"):
        reports = runs.get((bench, build), [])
        p50 = median(reports, lambda r: r["p50_us"] / 1000)
        p99 = median(reports, lambda r: r["p99_us"] / 1000)
        tput = median(reports, lambda r: r["throughput_per_sec"])
        failed = sum(r["failed"] for r in reports if ran(r))
        if any(not ran(r) for r in reports):
            failed = f"{failed} (and {sum(not ran(r) for r in reports)} runs without a report)"
        f50 = median(reports, lambda r: r["floor"]["p50_us"] / 1000)
        f99 = median(reports, lambda r: r["floor"]["p99_us"] / 1000)
        row[build] = (p50, p99, tput)
        each = " ".join(f"{r['p50_us']/1000:.2f}/{r['p99_us']/1000:.2f}" for r in reports if ran(r))
        print(f"| {bench} | {build} | {len(reports)} ({each}) | {p50:.2f} | {p99:.2f} | {tput:,.0f} | {failed} | {f50:.2f} / {f99:.2f} |")
    (a50, a99, at), (b50, b99, bt) = row["A"], row["B"]
    print(f"| {bench} | B/A | | {b50 / a50:.2f} | {b99 / a99:.2f} | {bt / at:.2f} | | |")
