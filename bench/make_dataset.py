#!/usr/bin/env python3
"""Writes a deterministic benchmark tree shaped like the host snapshot backs up.

    make_dataset.py OUT [--size-mb 1024] [--seed 42]      the mixed tree (default)
    make_dataset.py OUT --small-files 200000 [--seed 42]  many small files only

The mixed tree, by share of --size-mb:
    storage/  a Qdrant-like vector database (70 %): collections with segments holding
              float32 vectors in 32 MiB chunk_N.mmap files (about 8 % of the vectors
              repeated), id trackers, payload JSON lines, write-ahead logs (one of them
              preallocated and sparse), aliases and raft state
    models/   bf16 weights (15 %): one file, an exact copy in archive/, and a fine-tune
              that keeps most of its bytes behind a longer header; metadata and state
    logs/     timestamped text logs (15 %)
    configs/, workers/, snapshots/ (empty)
plus the edge cases a backup tool must restore exactly: a symlink, a hard link pair, an
empty file, an empty directory, a 0600 file, names with spaces and UTF-8, a *.tmp file.

Everything (bytes, names, modes, mtimes) is a function of the arguments alone; only the
Python standard library is used.
"""

import argparse
import json
import os
import random
import shutil
import sys

MiB = 1 << 20
NOW = 1764547200  # 2025-12-01T00:00:00Z: every mtime is before this
DIM = 384
VECTOR = DIM * 4
CHUNK = (32 * MiB // VECTOR) * VECTOR
COLLECTIONS = ["agent_memory", "task_history", "tool_catalog", "conversations", "documents",
               "code_index", "error_patterns", "worker_profiles", "prompts", "knowledge"]
WORKERS = ["planner", "coder", "reviewer", "researcher"]
VOCABULARY = ("agent worker task tool call memory vector query context prompt model token "
              "latency retry queue broker topic message publish subscribe payload embedding "
              "score router planner reviewer summary chunk segment collection snapshot "
              "restore config health status error timeout success pending running done "
              "cache batch stream window user system assistant result plan step").split()

# float32 values in (-2, 2): the high byte of each is one of a few exponent bytes, so
# the data is as incompressible as real embeddings, not as random bytes.
EXPONENT = bytes((0x3C, 0x3D, 0x3E, 0x3F, 0xBC, 0xBD, 0xBE, 0xBF)[b % 8] for b in range(256))
# bf16 weights: the same idea, one exponent byte in two.
BF16_HIGH = bytes((0x3B, 0x3C, 0x3D, 0xBB, 0xBC, 0xBD)[b % 6] for b in range(256))


class Tree:
    def __init__(self, root, rnd):
        self.root = root
        self.rnd = rnd

    def path(self, rel):
        p = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def write(self, rel, data, age_days=1.0, mode=0o644):
        p = self.path(rel)
        with open(p, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        os.chmod(p, mode)
        t = NOW - int(age_days * 86400)
        os.utime(p, (t, t))
        return p


def vectors(rnd, count):
    raw = bytearray(rnd.randbytes(count * VECTOR))
    raw[3::4] = bytes(raw[3::4]).translate(EXPONENT)
    # Repeated points (re-embedded identical text): copy earlier vectors over later ones.
    for _ in range(count // 12):
        a, b = rnd.randrange(count), rnd.randrange(count)
        raw[b * VECTOR:(b + 1) * VECTOR] = raw[a * VECTOR:(a + 1) * VECTOR]
    return bytes(raw)


def words(rnd, n):
    return " ".join(rnd.choice(VOCABULARY) for _ in range(n))


def iso(ts):
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".%03dZ" % (ts * 1000 % 1000)


def payload_lines(rnd, first_id, count, collection):
    out = []
    for i in range(first_id, first_id + count):
        out.append(json.dumps({
            "id": i, "collection": collection, "text": words(rnd, rnd.randint(20, 60)),
            "source": rnd.choice(["mqtt", "github", "slack", "web", "cli"]),
            "created": iso(NOW - rnd.randint(3600, 90 * 86400)), "score": round(rnd.random(), 4),
            "tags": rnd.sample(["urgent", "retry", "rag", "tool", "eval", "user", "code"], 2),
        }, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode()


def make_storage(t, budget):
    rnd = t.rnd
    per_collection = budget // len(COLLECTIONS)
    for c, name in enumerate(COLLECTIONS):
        # A skewed split: a few large collections, several small ones.
        share = per_collection * (2.2 if c < 3 else 0.45)
        vector_bytes = int(share * 0.82)
        segments = 2 if vector_bytes > 40 * MiB else 1
        next_id = 1
        for s in range(segments):
            seg = "storage/collections/%s/segments/%08x-%04x-4%03x-a%03x-%012x" % (
                name, rnd.getrandbits(32), rnd.getrandbits(16), rnd.getrandbits(12), rnd.getrandbits(12), rnd.getrandbits(48))
            count = max(64, vector_bytes // segments // VECTOR)
            data = vectors(rnd, count)
            for k in range(0, len(data), CHUNK):
                t.write("%s/vector_storage/vectors/chunk_%d.mmap" % (seg, k // CHUNK), data[k:k + CHUNK], age_days=rnd.uniform(0.5, 20))
            t.write(seg + "/id_tracker/mappings.bin", b"".join(i.to_bytes(8, "little") * 2 for i in range(next_id, next_id + count)), age_days=2)
            t.write(seg + "/id_tracker/versions.bin", rnd.randbytes(count * 8), age_days=2)
            lines = payload_lines(rnd, next_id, max(1, int(share * 0.12) // 420 // segments), name)
            t.write(seg + "/payload_storage/payloads.jsonl", lines, age_days=2)
            t.write(seg + "/segment.json", json.dumps({"version": 4, "vectors": count, "dim": DIM, "distance": "Cosine", "on_disk": True}, indent=2), age_days=2)
            next_id += count
        wal = "storage/collections/%s/wal" % name
        wal_bytes = max(64 * 1024, int(share * 0.04))
        t.write(wal + "/open-1", rnd.randbytes(wal_bytes // 2) + bytes(wal_bytes // 2), age_days=0.2)
        t.write(wal + "/closed-0", rnd.randbytes(wal_bytes // 3), age_days=3)
        t.write("storage/collections/%s/config.json" % name, json.dumps({"params": {"vectors": {"size": DIM, "distance": "Cosine"}, "shard_number": 1}}, indent=2))
    # Qdrant preallocates its next WAL segment: apparent size only.
    sparse = t.path("storage/collections/agent_memory/wal/open-2")
    with open(sparse, "wb") as f:
        f.truncate(min(32, budget // MiB // 32 + 1) * MiB)
    os.utime(sparse, (NOW - 600, NOW - 600))
    t.write("storage/aliases/data.json", json.dumps({"memory": "agent_memory", "history": "task_history"}))
    t.write("storage/raft_state.json", json.dumps({"term": 7, "commit": 1931, "peers": {"1": "127.0.0.1:6335"}}))
    t.write("storage/collections/agent_memory/.lock", b"", age_days=0.01)


def bf16(rnd, n):
    raw = bytearray(rnd.randbytes(n))
    raw[1::2] = bytes(raw[1::2]).translate(BF16_HIGH)
    return bytes(raw)


def make_models(t, budget):
    rnd = t.rnd
    body_len = max(MiB, int(budget * 0.33)) & ~1  # three files share it
    header = json.dumps({"__metadata__": {"format": "pt"}, "weight": {"dtype": "BF16", "shape": [body_len // 2], "data_offsets": [0, body_len]}}).encode()
    body = bf16(rnd, body_len)
    weights = len(header).to_bytes(8, "little") + header + body
    t.write("models/weights/router-v4.safetensors", weights, age_days=30)
    t.write("models/archive/router-v4-2025-10-30.safetensors", weights, age_days=30)
    # The fine-tune: a longer header moves every byte; four regions retrained.
    tuned = bytearray(body)
    for _ in range(4):
        at = rnd.randrange(0, len(tuned) - len(tuned) // 40)
        tuned[at:at + len(tuned) // 40] = bf16(rnd, len(tuned) // 40)
    header2 = json.dumps({"__metadata__": {"format": "pt", "base": "router-v4", "lora": "merged"}, "weight": {"dtype": "BF16", "shape": [body_len // 2], "data_offsets": [0, body_len]}}).encode()
    t.write("models/weights/router-v4-ft.safetensors", len(header2).to_bytes(8, "little") + header2 + bytes(tuned), age_days=5)
    for m in ["router-v4", "router-v4-ft", "embedder-small"]:
        t.write("models/metadata/%s.json" % m, json.dumps({"name": m, "params": rnd.randint(10**8, 10**9), "context": 8192, "license": "apache-2.0"}, indent=2), age_days=10)
        t.write("models/state/%s.json" % m, json.dumps({"loaded": True, "requests": rnd.randint(1000, 90000), "p50_ms": round(rnd.uniform(20, 90), 1)}, indent=2), age_days=0.1)
    t.write("models/registry.yaml", "models:\n" + "".join("  - {name: %s, path: weights/%s.safetensors}\n" % (m, m) for m in ["router-v4", "router-v4-ft"]))
    os.symlink("weights/router-v4.safetensors", t.path("models/current.safetensors"))
    os.link(t.path("models/metadata/router-v4.json"), t.path("models/metadata/router-v4.hardlink.json"))


def make_logs(t, budget):
    rnd = t.rnd
    for name, share in [("orchestrator.log", 0.5), ("workers.log", 0.35), ("system.log", 0.15)]:
        lines, size, ts = [], 0, NOW - 7 * 86400
        target = int(budget * share)
        while size < target:
            ts += rnd.randint(1, 9)
            line = "%s %-5s [%s] %s\n" % (iso(ts), rnd.choice(["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]),
                                          rnd.choice(WORKERS + ["broker", "qdrant"]), words(rnd, rnd.randint(6, 24)))
            lines.append(line)
            size += len(line)
        t.write("logs/" + name, "".join(lines), age_days=0.01)


def make_small_files(t, count):
    rnd = t.rnd
    for i in range(count):
        d = "tree/%02x/%02x" % (i % 97, (i // 97) % 61)
        size = int(rnd.paretovariate(1.3) * 300) % 16384
        kind = i % 4
        data = words(rnd, size // 6).encode() if kind else rnd.randbytes(size)
        t.write("%s/item-%06d.%s" % (d, i, "json" if kind else "bin"), data[:size], age_days=rnd.uniform(0, 60))


def make_rest(t):
    rnd = t.rnd
    t.write("configs/system.yaml", "mqtt:\n  broker: mqtt://127.0.0.1:1883\n  client_id: orchestrator\nqdrant:\n  url: http://127.0.0.1:6333\n  api_key: qd-%s\n" % rnd.randbytes(12).hex(), age_days=40)
    t.write("configs/models.yaml", "default: router-v4\nfallback: embedder-small\nmax_tokens: 4096\n", age_days=12)
    t.write("configs/mcp.yaml", "servers:\n" + "".join("  - {name: %s, url: http://127.0.0.1:%d}\n" % (w, 7000 + i) for i, w in enumerate(WORKERS)), age_days=12)
    t.write("configs/secrets.env", "OPENAI_API_KEY=sk-%s\n" % rnd.randbytes(20).hex(), mode=0o600, age_days=40)
    t.write("configs/user preferences.yaml", "theme: dark\nlanguage: de\nnotify: [email, mqtt]\n", age_days=3)
    t.write("configs/überblick.md", "# Überblick\nDie Agenten und ihre Rollen.\n", age_days=3)
    t.write("configs/render.yaml.tmp", "partial: true\n", age_days=0.01)
    for w in WORKERS:
        t.write("workers/%s/status.json" % w, json.dumps({"worker": w, "state": "idle", "tasks_done": rnd.randint(10, 900)}), age_days=0.01)
        t.write("workers/%s/health.json" % w, json.dumps({"worker": w, "ok": True, "rss_mb": rnd.randint(200, 900)}), age_days=0.01)
    t.write("workers/planner/queue.empty", b"", age_days=0.5)
    os.makedirs(os.path.join(t.root, "snapshots"))


def set_directory_times(root):
    for dirpath, _, _ in sorted(os.walk(root), key=lambda w: -w[0].count(os.sep)):
        os.utime(dirpath, (NOW - 3600, NOW - 3600))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--small-files", type=int, default=0, help="write only N small files")
    args = ap.parse_args()
    if os.path.exists(args.out):
        sys.exit("make_dataset.py: %s exists; remove it first" % args.out)
    os.umask(0o022)
    tmp = args.out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    t = Tree(tmp, random.Random(args.seed))
    if args.small_files:
        make_small_files(t, args.small_files)
    else:
        budget = args.size_mb * MiB
        make_rest(t)
        make_storage(t, int(budget * 0.70))
        make_models(t, int(budget * 0.15))
        make_logs(t, int(budget * 0.15))
    set_directory_times(tmp)
    os.rename(tmp, args.out)


if __name__ == "__main__":
    main()
