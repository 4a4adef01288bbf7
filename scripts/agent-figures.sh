#!/usr/bin/env bash
# agent-figures.sh [DATASET_DIR]: measures the agent the way issue #3 asks: command-to-
# `accepted` latency over 200 pings (median, p99), idle RSS, RSS during a snapshot of
# DATASET_DIR (default: the example system), and progress messages per second.
# Uses a private mosquitto on a free port and a scratch repository; needs mosquitto(-clients).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.build/release/snapshot}
DATA=$(realpath "${1:-storage}")
WORK=$(mktemp -d /tmp/snapshot-figures-XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\nuser root\n' "$PORT" > "$WORK/m.conf"
mosquitto -c "$WORK/m.conf" >/dev/null 2>&1 &
sleep 0.3
cat > "$WORK/snapshots.yaml" <<EOT
root: $WORK
repository: $WORK/repo
components:
  data: {path: $DATA}
types:
  full: [data]
  data: [data]
EOT
"$BIN" --config "$WORK/snapshots.yaml" agent --broker "mqtt://127.0.0.1:$PORT" --id fig > "$WORK/agent.log" 2>&1 &
AGENT=$!
timeout 10 mosquitto_sub -p "$PORT" -t snapshots/status/fig/availability -C 1 >/dev/null
sleep 1
rss() { awk '/VmRSS/ {print $2}' /proc/$AGENT/status; }
echo "idle RSS: $(( $(rss) / 1024 )) MiB"

# 200 pings, one every 10 ms; the request_id carries the send time in ns. The loop starts
# once mosquitto_pub is connected, so that its start-up is not counted.
mosquitto_sub -p "$PORT" -t snapshots/status/fig/response/ping -F '%U %p' > "$WORK/acks.txt" &
SUB=$!
sleep 0.3
{ sleep 0.5; for i in $(seq 200); do echo "{\"request_id\":\"$(date +%s%N)\"}"; sleep 0.01; done; } | mosquitto_pub -p "$PORT" -t snapshots/cmd/fig/ping -q 1 -l
sleep 1
kill $SUB
python3 - "$WORK/acks.txt" <<'EOT'
import json, sys
lat = []
for line in open(sys.argv[1]):
    ts, payload = line.split(" ", 1)
    d = json.loads(payload)
    if d["status"] == "accepted":
        sec, ns = ts.split(".")
        lat.append((int(sec) * 10**9 + int(ns.ljust(9, "0")[:9]) - int(d["request_id"])) / 1e6)
lat.sort()
print("ping -> accepted over %d pings: median %.2f ms, p99 %.2f ms, max %.2f ms" % (len(lat), lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1], lat[-1]))
EOT

# A snapshot of the dataset: peak RSS sampled every 20 ms, progress messages counted.
mosquitto_sub -p "$PORT" -t snapshots/status/fig/progress > "$WORK/progress.txt" &
SUB=$!
peak=0
mosquitto_rr -V 5 -p "$PORT" -t snapshots/cmd/fig/create -e reply/fig -m '{"type":"full"}' -W 600 > "$WORK/create.json" &
RR=$!
start=$(date +%s.%N)
while kill -0 $RR 2>/dev/null; do r=$(rss); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.02; done
end=$(date +%s.%N)
sleep 0.3
kill $SUB
n=$(wc -l < "$WORK/progress.txt")
python3 -c "import json; d=json.load(open('$WORK/create.json')); print('snapshot of', d['result']['size_bytes'] // 2**20, 'MiB:', d['status'], 'in', d['result']['duration_s'], 's')"
echo "RSS during the snapshot: peak $(( peak / 1024 )) MiB"
python3 -c "print('progress messages: %d in %.2f s (%.1f/s)' % ($n, $end - $start, $n / ($end - $start)))"
