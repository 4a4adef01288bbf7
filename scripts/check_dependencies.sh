#!/usr/bin/env bash
# check_dependencies.sh: `snapshot check-dependencies` for the seed's scripts: broker, sources, tools, repository, free space (--snapshot ID: also what restoring it needs).
exec "$(dirname "${BASH_SOURCE[0]}")/run-snapshot" check-dependencies "$@"
