#!/usr/bin/env bash
# make-example-system.sh [ROOT] [SIZE_MB]
# Generates the example agent system beside configs/: a Qdrant-like storage/ tree
# (collections with mmap vector chunks, payloads, WAL, aliases, raft_state.json), models/
# (metadata, state, bf16-like weights and an exact archive copy), workers/ status files and
# logs/. Deterministic for a given size; takes a few seconds. Existing data is kept.
set -euo pipefail
ROOT=${1:-.}
SIZE_MB=${2:-192}
cd "$ROOT"
if [[ -f storage/raft_state.json ]]; then
    echo "example system already present in $(pwd) (remove storage/ models/ logs/ workers/ to regenerate)"
    exit 0
fi
# Deterministic pseudo-random bytes: AES-CTR keystream of a fixed key over zeros.
prng() { # prng SEED BYTES
    head -c "$2" /dev/zero | openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' "$1")" -iv 0 2>/dev/null
}
vec_mb=$((SIZE_MB * 60 / 100)); log_mb=$((SIZE_MB * 15 / 100)); model_mb=$((SIZE_MB * 15 / 100))
collections=(agent_memory task_history tool_descriptions documents)
per=$((vec_mb / ${#collections[@]}))
i=0
for c in "${collections[@]}"; do
    i=$((i + 1))
    seg=storage/collections/$c/segments/seg-000$i
    mkdir -p "$seg/vector_storage/vectors" "$seg/payload_storage" "$seg/id_tracker" storage/collections/$c/wal
    prng $((100 + i)) $((per * 1048576)) > "$seg/vector_storage/vectors/chunk_0.mmap"
    seq 1 $((per * 400)) | awk -v c="$c" '{printf "{\"id\":%d,\"collection\":\"%s\",\"text\":\"task %d result stored by worker-%d\",\"score\":0.%04d}\n", $1, c, $1, $1 % 4, $1 % 9973}' > "$seg/payload_storage/payloads.jsonl"
    prng $((200 + i)) 65536 > "$seg/id_tracker/mappings.bin"
    printf '{"version":"1.12.4","config":{"vector_data":{"":{"size":384,"distance":"Cosine"}}}}\n' > "$seg/segment.json"
    prng $((300 + i)) 1048576 > storage/collections/$c/wal/open-1
    printf '{"params":{"vectors":{"size":384,"distance":"Cosine","on_disk":true}}}\n' > storage/collections/$c/config.json
done
mkdir -p storage/aliases
printf '{"aliases":{"memory":"agent_memory"}}\n' > storage/aliases/data.json
printf '{"state":{"hard_state":{"term":3,"vote":1,"commit":42}},"peer_address_by_id":{}}\n' > storage/raft_state.json
: > storage/.qdrant-initialized
mkdir -p models/weights models/archive models/registry
prng 7 $((model_mb * 1048576 / 2)) > models/weights/router-v3.safetensors
cp -p models/weights/router-v3.safetensors models/archive/router-v3-2024-10-28.safetensors
printf '{"id":"router-v3","dtype":"bf16","params":"27M","trained":"2024-10-28"}\n' > models/metadata.json
ln -f models/metadata.json models/registry/router-v3.metadata.json
printf '{"router-v3":{"state":"loaded","requests_served":18233}}\n' > models/state.json
ln -sfn weights/router-v3.safetensors models/current
mkdir -p workers
for w in alpha bravo charlie delta; do
    printf '{"worker":"worker-%s","status":"idle","tasks_done":%d}\n' "$w" "${#w}" > "workers/worker-$w.status.json"
done
mkdir -p logs/archive
for k in orchestrator role-worker system; do
    seq 1 $((log_mb * 1048576 / 3 / 90)) | awk -v k="$k" '{printf "2024-11-01T%02d:%02d:%02d.%03dZ INFO %s task=%d topic=tasks/%d/result latency_ms=%d\n", ($1/3600)%24, ($1/60)%60, $1%60, $1%1000, k, $1, $1%97, ($1*7)%1500}' > "logs/$k.log"
done
printf 'worker-bravo crashed: out of memory\n' > "logs/archive/orchestrator crash report 2024-11-01.txt"
echo "example system: $(du -sh storage models logs workers | awk '{print $2 "=" $1}' | tr '\n' ' ')"
