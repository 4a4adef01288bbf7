#!/usr/bin/env bash
# rebuild_metadata.sh: `snapshot rebuild-metadata` for the seed's scripts: rebuild the index from the packs and metadata from the manifests (--snapshot ID: that snapshot's metadata.json only).
exec "$(dirname "${BASH_SOURCE[0]}")/run-snapshot" rebuild-metadata "$@"
