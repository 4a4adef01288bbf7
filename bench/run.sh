#!/usr/bin/env bash
# bench/run.sh DATASET SMALL_FILES_TREE WORKDIR: snapshot beside restic and borg.
#
# For each round (ROUNDS, default 3) and each tool (TOOLS, default "restic borg-zstd3
# snapshot snapshot-aes snapshot-aes-unlocked"; the last two are snapshot on an encrypted
# repository, with the password's key derived by every command, or once by `key unlock`),
# on a fresh copy of DATASET at WORKDIR/src, with a fresh repository:
#   first      the first backup (and, as first_synced, until a sync after it returned)
#   nochange   a second backup, nothing changed
#   daychange  a third backup after mutate_dataset.py (one day of change)
#   restore    the third backup restored into an empty directory (then treecheck.py);
#              restore_synced: until a sync after it returned
#   check      a full integrity check that reads all data back
#   repo       the repository's size after the three backups; stored = what the day added
# and on SMALL_FILES_TREE (many small files): small_first, small_nochange, small_restore.
# Wall time from date, peak RSS from GNU time. Rounds are the outer loop so that drift
# hits every tool alike. Results: WORKDIR/results/raw.csv; medians and ratios to restic
# printed by summarize.py.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ $# -eq 3 ]] || { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 64; }
DATASET=$(realpath -e "$1")
SMALL=$(realpath -e "$2")
WORK=$(realpath -m "$3")
ROUNDS=${ROUNDS:-3}
TOOLS=${TOOLS:-"restic borg-zstd3 snapshot snapshot-aes snapshot-aes-unlocked"}
SNAPSHOT_BIN=${SNAPSHOT_BIN:-$HERE/../.build/release/snapshot}
export RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench BORG_BASE_DIR=$WORK/borg-home
export RESTIC_CACHE_DIR=$WORK/restic-cache BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
for c in restic borg python3 /usr/bin/time; do
    command -v "$c" >/dev/null || { echo "run.sh: $c is not installed (make bench installs it)" >&2; exit 69; }
done
[[ -x $SNAPSHOT_BIN ]] || { echo "run.sh: no snapshot binary at $SNAPSHOT_BIN (swift build -c release)" >&2; exit 69; }
case "$WORK/" in "$DATASET/"* | "$SMALL/"*) echo "run.sh: WORKDIR must not be inside a dataset" >&2; exit 64 ;; esac

# BENCH_FS_IMAGE_MB=N (as root): sources, repositories and restores on a new ext4 file system
# of N MiB (an image under WORKDIR, loop-mounted), made anew for every tool and data set, so
# that each meets the same fresh file system. Without it, on an ext4 that has no journal,
# the small files restore is not comparable: such an ext4 steers new inodes around those
# freed in the last 5 minutes by scanning past them one by one for every new file (the
# kernel's recently_deleted), so restoring 200,000 files soon after a tree of that size was
# deleted (the previous restore, the previous tool's source) spends 50 s or more in the
# kernel instead of 5-20, whichever tool restores. run.sh says so when WORKDIR is on one.
SCRATCH=$WORK
LOOP=
unmount_fs() {
    if mountpoint -q "$WORK/mnt"; then umount "$WORK/mnt"; fi
    if [[ -n $LOOP ]]; then losetup -d "$LOOP"; LOOP=; fi
    rm -f "$WORK/fs.img"
}
new_fs() {
    unmount_fs
    truncate -s "${BENCH_FS_IMAGE_MB}M" "$WORK/fs.img"
    mkfs.ext4 -q -F -N $((BENCH_FS_IMAGE_MB * 256)) "$WORK/fs.img"
    # Direct I/O on the image file, so that the loop device adds no page cache of its own.
    LOOP=$(losetup --direct-io=on --find --show "$WORK/fs.img")
    mount "$LOOP" "$WORK/mnt"
}
if [[ -n ${BENCH_FS_IMAGE_MB:-} ]]; then
    mkdir -p "$WORK/mnt"
    unmount_fs  # what an interrupted run left mounted
    trap unmount_fs EXIT
    SCRATCH=$WORK/mnt
fi
SRC=$SCRATCH/src REPO=$SCRATCH/repo OUT=$SCRATCH/restore RES=$WORK/results
mkdir -p "$RES/logs"
# journal_less_ext4 DIR: whether DIR is on an ext4 without a journal (see above).
journal_less_ext4() {
    local dev type
    read -r dev type < <(findmnt -no SOURCE,FSTYPE --target "$1") || return 1
    [[ $type == ext4 ]] || return 1
    [[ $(cat "/sys/fs/ext4/$(basename "$(readlink -f "$dev")")/journal_task" 2>/dev/null) == "<none>" ]]
}
rm -f "$RES/warnings.txt"
if [[ -z ${BENCH_FS_IMAGE_MB:-} ]] && journal_less_ext4 "$WORK"; then
    echo "warning: $WORK is on an ext4 without a journal, where creating many files soon after" \
        "many were deleted is slow for every tool: the small files restore figures are not" \
        "comparable (BENCH_FS_IMAGE_MB=12000, as root, gives each tool a fresh file system)" |
        tee "$RES/warnings.txt" >&2
fi
RAW=$RES/raw.csv
echo "round,tool,metric,value" > "$RAW"
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
row() { echo "$ROUND,$TOOL,$1,$2" >> "$RAW"; }

