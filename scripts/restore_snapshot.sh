#!/usr/bin/env bash
# restore_snapshot.sh: `snapshot restore` for cron and the seed's scripts: restore (--snapshot REF, --component C, --target DIR, --dry-run, --no-backup).
exec "$(dirname "${BASH_SOURCE[0]}")/run-snapshot" restore "$@"
