#!/usr/bin/env python3
"""Compares a restored tree with its source: content and metadata.

    treecheck.py SOURCE RESTORED

Prints one line, `content=OK meta=OK`, or what differs (first few paths), and exits 0
either way: the benchmark records it beside the timings. Compared: the set of paths, file
contents (SHA-256), symlink targets, permission bits, file mtimes (to the second), hard
links (paths sharing an inode in the source share one in the copy) and sparse files (a
file with holes in the source must not take all its blocks in the copy).
"""

import hashlib
import os
import stat
import sys


def walk(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, root)] = os.lstat(full)
    return out


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    src, dst = sys.argv[1], sys.argv[2]
    a, b = walk(src), walk(dst)
    content, meta = [], []
    for rel in sorted(set(a) - set(b)):
        content.append("missing:" + rel)
    for rel in sorted(set(b) - set(a)):
        content.append("extra:" + rel)
    inodes = {}
    for rel in sorted(set(a) & set(b)):
        sa, sb = a[rel], b[rel]
        if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
            content.append("type:" + rel)
            continue
        if stat.S_ISLNK(sa.st_mode):
            if os.readlink(os.path.join(src, rel)) != os.readlink(os.path.join(dst, rel)):
                content.append("link:" + rel)
            continue
        if stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode):
            meta.append("mode:" + rel)
        if not stat.S_ISREG(sa.st_mode):
            continue
        if sa.st_size != sb.st_size or digest(os.path.join(src, rel)) != digest(os.path.join(dst, rel)):
            content.append("bytes:" + rel)
        if int(sa.st_mtime) != int(sb.st_mtime):
            meta.append("mtime:" + rel)
        if sa.st_nlink > 1:
            inodes.setdefault(sa.st_ino, []).append(rel)
        if sa.st_blocks * 512 < sa.st_size and sb.st_blocks * 512 >= sb.st_size > 0:
            meta.append("sparse_lost:" + rel)
    for group in inodes.values():
        if len(group) > 1 and len({b[r].st_ino for r in group}) != 1:
            meta.append("hardlink:" + group[0])

    def say(name, problems):
        return "%s=%s" % (name, "OK" if not problems else "%d(%s)" % (len(problems), ";".join(problems[:3])))
    print(say("content", content), say("meta", meta))


if __name__ == "__main__":
    main()
