#!/usr/bin/env bash
# recover_snapshot.sh: `snapshot repair` for the seed's scripts: salvage a damaged snapshot (--snapshot ID) into a new one, healing what another copy can heal; the original is left as it is.
exec "$(dirname "${BASH_SOURCE[0]}")/run-snapshot" repair "$@"
