#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "system_shims.h"

int snapshot_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    return renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
}

unsigned int snapshot_rename_exchange(void) { return RENAME_EXCHANGE; }

int snapshot_o_direct(void) { return O_DIRECT; }

int snapshot_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int snapshot_malloc_trim(void) { return malloc_trim(0); }

int snapshot_limit_malloc_arenas(int n) { return mallopt(M_ARENA_MAX, n); }

int snapshot_pidfd_open(int pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int snapshot_spawn_addchdir(void *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np((posix_spawn_file_actions_t *)actions, path);
}

int snapshot_set_thread_niceness(int niceness) {
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), niceness);
}

#include <errno.h>
#include <linux/openat2.h>
#include <string.h>

/* Opens `path` below the directory `dirfd` without following any symlink on the way, the
   last component included, and without leaving the directory (`..`, absolute paths):
   openat2(2) with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS; before Linux 5.6, the same by
   opening one component at a time with O_NOFOLLOW. */
int snapshot_open_beneath(int dirfd, const char *path, int flags, unsigned int mode) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (unsigned long long)(flags | O_NOFOLLOW | O_CLOEXEC);
    if (flags & O_CREAT) how.mode = mode;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    int fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    if (fd >= 0 || errno != ENOSYS) return fd;

    if (path[0] == '/') { errno = EXDEV; return -1; }
    char buffer[4096];
    size_t length = strlen(path);
    if (length >= sizeof buffer) { errno = ENAMETOOLONG; return -1; }
    memcpy(buffer, path, length + 1);
    int current = dirfd;
    char *start = buffer;
    for (;;) {
        char *slash = strchr(start, '/');
        if (slash == NULL) break;
        *slash = '\0';
        if (strcmp(start, "..") == 0) { if (current != dirfd) close(current); errno = EXDEV; return -1; }
        int next = openat(current, start, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int saved = errno;
        if (current != dirfd) close(current);
        if (next < 0) { errno = saved; return -1; }
        current = next;
        start = slash + 1;
    }
    if (strcmp(start, "..") == 0) { if (current != dirfd) close(current); errno = EXDEV; return -1; }
    fd = openat(current, start, flags | O_NOFOLLOW | O_CLOEXEC, mode);
    int saved = errno;
    if (current != dirfd) close(current);
    errno = saved;
    return fd;
}

#include <sys/xattr.h>

long snapshot_llistxattr(const char *path, char *list, unsigned long size) { return (long)llistxattr(path, list, size); }
long snapshot_lgetxattr(const char *path, const char *name, void *value, unsigned long size) { return (long)lgetxattr(path, name, value, size); }
long snapshot_flistxattr(int fd, char *list, unsigned long size) { return (long)flistxattr(fd, list, size); }
long snapshot_fgetxattr(int fd, const char *name, void *value, unsigned long size) { return (long)fgetxattr(fd, name, value, size); }
int snapshot_fsetxattr(int fd, const char *name, const void *value, unsigned long size) { return fsetxattr(fd, name, value, size, 0); }

/* The kernel key retention service, through syscall(2): glibc has no wrappers (libkeyutils
   does, and is not worth a dependency for five calls). */
#define SNAPSHOT_KEY_SPEC_SESSION_KEYRING (-3)
#define SNAPSHOT_KEYCTL_GET_KEYRING_ID 0
#define SNAPSHOT_KEYCTL_SETPERM 5
#define SNAPSHOT_KEYCTL_SEARCH 10
#define SNAPSHOT_KEYCTL_READ 11
#define SNAPSHOT_KEYCTL_SET_TIMEOUT 15
#define SNAPSHOT_KEYCTL_INVALIDATE 21
/* KEY_POS_ALL: view, read, write, search, link, setattr for the possessor; nothing for
   anyone else. */
#define SNAPSHOT_KEY_POS_ALL 0x3f000000u

long snapshot_key_session_keyring(void) {
    return syscall(SYS_keyctl, SNAPSHOT_KEYCTL_GET_KEYRING_ID, (long)SNAPSHOT_KEY_SPEC_SESSION_KEYRING, 0L);
}

long snapshot_key_add(long keyring, const char *description, const void *payload, unsigned long length, unsigned int seconds) {
    long key = syscall(SYS_add_key, "user", description, payload, (size_t)length, (long)keyring);
    if (key < 0) return -1;
    if (syscall(SYS_keyctl, SNAPSHOT_KEYCTL_SET_TIMEOUT, key, (unsigned long)seconds) < 0
        || syscall(SYS_keyctl, SNAPSHOT_KEYCTL_SETPERM, key, (unsigned long)SNAPSHOT_KEY_POS_ALL) < 0) {
        int saved = errno;
        syscall(SYS_keyctl, SNAPSHOT_KEYCTL_INVALIDATE, key);
        errno = saved;
        return -1;
    }
    return key;
}

long snapshot_key_search(long keyring, const char *description) {
    return syscall(SYS_keyctl, SNAPSHOT_KEYCTL_SEARCH, keyring, "user", description, 0L);
}

long snapshot_key_read(long key, void *buffer, unsigned long length) {
    return syscall(SYS_keyctl, SNAPSHOT_KEYCTL_READ, key, buffer, (size_t)length);
}

int snapshot_key_invalidate(long key) { return (int)syscall(SYS_keyctl, SNAPSHOT_KEYCTL_INVALIDATE, key); }
