#!/usr/bin/env bash
# sanitize_snapshot.sh: `snapshot sanitize` for the seed's scripts: --snapshot ID --remove-pii | --anonymize makes a redacted copy (type sanitized); the original is untouched.
exec "$(dirname "${BASH_SOURCE[0]}")/run-snapshot" sanitize "$@"
