#!/usr/bin/env bash
# monitor_snapshots.sh: `snapshot monitor` for cron and the seed's scripts: Nagios-style checks (--check-age --check-size --check-integrity --metrics M), exit 0/1/2.
exec "$(dirname "${BASH_SOURCE[0]}")/run-snapshot" monitor "$@"
