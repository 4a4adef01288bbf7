#!/usr/bin/env bash
# test_recovery.sh: `snapshot test-recovery` for cron and the seed's scripts: restore into scratch and verify (--snapshot REF --isolated --benchmark).
exec "$(dirname "${BASH_SOURCE[0]}")/run-snapshot" test-recovery "$@"
