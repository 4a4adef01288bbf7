#!/usr/bin/env bash
# cleanup_snapshots.sh: `snapshot prune` for cron and the seed's scripts: apply configs/retention.yaml and reclaim space (--type T, --dry-run).
exec "$(dirname "${BASH_SOURCE[0]}")/run-snapshot" prune "$@"
