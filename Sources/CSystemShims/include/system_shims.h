// Linux facilities that Swift's Glibc module hides behind _GNU_SOURCE or defines per
// architecture; compiled in system_shims.c, where _GNU_SOURCE is set.
#ifndef SNAPSHOT_SYSTEM_SHIMS_H
#define SNAPSHOT_SYSTEM_SHIMS_H

/// renameat2(2); flags such as snapshot_rename_exchange().
int snapshot_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);

/// RENAME_EXCHANGE: swap the two paths atomically.
unsigned int snapshot_rename_exchange(void);

/// O_DIRECT as this architecture's headers define it (it differs between x86_64 and arm64).
int snapshot_o_direct(void);

/// Sets the nice value of the calling thread only (Linux schedules threads as tasks);
/// 0 or -1 with errno.
int snapshot_set_thread_niceness(int niceness);

/// pipe2(fds, O_CLOEXEC): both ends close-on-exec from the start (no window in which a
/// child spawned by another thread inherits them).
int snapshot_pipe_cloexec(int fds[2]);

/// malloc_trim(0): gives memory freed by a large piece of work (a full scan) back to the
/// system; 1 when some was released.
int snapshot_malloc_trim(void);

/// mallopt(M_ARENA_MAX, n): at most n malloc arenas. glibc gives each thread that allocates
/// under contention an arena of its own (up to 8 per core) and keeps what they held after a
/// large piece of work; a long-running process (the agent, `watch`) caps them.
int snapshot_limit_malloc_arenas(int n);

/// pidfd_open(2): a descriptor that polls readable when the process exits; -1 with errno
/// (ENOSYS before Linux 5.3).
int snapshot_pidfd_open(int pid);

/// posix_spawn_file_actions_addchdir_np (glibc 2.29): the child starts in `path`.
/// `actions` is a posix_spawn_file_actions_t *.
int snapshot_spawn_addchdir(void *actions, const char *path);

/// Opens `path` below `dirfd` following no symlink anywhere on the way (the last
/// component included) and never leaving the directory: openat2 with RESOLVE_BENEATH and
/// RESOLVE_NO_SYMLINKS, or component by component with O_NOFOLLOW where openat2 is missing.
/// -1 with errno (ELOOP for a symlink, EXDEV for an escape).
int snapshot_open_beneath(int dirfd, const char *path, int flags, unsigned int mode);

/// llistxattr(2), lgetxattr(2), flistxattr(2), fgetxattr(2) and fsetxattr(2) (sys/xattr.h
/// is not in Swift's Glibc module).
long snapshot_llistxattr(const char *path, char *list, unsigned long size);
long snapshot_lgetxattr(const char *path, const char *name, void *value, unsigned long size);
long snapshot_flistxattr(int fd, char *list, unsigned long size);
long snapshot_fgetxattr(int fd, const char *name, void *value, unsigned long size);
int snapshot_fsetxattr(int fd, const char *name, const void *value, unsigned long size);

/// The kernel key retention service (keyrings(7)), for `key unlock`: "user" keys, found by
/// description, readable only by the processes that possess the keyring they are in.
/// The caller's session keyring — or, when the process has none, the user-session keyring
/// shared by the user's processes without one — never creating a keyring; -1 with errno.
long snapshot_key_session_keyring(void);
/// add_key(2): a "user" key (a new one, or the payload of one of that description
/// replaced), its permissions narrowed to the possessor, expiring after `seconds`.
long snapshot_key_add(long keyring, const char *description, const void *payload, unsigned long length, unsigned int seconds);
/// keyctl(KEYCTL_SEARCH): the "user" key with that description in `keyring` or a keyring
/// it links; -1 with errno (ENOKEY, EKEYEXPIRED, EKEYREVOKED: none usable).
long snapshot_key_search(long keyring, const char *description);
/// keyctl(KEYCTL_READ): the payload's length (copied when `length` is enough).
long snapshot_key_read(long key, void *buffer, unsigned long length);
/// keyctl(KEYCTL_INVALIDATE): the key is gone at once, for every process.
int snapshot_key_invalidate(long key);

#endif
