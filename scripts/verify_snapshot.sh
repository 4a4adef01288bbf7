#!/usr/bin/env bash
# verify_snapshot.sh: `snapshot verify` for cron and the seed's scripts: check integrity (--snapshot REF | --all, --read-data).
exec "$(dirname "${BASH_SOURCE[0]}")/run-snapshot" verify "$@"
