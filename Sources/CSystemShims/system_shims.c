#define _GNU_SOURCE
#include <fcntl.h>
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

int snapshot_pidfd_open(int pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int snapshot_spawn_addchdir(void *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np((posix_spawn_file_actions_t *)actions, path);
}

int snapshot_set_thread_niceness(int niceness) {
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), niceness);
}
