#!/usr/bin/env bash
# restore_from_backup.sh --backup FILE.tar.gz|FILE.tar.zst [--target DIR] [other restore options]:
# `snapshot import FILE`, then `snapshot restore` of the snapshot it made (into DIR, or in place).
set -euo pipefail
backup="" args=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --backup) backup=${2:?--backup needs a file}; shift 2 ;;
    --backup=*) backup=${1#--backup=}; shift ;;
    *) args+=("$1"); shift ;;
    esac
done
[[ -n $backup ]] || { echo "restore_from_backup.sh: --backup FILE is required" >&2; exit 64; }
backup=$(realpath -m -- "$backup")   # run-snapshot works from the project root
here="$(dirname "${BASH_SOURCE[0]}")"
id=$("$here/run-snapshot" import "$backup" --quiet)
exec "$here/run-snapshot" restore --snapshot "$id" "${args[@]}"
