#!/usr/bin/env bash
# demo.sh: the `make run` demo. Starts a local mosquitto when none answers on
# 127.0.0.1:1883, publishes the example system's retained worker and model state, runs
# `snapshot agent` on the example system, takes a first system snapshot over MQTT while
# showing its progress, and prints what to try next. The agent then keeps running in the
# foreground until Ctrl-C (DEMO_EXIT=1 stops it right away instead).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.build/release/snapshot}
ID=${AGENT_ID:-$(hostname)}
PORT=1883
DEMO=.demo
mkdir -p "$DEMO"

broker_up() { timeout 3 mosquitto_pub -h 127.0.0.1 -p "$PORT" -t snapshots/demo/probe -n >/dev/null 2>&1; }

BROKER_PID=""
if broker_up; then
    echo "== using the broker already on 127.0.0.1:$PORT"
else
    echo "== starting mosquitto on 127.0.0.1:$PORT ($DEMO/mosquitto.conf)"
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n' "$PORT" > "$DEMO/mosquitto.conf"
    [ "$(id -u)" = 0 ] && echo "user root" >> "$DEMO/mosquitto.conf"
    mosquitto -c "$DEMO/mosquitto.conf" > "$DEMO/mosquitto.log" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 50); do broker_up && break; sleep 0.1; done
fi

echo "== publishing the example mesh's retained worker and model state"
for f in workers/*.status.json; do
    w=$(basename "$f" .status.json)
    mosquitto_pub -p "$PORT" -r -q 1 -t "workers/$w/status" -f "$f"
    mosquitto_pub -p "$PORT" -r -q 1 -t "workers/$w/health" -m "{\"worker\":\"$w\",\"healthy\":true}"
done
mosquitto_pub -p "$PORT" -r -q 1 -t models/router-v3/state -f models/state.json
mosquitto_pub -p "$PORT" -r -q 1 -t orchestrator/status -m '{"state":"running","workers":4,"queue":3,"uptime_s":86400}'
mosquitto_pub -p "$PORT" -r -q 1 -t orchestrator/performance -m '{"tasks_per_min":42.5,"p50_latency_ms":180,"p99_latency_ms":950,"errors_last_hour":1}'

echo "== starting: $BIN agent --broker mqtt://127.0.0.1:$PORT --id $ID   (log: $DEMO/agent.log)"
"$BIN" agent --broker "mqtt://127.0.0.1:$PORT" --id "$ID" > "$DEMO/agent.log" 2>&1 &
AGENT_PID=$!
cleanup() {
    kill -TERM "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null || true
}
trap cleanup EXIT
timeout 20 mosquitto_sub -p "$PORT" -t "snapshots/status/$ID/availability" -C 1 -W 20 >/dev/null

echo "== snapshots/cmd/$ID/create {\"type\":\"system\"}: progress from snapshots/status/$ID/progress"
mosquitto_sub -p "$PORT" -t "snapshots/status/$ID/progress" -F '   progress %p' &
SUB_PID=$!
sleep 0.3
reply=$(mosquitto_rr -V 5 -p "$PORT" -t "snapshots/cmd/$ID/create" -e "reply/demo-$$" \
    -m '{"type":"system","name":"make-run","request_id":"make-run-'"$(date +%s)"'"}' -W 300)
sleep 0.3
kill "$SUB_PID" 2>/dev/null || true
echo "== final response:"
echo "$reply" | python3 -c '
import json, sys
d = json.load(sys.stdin)
r = d.get("result") or {}
parts = ["%s (%s files)" % (k, v.get("files")) for k, v in sorted((r.get("components") or {}).items())]
print("   status:", d["status"], "| snapshot:", r.get("snapshot_id"), "| components:", ", ".join(parts), "| error:", d.get("error"))
'
echo
"$BIN" list
cat <<EOT

Try next (another terminal):
  mosquitto_sub -t 'snapshots/status/#' -v
  mosquitto_rr -V 5 -t snapshots/cmd/$ID/ping -e reply/me -m '{}' -W 10
  mosquitto_rr -V 5 -t snapshots/cmd/$ID/create -e reply/me -m '{"type":"config"}' -W 600
  mosquitto_rr -V 5 -t snapshots/cmd/$ID/verify -e reply/me -m '{"all":true,"read_data":true}' -W 600
  mosquitto_rr -V 5 -t snapshots/cmd/$ID/restore -e reply/me -m '{"snapshot":"latest","component":"configs","target":"$(pwd)/.demo-restore"}' -W 600
  $BIN ls --snapshot latest workers
  $BIN cat --snapshot latest workers/status.json
EOT
if [ "${DEMO_EXIT:-0}" = 1 ]; then exit 0; fi
echo
echo "The agent keeps running; Ctrl-C stops it (it publishes offline and disconnects)."
wait "$AGENT_PID"
