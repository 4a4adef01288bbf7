#!/usr/bin/env python3
"""Applies one deterministic "day of change" to a tree from make_dataset.py, in place.

    mutate_dataset.py DIR [--seed 1]

What a day on the host looks like: Qdrant updates points in place (scattered 96 KiB
rewrites inside a few vector chunks), inserts a new segment, rotates its WAL and appends
payloads; the logs grow; workers and models rewrite their small state files; a config is
edited; one file is deleted and one added. Prints one line: key=value counts.
"""

import argparse
import glob
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_dataset import NOW, VECTOR, iso, payload_lines, vectors, words  # noqa: E402

DAY = NOW + 86400


def touch(path, age_s=60):
    os.utime(path, (DAY - age_s, DAY - age_s))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    root = args.dir
    stats = {"rewritten_bytes": 0, "appended_bytes": 0, "new_files": 0, "deleted_files": 0}

    chunks = sorted(glob.glob(root + "/storage/collections/*/segments/*/vector_storage/vectors/chunk_*.mmap"))
    for path in rnd.sample(chunks, min(4, len(chunks))):
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            for _ in range(12):
                at = rnd.randrange(0, max(1, size - 96 * 1024)) // VECTOR * VECTOR
                f.seek(at)
                f.write(vectors(rnd, 96 * 1024 // VECTOR))
                stats["rewritten_bytes"] += 96 * 1024
        touch(path)

    segment = sorted(glob.glob(root + "/storage/collections/task_history/segments/*"))[0]
    new = segment[:-12] + "%012x" % rnd.getrandbits(48)
    os.makedirs(new + "/vector_storage/vectors")
    data = vectors(rnd, 3 * (1 << 20) // VECTOR)
    with open(new + "/vector_storage/vectors/chunk_0.mmap", "wb") as f:
        f.write(data)
    with open(new + "/segment.json", "w") as f:
        json.dump({"version": 4, "vectors": len(data) // VECTOR, "dim": 384}, f)
    stats["new_files"] += 2
    stats["appended_bytes"] += len(data)

    for payloads in sorted(glob.glob(root + "/storage/collections/*/segments/*/payload_storage/payloads.jsonl"))[:3]:
        lines = payload_lines(rnd, 10**7 + rnd.randrange(10**6), 200, "update")
        with open(payloads, "ab") as f:
            f.write(lines)
        stats["appended_bytes"] += len(lines)
        touch(payloads)

    for wal in sorted(glob.glob(root + "/storage/collections/*/wal/closed-0"))[:2]:
        os.unlink(wal)
        stats["deleted_files"] += 1
    for wal in sorted(glob.glob(root + "/storage/collections/*/wal/open-1"))[:3]:
        with open(wal, "r+b") as f:
            f.seek(os.path.getsize(wal) // 2)
            chunk = rnd.randbytes(256 * 1024)
            f.write(chunk)
            stats["rewritten_bytes"] += len(chunk)
        touch(wal)

    for log in sorted(glob.glob(root + "/logs/*.log")):
        text = "".join("%s INFO  [day2] %s\n" % (iso(DAY - 86400 + i * 7), words(rnd, 14)) for i in range(9000))
        with open(log, "a") as f:
            f.write(text)
        stats["appended_bytes"] += len(text)
        touch(log)

    for state in sorted(glob.glob(root + "/workers/*/*.json") + glob.glob(root + "/models/state/*.json")):
        with open(state, "w") as f:
            json.dump({"updated": iso(DAY), "value": rnd.randint(0, 10**6)}, f)
        touch(state)

    config = root + "/configs/models.yaml"
    with open(config, "a") as f:
        f.write("temperature: 0.2\n")
    touch(config)
    with open(root + "/configs/feature-flags.yaml", "w") as f:
        f.write("continuous_snapshots: true\n")
    touch(root + "/configs/feature-flags.yaml")
    stats["new_files"] += 1

    print(" ".join("%s=%d" % kv for kv in stats.items()))


if __name__ == "__main__":
    main()