# The commands of each tool, run by bash -c; they see SRC, REPO, OUT in the environment.
export SRC REPO OUT SNAPSHOT_BIN
commands() {
    unset SNAPSHOT_PASSWORD
    case $1 in
    restic)
        INIT='restic -r "$REPO" init -q'
        BACKUP='cd "$SRC" && restic -r "$REPO" backup -q --host bench .'
        RESTORE='restic -r "$REPO" restore -q latest --target "$OUT"'
        CHECK='restic -r "$REPO" check -q --read-data' ;;
    borg-zstd3)
        INIT='borg init -e repokey "$REPO" 2>/dev/null'
        BACKUP='cd "$SRC" && borg create --compression zstd,3 "$REPO::b$(date +%s%N)" .'
        RESTORE='cd "$OUT" && borg extract "$REPO::$(borg list --last 1 --short "$REPO")"'
        CHECK='borg check --verify-data "$REPO"' ;;
    snapshot)
        INIT='"$SNAPSHOT_BIN" --repo "$REPO" init >/dev/null'
        BACKUP='"$SNAPSHOT_BIN" --repo "$REPO" create --type incremental --path "$SRC" --quiet'
        # --path names the component after the directory (src): restore DIR/src/, then move it up.
        RESTORE='"$SNAPSHOT_BIN" --repo "$REPO" restore --snapshot latest --target "$OUT.tmp" --quiet && rmdir "$OUT" && mv "$OUT.tmp/src" "$OUT" && rmdir "$OUT.tmp"'
        CHECK='"$SNAPSHOT_BIN" --repo "$REPO" verify --all --read-data --quiet' ;;
    snapshot-aes)
        # The same on an encrypted repository (aes-256-gcm, keyed blob ids).
        commands snapshot
        INIT='"$SNAPSHOT_BIN" --repo "$REPO" init --encryption aes-256-gcm >/dev/null'
        export SNAPSHOT_PASSWORD=bench ;;
    snapshot-aes-unlocked)
        # The same after `key unlock`: the password's key is derived once, not per command.
        commands snapshot-aes
        INIT+=' && "$SNAPSHOT_BIN" --repo "$REPO" key unlock --for 1h >/dev/null' ;;
    *) echo "run.sh: unknown tool $1 (restic, borg-zstd3, snapshot, snapshot-aes, snapshot-aes-unlocked)" >&2; exit 64 ;;
    esac
}

# timed STEP COMMAND: wall seconds and peak RSS of one step, then a sync outside the timing;
# STEP_synced_s is the time until that sync returned (what the step wrote is on the device:
# a tool that leaves its writes in the page cache finishes sooner but is not done sooner).
timed() {
    local t0 t1 t2 rc=0
    t0=$(date +%s.%N)
    /usr/bin/time -f '%M' -o "$RES/rss" bash -c "$2" > "$RES/logs/r$ROUND-$TOOL-$1.log" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    sync
    t2=$(date +%s.%N)
    row "${1}_s" "$(python3 -c "print(round($t1 - $t0, 3))")"
    row "${1}_synced_s" "$(python3 -c "print(round($t2 - $t0, 3))")"
    row "${1}_rss_mib" "$(( $(tail -n 1 "$RES/rss") / 1024 ))"
    if ((rc)); then
        log "  $TOOL $1 exited $rc: $(tail -c 300 "$RES/logs/r$ROUND-$TOOL-$1.log" | tr '\n' ' ')"
        row "${1}_failed" "$rc"
    fi
}

fresh() {
    rm -rf "$SRC" "$REPO" "$OUT" "$OUT.tmp" "$WORK/borg-home" "$WORK/restic-cache"
    if [[ -n ${BENCH_FS_IMAGE_MB:-} ]]; then new_fs; fi
    mkdir -p "$OUT"
}
bytes() { du -sb "$1" | cut -f1; }

{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "cpu: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    restic version | head -n 1
    borg --version
    "$SNAPSHOT_BIN" --version 2>/dev/null || echo "snapshot (no --version)"
    echo "dataset: $DATASET, $(bytes "$DATASET") bytes; small files: $SMALL, $(find "$SMALL" -type f | wc -l) files"
} | tee "$RES/versions.txt" >&2

for ROUND in $(seq 1 "$ROUNDS"); do
    for TOOL in $TOOLS; do
        log "round $ROUND/$ROUNDS: $TOOL"
        commands "$TOOL"
        fresh
        cp -a "$DATASET" "$SRC"
        tar -C "$SRC" -cf - . | cat > /dev/null   # the same warm page cache for every tool
        sync
        bash -c "$INIT" > "$RES/logs/r$ROUND-$TOOL-init.log" 2>&1
        timed first "$BACKUP"
        timed nochange "$BACKUP"
        before=$(bytes "$REPO")
        python3 "$HERE/mutate_dataset.py" "$SRC" --seed 1 > /dev/null
        sync
        timed daychange "$BACKUP"
        row repo_mib "$(python3 -c "print(round($(bytes "$REPO") / 2**20, 1))")"
        row stored_day_mib "$(python3 -c "print(round(($(bytes "$REPO") - $before) / 2**20, 1))")"
        timed restore "$RESTORE"
        row restore_check "$(python3 "$HERE/treecheck.py" "$SRC" "$OUT" | tr ' ' '/')"
        rm -rf "$OUT"; mkdir -p "$OUT"; sync
        timed check "$CHECK"

        fresh
        cp -a "$SMALL" "$SRC"
        tar -C "$SRC" -cf - . | cat > /dev/null
        sync
        bash -c "$INIT" > /dev/null 2>&1
        timed small_first "$BACKUP"
        timed small_nochange "$BACKUP"
        timed small_restore "$RESTORE"
        row small_restore_check "$(python3 "$HERE/treecheck.py" "$SRC" "$OUT" | tr ' ' '/')"
    done
done
rm -rf "$SRC" "$REPO" "$OUT" "$OUT.tmp" "$WORK/borg-home" "$WORK/restic-cache"
python3 "$HERE/summarize.py" "$RAW" | tee "$RES/summary.md"
