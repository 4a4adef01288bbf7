#!/usr/bin/env bash
# agent-figures.sh [DATASET_DIR]: measures the agent: command-to-`accepted` latency over
# 200 pings while idle (median, p99), idle RSS; then a snapshot of DATASET_DIR (default: the
# example system's storage/; `make bench` leaves a 1 GiB tree in /tmp/snapshot-bench) with
# peak RSS, progress messages per second, and the `accepted` latency of ping and list
# commands sent every 20 ms while it runs.
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

# A snapshot of the dataset: peak RSS sampled every 20 ms, progress messages counted, and
# ping/list commands sent every 20 ms while it runs (their `accepted` latency).
mosquitto_sub -p "$PORT" -t snapshots/status/fig/progress > "$WORK/progress.txt" &
SUB=$!
mosquitto_sub -p "$PORT" -t 'snapshots/status/fig/response/+' -F '%U %p' > "$WORK/busy-acks.txt" &
BUSY_SUB=$!
sleep 0.3
peak=0
mosquitto_rr -V 5 -p "$PORT" -t snapshots/cmd/fig/create -e reply/fig -m '{"type":"full"}' -W 600 > "$WORK/create.json" &
RR=$!
start=$(date +%s.%N)
# Two command streams, one ping and one list every 40 ms each, through long-lived clients
# (a client per command would count its own start-up).
feed() {
    sleep 0.5   # let mosquitto_pub connect first
    while kill -0 $RR 2>/dev/null; do echo "{\"request_id\":\"busy-$(date +%s%N)\"}"; sleep 0.04; done
}
feed | mosquitto_pub -p "$PORT" -t snapshots/cmd/fig/ping -q 1 -l &
PINGS=$!
{ sleep 0.02; feed; } | mosquitto_pub -p "$PORT" -t snapshots/cmd/fig/list -q 1 -l &
LISTS=$!
while kill -0 $RR 2>/dev/null; do r=$(rss); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.02; done
end=$(date +%s.%N)
wait $PINGS $LISTS 2>/dev/null || true
sleep 1
kill $SUB $BUSY_SUB
n=$(wc -l < "$WORK/progress.txt")
python3 -c "import json; d=json.load(open('$WORK/create.json')); print('snapshot of', d['result']['size_bytes'] // 2**20, 'MiB:', d['status'], 'in', d['result']['duration_s'], 's')"
echo "RSS during the snapshot: peak $(( peak / 1024 )) MiB"
python3 -c "print('progress messages: %d in %.2f s (%.1f/s)' % ($n, $end - $start, $n / ($end - $start)))"
python3 - "$WORK/busy-acks.txt" <<'EOT'
import json, sys
lat = {"ping": [], "list": []}
for line in open(sys.argv[1]):
    ts, payload = line.split(" ", 1)
    d = json.loads(payload)
    rid = d.get("request_id") or ""
    if d["status"] == "accepted" and rid.startswith("busy-"):
        sec, ns = ts.split(".")
        lat[d["action"]].append((int(sec) * 10**9 + int(ns.ljust(9, "0")[:9]) - int(rid[5:])) / 1e6)
both = sorted(lat["ping"] + lat["list"])
for name, l in [("ping", sorted(lat["ping"])), ("list", sorted(lat["list"])), ("all", both)]:
    if l:
        print("during the snapshot, %s -> accepted over %d commands: median %.2f ms, p99 %.2f ms, max %.2f ms"
              % (name, len(l), l[len(l) // 2], l[max(0, int(len(l) * 0.99) - 1)], l[-1]))
EOT
