#!/usr/bin/env python3
"""Medians per tool and metric from bench/run.sh's raw.csv, with ratios to restic.

    summarize.py raw.csv
"""

import csv
import os
import statistics
import sys

COLUMNS = [("first_s", "first s"), ("first_synced_s", "first, synced s"), ("nochange_s", "no change s"),
           ("daychange_s", "day of change s"), ("restore_s", "restore s"), ("restore_synced_s", "restore, synced s"),
           ("check_s", "check s"), ("repo_mib", "repo MiB"),
           ("stored_day_mib", "day stored MiB"), ("small_first_s", "small files first s"),
           ("small_nochange_s", "small files no change s"), ("small_restore_s", "small files restore s")]
RSS = ["first_rss_mib", "daychange_rss_mib", "restore_rss_mib"]
SMALL_RSS = ["small_first_rss_mib", "small_nochange_rss_mib", "small_restore_rss_mib"]


def header(columns, extra):
    names = [c[1] for c in columns] + extra
    print("| tool | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")


def main():
    values, notes, failures = {}, {}, []
    with open(sys.argv[1]) as f:
        for r in csv.DictReader(f):
            key = (r["tool"], r["metric"])
            if r["metric"].endswith("_check"):
                notes.setdefault(key, set()).add(r["value"])
            elif r["metric"].endswith("_failed"):
                failures.append("round %s %s %s exited %s" % (r["round"], r["tool"], r["metric"][:-7], r["value"]))
            else:
                values.setdefault(key, []).append(float(r["value"]))
    tools = list(dict.fromkeys(t for t, _ in values))
    rounds = max((len(v) for v in values.values()), default=0)

    def median(tool, metric):
        v = values.get((tool, metric))
        return statistics.median(v) if v else None

    print("Medians of %d round(s); in brackets the ratio to restic (below 1 is better). \"synced\":"
          " until a sync after the step returned (its writes on the device).\n" % rounds)
    header(COLUMNS, ["peak RSS MiB", "small files peak RSS MiB"])
    for tool in tools:
        cells = []
        for metric, _ in COLUMNS:
            m, base = median(tool, metric), median("restic", metric)
            if m is None:
                cells.append("-")
            elif tool != "restic" and base:
                cells.append("%g (%.2f×)" % (m, m / base))
            else:
                cells.append("%g" % m)
        peak = max((median(tool, k) or 0) for k in RSS)
        small_peak = max((median(tool, k) or 0) for k in SMALL_RSS)
        print("| %s | %s | %d | %d |" % (tool, " | ".join(cells), peak, small_peak))
    encrypted = [t for t in tools if t.startswith("snapshot-aes")]
    if "snapshot" in tools and encrypted:
        print("\nEncrypted against plain snapshot (ratio of medians; the goal is at most 1.15×):\n")
        timed = [c for c in COLUMNS if c[0].endswith("_s")]
        header(timed, [])
        for tool in encrypted:
            ratios = [(median(tool, m), median("snapshot", m)) for m, _ in timed]
            print("| %s | %s |" % (tool, " | ".join("%.2f×" % (m / b) if m is not None and b else "-" for m, b in ratios)))
    print()
    for (tool, metric), seen in sorted(notes.items()):
        print("%s %s: %s" % (tool, metric.replace("_check", ""), ", ".join(sorted(seen))))
    for line in failures:
        print("FAILED: " + line)
    # What run.sh found about the machine that bears on the figures.
    warnings = os.path.join(os.path.dirname(os.path.abspath(sys.argv[1])), "warnings.txt")
    if os.path.exists(warnings):
        with open(warnings) as f:
            print(f.read().strip())
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
