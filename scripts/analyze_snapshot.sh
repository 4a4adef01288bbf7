#!/usr/bin/env bash
# analyze_snapshot.sh: `snapshot analyze` for the seed's scripts: sizes per component, sharing with the parent, largest files and growth (--snapshot ID).
exec "$(dirname "${BASH_SOURCE[0]}")/run-snapshot" analyze "$@"
