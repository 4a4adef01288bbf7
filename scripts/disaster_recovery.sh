#!/usr/bin/env bash
# disaster_recovery.sh: `snapshot recover` for cron and the seed's scripts: disaster recovery (--mode full|step-by-step|minimal --snapshot REF --validate).
exec "$(dirname "${BASH_SOURCE[0]}")/run-snapshot" recover "$@"
