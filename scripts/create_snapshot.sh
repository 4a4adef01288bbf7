#!/usr/bin/env bash
# create_snapshot.sh: `snapshot create` for cron and the seed's scripts: take a snapshot (--type T --name N --auto --tag K=V …).
exec "$(dirname "${BASH_SOURCE[0]}")/run-snapshot" create "$@"
