#!/usr/bin/env bash
# The S3 backend beside the local one on the same data (a benchmark, not a test):
#
#   bench/s3.sh BIN DATASET WORK
#
# Per round, with a fresh moto server (moto[server] from .build/venv) on loopback: a first
# create of DATASET into a local and an S3 repository, a second after one day of change
# (bench/mutate_dataset.py), verify --read-data, restore --target, and copy local → S3 (then
# again: nothing to send). Prints each step's seconds and S3 requests, then medians with the
# ratio S3 / local. ROUNDS=3 by default.
set -euo pipefail
BIN=$1 DATASET=$2 WORK=$3
ROUNDS=${ROUNDS:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
MOTO=$HERE/../.build/venv/bin/moto_server
[ -x "$MOTO" ] || { echo "bench/s3.sh: $MOTO missing (make test installs it)" >&2; exit 64; }
mkdir -p "$WORK"
RESULTS=$WORK/s3-results.txt
: > "$RESULTS"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
unset AWS_PROFILE AWS_ENDPOINT_URL_S3 SNAPSHOT_REPO SNAPSHOT_CONFIG || true

step() {  # step NAME BACKEND -- command...
    local name=$1 backend=$2; shift 3
    local t0 t1 requests
    t0=$(date +%s.%N)
    "$BIN" "$@" --debug > "$WORK/out" 2> "$WORK/err" || { echo "bench/s3.sh: $name $backend failed:" >&2; tail -3 "$WORK/err" >&2; exit 1; }
    t1=$(date +%s.%N)
    requests=$(grep -o 'S3 requests: [^;]*' "$WORK/err" | sed 's/S3 requests: //; s/, /,/g; s/ /=/g' || true)
    printf "%s %s %s %s\n" "$name" "$backend" "$(awk "BEGIN { printf \"%.3f\", $t1 - $t0 }")" "${requests:--}" | tee -a "$RESULTS"
}

for round in $(seq 1 "$ROUNDS"); do
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$MOTO" -H 127.0.0.1 -p "$port" > "$WORK/moto.log" 2>&1 &
    moto=$!
    trap 'kill $moto 2>/dev/null || true' EXIT
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    export AWS_ENDPOINT_URL=http://127.0.0.1:$port
    rm -rf "$WORK/src" "$WORK/local" "$WORK/restore" "$WORK/back"
    cp -a "$DATASET" "$WORK/src"
    declare -A repo=([local]=$WORK/local [s3]=s3://bench/round$round)
    for b in local s3; do "$BIN" --repo "${repo[$b]}" init > /dev/null; done
    for b in local s3; do step create-first "$b" -- --repo "${repo[$b]}" create --path "$WORK/src"; done
    python3 "$HERE/mutate_dataset.py" "$WORK/src" --seed 1 > /dev/null
    for b in local s3; do step create-daychange "$b" -- --repo "${repo[$b]}" create --path "$WORK/src"; done
    for b in local s3; do step verify-read-data "$b" -- --repo "${repo[$b]}" verify --all --read-data; done
    for b in local s3; do
        rm -rf "$WORK/restore"
        step restore "$b" -- --repo "${repo[$b]}" restore --snapshot latest --target "$WORK/restore"
    done
    step copy-local-to-s3 s3 -- --repo "$WORK/local" copy --to "s3://bench/copy$round"
    step copy-again s3 -- --repo "$WORK/local" copy --to "s3://bench/copy$round"
    step copy-s3-to-local local -- --repo "s3://bench/copy$round" copy --to "$WORK/back"
    kill "$moto"; wait "$moto" 2>/dev/null || true
    rm -rf "$WORK/restore" "$WORK/back"
done

python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, backend, secs, requests = line.split()
    rows.setdefault((name, backend), []).append((float(secs), requests))
print(f"\n{'step':20} {'backend':8} {'median s':>9}  requests (last round)")
for (name, backend), v in rows.items():
    print(f"{name:20} {backend:8} {statistics.median(s for s, _ in v):9.2f}  {v[-1][1]}")
print()
for name in ["create-first", "create-daychange", "verify-read-data", "restore"]:
    if (name, "local") in rows and (name, "s3") in rows:
        l = statistics.median(s for s, _ in rows[(name, "local")])
        s = statistics.median(s for s, _ in rows[(name, "s3")])
        print(f"{name:20} S3/local = {s / l:.2f}")
PY
