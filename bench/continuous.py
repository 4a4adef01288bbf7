#!/usr/bin/env python3
"""Continuous snapshots on a small-files tree: recovery point, cost per change, idle cost,
memory, a storm of writes; beside a normal incremental create of the same tree.

usage: continuous.py SNAPSHOT_BIN TREE WORKDIR [--changes N]

TREE is copied into WORKDIR (the bench's small-files tree: 200,000 files in 2,000
directories); the copy is watched by `snapshot watch` (debounce 1 s, max_interval 60 s).
Prints one summary line per figure and a JSON document at the end."""
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time


def main():
    args = sys.argv[1:]
    if len(args) < 3:
        sys.exit(__doc__)
    binary, tree, work = os.path.abspath(args[0]), os.path.abspath(args[1]), os.path.abspath(args[2])
    changes = int(args[args.index("--changes") + 1]) if "--changes" in args else 50
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work + "/configs")
    t0 = time.time()
    subprocess.run(["cp", "-a", tree, work + "/tree"], check=True)
    print(f"copied {tree} in {time.time() - t0:.1f} s", file=sys.stderr)
    with open(work + "/configs/snapshots.yaml", "w") as f:
        f.write("components:\n  tree: {path: tree}\ntypes:\n  system: [tree]\n"
                "continuous:\n  - {components: [tree], debounce: \"1s\", max_interval: \"60s\"}\n")
    files = []
    for d, _, names in os.walk(work + "/tree"):
        files.extend(os.path.join(d, n) for n in names)
    print(f"{len(files)} files", file=sys.stderr)

    watch = subprocess.Popen([binary, "watch"], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    lines = []
    cond = threading.Condition()

    def reader():
        for line in watch.stdout:
            with cond:
                lines.append((time.time(), line.strip()))
                cond.notify_all()

    threading.Thread(target=reader, daemon=True).start()

    def wait_lines(n, timeout=300):
        with cond:
            end = time.time() + timeout
            while len(lines) < n:
                left = end - time.time()
                if left <= 0:
                    raise SystemExit(f"timed out waiting for snapshot {n}: {lines[-1:]} {watch.stderr.read() if watch.poll() is not None else ''}")
                cond.wait(left)
            return lines[n - 1]

    t0 = time.time()
    first = wait_lines(1)
    startup = first[0] - t0
    pid = watch.pid

    def status(key):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])

    def cputime():
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    rss_after_start = status("VmRSS")
    anon_after_start = status("RssAnon")
    # One changed file at a time: from the write to the line naming its snapshot.
    rng = random.Random(7)
    latencies, durations, reads = [], [], []
    for i in range(changes):
        path = rng.choice(files)
        n = len(lines)
        t = time.time()
        with open(path, "a") as f:
            f.write(f"change {i}\n")
        at, line = wait_lines(n + 1)
        latencies.append(at - t)
        m = re.search(r"read (\d+) files? .* in ([0-9.]+) s", line)
        reads.append(int(m.group(1)))
        durations.append(float(m.group(2)))
    steady_rss = status("VmRSS")
    steady_anon, steady_file = status("RssAnon"), status("RssFile")

    # Idle: no changes for 20 s.
    c0, w0 = cputime(), status("voluntary_ctxt_switches") + status("nonvoluntary_ctxt_switches")
    time.sleep(20)
    c1, w1 = cputime(), status("voluntary_ctxt_switches") + status("nonvoluntary_ctxt_switches")
    idle_cpu = (c1 - c0) / 20 * 100

    # A storm: 100 files written over 5 s, then quiet.
    n = len(lines)
    storm = rng.sample(files, 100)
    for p in storm:
        with open(p, "a") as f:
            f.write("storm\n")
        time.sleep(0.05)
    wait_lines(n + 1)
    time.sleep(3)
    storm_snapshots = len(lines) - n
    storm_line = lines[n][1]

    peak = status("VmHWM")
    watch.send_signal(2)
    watch.wait(timeout=60)

    # The same one-file change through a normal create (walks the whole tree).
    path = rng.choice(files)
    subprocess.run([binary, "create", "--type", "system", "--quiet"], cwd=work, check=True)
    with open(path, "a") as f:
        f.write("one more\n")
    t = time.time()
    subprocess.run([binary, "create", "--type", "system", "--quiet"], cwd=work, check=True)
    incremental = time.time() - t
    t = time.time()
    ok = subprocess.run([binary, "verify", "--all"], cwd=work, capture_output=True, text=True)
    verify_s = time.time() - t

    def p(q, xs):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]

    out = {
        "files": len(files),
        "startup_scan_s": round(startup, 3),
        "latency_s": {"median": round(statistics.median(latencies), 3), "p99": round(p(0.99, latencies), 3), "max": round(max(latencies), 3)},
        "snapshot_s": {"median": round(statistics.median(durations), 4), "p99": round(p(0.99, durations), 4)},
        "files_read_per_change": {"median": statistics.median(reads), "max": max(reads)},
        "idle_cpu_percent": round(idle_cpu, 3),
        "idle_wakeups_20s": w1 - w0,
        "rss_kib": {"after_startup": rss_after_start, "steady": steady_rss, "peak": peak,
                    "anonymous_after_startup": anon_after_start, "anonymous_steady": steady_anon, "file_backed_steady": steady_file},
        "storm": {"writes": 100, "seconds": 5, "snapshots": storm_snapshots, "line": storm_line},
        "incremental_create_one_change_s": round(incremental, 3),
        "verify_all_ok": ok.returncode == 0,
        "verify_all_s": round(verify_s, 2),
        "continuous_snapshots": len(lines),
    }
    print(f"start-up scan {out['startup_scan_s']} s; write→snapshot median {out['latency_s']['median']} s, p99 {out['latency_s']['p99']} s (debounce 1 s)")
    print(f"one changed file: snapshot {out['snapshot_s']['median'] * 1000:.1f} ms median, {out['snapshot_s']['p99'] * 1000:.1f} ms p99, reading {out['files_read_per_change']['median']} file; "
          f"a normal incremental create of the same change: {incremental:.2f} s")
    print(f"idle: {idle_cpu:.3f} % of a core, {w1 - w0} wake-ups in 20 s; RSS {steady_rss / 1024:.1f} MiB steady "
          f"({steady_anon / 1024:.1f} MiB the process's own, {steady_file / 1024:.1f} MiB shared libraries), {peak / 1024:.1f} MiB peak (the start-up scan)")
    print(f"storm of 100 writes in 5 s: {storm_snapshots} snapshot(s): {storm_line}")
    print(f"verify --all of {len(lines)} continuous snapshots + 2 system: {'ok' if ok.returncode == 0 else 'FAILED'} in {verify_s:.2f} s")
    print(json.dumps(out))
    shutil.rmtree(work, ignore_errors=True)
    if ok.returncode != 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
